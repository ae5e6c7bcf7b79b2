"""Speech for long scripts: every paid request's audio is kept in the episode folder as it arrives, so a
retry, a crash or a SIGKILL pays again at most for the request that was in flight (counted at the
loopback server), and ElevenLabs dialogue packs requests full."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest
from fakeapi import FakeApi, Reply
from fakespeech import dialogue_handler, episode_turns, held_after, openai_speech_handler
from podspool.stages.base import StageError
from podspool.stages.providers import speech_clips
from podspool.stages.providers.elevenlabs import ElevenLabsSpeech
from podspool.stages.providers.openai.speech import OpenAISpeech
from podspool.stages.script.format import turn_line
from podspool.stages.show import Show
from podspool_helpers import episodes_in, start_daemon, wait_for, write_manifest
from provider_helpers import make_ctx

KEY = "xi-test-SECRET-0123456789abcdef"
BAD_KEY = Reply(status=401, body={"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})


def clips_in(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(speech_clips.PREFIX))


def take_bytes(out: object) -> bytes:
    path = getattr(out, "path", None)
    return Path(path).read_bytes() if path else getattr(out, "pcm")  # noqa: B009


@pytest.mark.parametrize("which", ["elevenlabs", "openai_speech"])
def test_a_retry_asks_only_for_what_the_failed_attempt_did_not_get(tmp_path: Path, which: str) -> None:
    provider = ElevenLabsSpeech if which == "elevenlabs" else OpenAISpeech
    handler = dialogue_handler() if which == "elevenlabs" else openai_speech_handler()
    turns = episode_turns(1200, 12)
    extra = {"max_chars_per_request": 1000} if which == "elevenlabs" else {}
    with FakeApi(handler) as whole:
        uninterrupted = provider().synthesize(turns, make_ctx(whole, which, **extra))
    needed = len(whole.requests)
    assert needed >= 6
    with FakeApi(handler) as failing:
        failing.queue(*([handler] * 3), BAD_KEY)  # three answered, then the key is refused
        ctx = make_ctx(failing, which, **extra)
        ctx.folder = tmp_path
        with pytest.raises(StageError):
            provider().synthesize(turns, ctx)
    assert len(clips_in(tmp_path)) == 3
    with FakeApi(handler) as again:
        ctx = make_ctx(again, which, **extra)
        ctx.folder = tmp_path
        out = provider().synthesize(turns, ctx)
    assert len(again.requests) == needed - 3  # nothing paid twice
    assert out.usage[0].requests == needed - 3
    assert take_bytes(out) == uninterrupted.pcm and out.spans == uninterrupted.spans
    assert len(clips_in(tmp_path)) == needed
    if out.path is not None:  # the take's work file, the audio stage's to remove: nothing else is left over
        assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == [out.path.name]
        out.path.unlink()


def test_an_edited_turn_is_asked_for_again_and_the_old_clips_go(tmp_path: Path) -> None:
    turns = episode_turns(600, 6)
    with FakeApi(dialogue_handler()) as fake:
        ctx = make_ctx(fake, "elevenlabs", max_chars_per_request=500)
        ctx.folder = tmp_path
        ElevenLabsSpeech().synthesize(turns, ctx)
        first = clips_in(tmp_path)
        turns[-1].text = turns[-1].text.replace("a", "o")  # the same length: the requests cut where they did
        ElevenLabsSpeech().synthesize(turns, ctx)
    now = clips_in(tmp_path)
    asked_again = [n for n in now if n not in first]
    # only the requests holding the edited turn (the last, and the one its head may fill) are asked again,
    # and the clips they replace are gone
    assert len(fake.requests) - len(first) == len(asked_again) and 1 <= len(asked_again) <= 2
    assert len(now) == len(first) and now[:-2] == first[:-2]


def test_a_30_minute_dialogue_takes_at_most_0_55_requests_a_minute(tmp_path: Path) -> None:
    turns = episode_turns(30 * 150, 150)
    with FakeApi(dialogue_handler()) as fake:
        ctx = make_ctx(fake, "elevenlabs")
        ctx.folder = tmp_path
        out = ElevenLabsSpeech().synthesize(turns, ctx)
    assert out.path is not None
    minutes = out.path.stat().st_size / 2 / out.sample_rate / 60
    assert 27 <= minutes <= 33
    assert len(fake.requests) / minutes <= 0.55, (len(fake.requests), minutes)
    assert all(sum(len(i["text"]) for i in r.json()["inputs"]) <= 2000 for r in fake.requests)


CONFIG = """
[research]
provider = "sim"
[production]
provider = "sim"
[audio]
provider = "elevenlabs"
mp3 = false
[providers.sim]
latency_ms = 0
[providers.elevenlabs]
base_url = "{url}"
max_attempts = 1
[limits]
retry_backoff_s = 0.05
inbox_settle_s = 0.2
inbox_rescan_s = 0.5
"""


def _kill_tree(proc: object) -> None:
    """SIGKILL the daemon and its workers at once, as a power cut or an OOM kill of the unit would."""
    daemon = psutil.Process(proc.pid)  # type: ignore[attr-defined]
    daemon.send_signal(signal.SIGSTOP)  # frozen first: it starts no worker between the listing and the kill
    family = [daemon, *daemon.children(recursive=True)]
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    proc.wait(timeout=10)  # type: ignore[attr-defined]


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_daemon_killed_mid_speech_of_a_30_minute_episode_pays_again_for_one_request(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    config = spool / "podspool.toml"
    env = {"ELEVENLABS_API_KEY": KEY}
    gate = threading.Event()
    ep = "ep_001_long"
    folder = spool / "audio" / ep
    script = "# A long one\n\n## Intro\n\n" + "\n\n".join(turn_line(t.host, t.text) for t in episode_turns(30 * 150, 150))

    # 1. the daemon reaches speech with the sim writer's short script, and is killed in its first request;
    #    the 30-minute script then takes its place (what a long-form writer would have written)
    with FakeApi(held_after(dialogue_handler(), 0, gate)) as stuck:
        config.write_text(CONFIG.format(url=stuck.base_url))
        write_manifest(spool / "inbox" / "b.json", {"batch_id": "long", "episodes": [{"number": 1, "topic": "Tides"}]})
        proc = start_daemon(spool, env=env)
        try:
            wait_for(lambda: len(stuck.requests) == 1, 60, proc, "the first speech request")
        finally:
            _kill_tree(proc)
            gate.set()
    (folder / "script.md").write_text(script)
    for name in clips_in(folder):
        (folder / name).unlink()

    # 2. restarted, it is killed again while request 7 of the long episode is in flight
    gate = threading.Event()
    with FakeApi(held_after(dialogue_handler(), 6, gate)) as first:
        config.write_text(CONFIG.format(url=first.base_url))
        proc = start_daemon(spool, env=env)
        try:
            wait_for(lambda: len(first.requests) == 7, 120, proc, "request 7 in flight")
        finally:
            _kill_tree(proc)
            gate.set()
    assert len(clips_in(folder)) == 6

    # 3. restarted once more, it asks only for what is missing
    with FakeApi(dialogue_handler()) as second:
        config.write_text(CONFIG.format(url=second.base_url))
        proc = start_daemon(spool, env=env)
        try:
            wait_for(lambda: episodes_in(spool, "done") == [ep], 180, proc, "the episode done")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    done = spool / "done" / ep
    needed = len(clips_in(done))  # one clip per request the episode takes
    paid = 7 + len(second.requests)
    assert paid - needed <= 1, (paid, needed)  # request 7, in flight at the kill, is the only one paid twice
    audio = json.loads((done / "audio.json").read_text())
    minutes = audio["seconds"] / 60
    assert 27 <= minutes <= 33 and needed / minutes <= 0.55, (needed, minutes)
    assert audio["usage"][0]["requests"] == len(second.requests)


class _Process:
    """Stands in for a worker's mp.Process: records the signals the guard sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def terminate(self) -> None:
        self.sent.append("TERM")

    def kill(self) -> None:
        self.sent.append("KILL")


@pytest.mark.parametrize("minutes, stopped_after_s", [(None, 900), (5, 900), (30, 2700), (60, 5400)])
def test_the_audio_time_limit_grows_with_the_episode(minutes: float | None, stopped_after_s: float) -> None:
    from podspool.daemon.config import Config
    from podspool.daemon.executors.local.guards import enforce_time_limits
    from podspool.daemon.executors.local.workers import Task, Worker
    from podspool.stages.base import EpisodeInput

    cfg = Config()
    assert cfg.audio.time_limit_s == 900
    episode = EpisodeInput("ep_001_t", "t", 1, "Tides", show=Show(minutes=minutes))
    worker = Worker(spec=None, process=_Process())  # type: ignore[arg-type]
    worker.tasks = {1: Task(1, episode.episode_id, Path("."), started=0.0, episode=episode)}
    enforce_time_limits({"audio": [worker]}, cfg, now=stopped_after_s - 1)
    assert worker.process.sent == []
    enforce_time_limits({"audio": [worker]}, cfg, now=stopped_after_s + 1)
    assert worker.process.sent == ["TERM"]


def test_retention_lets_the_clips_go_with_the_wav(tmp_path: Path) -> None:
    import time

    from podspool.daemon.publishing import retention

    (tmp_path / "episode.mp3").write_bytes(b"m" * 10)
    (tmp_path / "audio.wav").write_bytes(b"w" * 100)
    clip = tmp_path / "speech-0000-0123456789abcdef.clip"
    clip.write_bytes(b"c" * 50)
    assert retention.drop_wav(tmp_path, keep_days=7) == 0  # a week to redo the audio from them
    old = time.time() - 8 * retention.DAY_S
    for path in (tmp_path / "audio.wav", clip):
        os.utime(path, (old, old))
    assert retention.drop_wav(tmp_path, keep_days=7) == 150
    assert sorted(os.listdir(tmp_path)) == ["episode.mp3"]
