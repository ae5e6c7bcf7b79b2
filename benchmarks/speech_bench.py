"""Speech benchmark: requests per episode per provider, and the audio stage's CPU per audio minute.

Speaks one 450-word, two-host episode (20 turns) through the whole audio stage (`stages.audio.run`:
synthesis, validation, wav and mp3) with each provider. HTTP providers talk to a loopback fake of
their wire format that runs in a child process, so this process's CPU time is the audio stage's
own: the client's parsing and decoding, resampling where the provider's rate differs, encoding.
Local providers (espeak, piper) count their synthesis too, which is most of theirs.

Requests are counted where the server receives them. Under the API's default request limit
(ElevenLabs 100/minute, openai_speech 50/minute) they bound episodes per minute: limit / requests
per episode. Prints figures; asserts nothing.

    python benchmarks/speech_bench.py [--words 450] [--turns 20] [--repeat 3]

A 30-minute episode: --words 4500 --turns 150 (ElevenLabs dialogue: about 0.5 requests per audio minute).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loopback fakes

from fakeapi import FakeApi, Reply, Request  # noqa: E402
from fakespeech import dialogue_handler, episode_turns, openai_speech_handler  # noqa: E402
from podspool.daemon.config import RateLimits  # noqa: E402
from podspool.stages import artifacts  # noqa: E402
from podspool.stages import audio as audio_stage  # noqa: E402
from podspool.stages.base import EpisodeInput, StageContext  # noqa: E402
from podspool.stages.settings import StageSettings  # noqa: E402

KEY = "bench-key"
# (label, [audio] provider, providers section, its settings, fake server kind or None)
CASES: list[tuple[str, str, str | None, dict[str, Any], str | None]] = [
    ("elevenlabs dialogue", "elevenlabs", "elevenlabs", {"mode": "dialogue"}, "dialogue"),
    ("elevenlabs per_turn", "elevenlabs", "elevenlabs", {"mode": "per_turn"}, "tts"),
    ("openai /audio/speech", "openai", "openai_speech", {}, "openai"),
    ("espeak (local)", "espeak", None, {}, None),
    ("piper (local)", "piper", None, {}, None),
]


def _serve(kind: str, port: Any, count: Synchronized[int], stop: Any) -> None:
    def counted(handler: Any) -> Any:
        def answer(request: Request) -> Reply:
            with count.get_lock():
                count.value += 1
            return handler(request)
        return answer

    if kind == "dialogue":
        handler = dialogue_handler()
    elif kind == "openai":
        handler = openai_speech_handler()
    else:  # ElevenLabs text-to-speech: raw PCM for the text
        from fakespeech import SECONDS_PER_CHAR, rate_of, tone

        def handler(request: Request) -> Reply:
            return Reply(body=tone(len(request.json()["text"]) * SECONDS_PER_CHAR, rate_of(request)),
                         headers={"request-id": f"r{count.value}"})

    with FakeApi(counted(handler)) as fake:
        port.put(fake.base_url)
        stop.wait()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # this process only: the fake server is a child
    return r.ru_utime + r.ru_stime


def run_case(provider: str, section: str | None, overrides: dict[str, Any], base_url: str | None,
             script: str, folder: Path) -> tuple[float, float, float, int]:
    settings = StageSettings()
    settings.audio.provider = provider  # type: ignore[assignment]
    settings.audio.words_per_minute = 150  # the fakes' pace, so the duration check holds
    if section:
        p = getattr(settings.providers, section)
        p.base_url = base_url
        for k, v in overrides.items():
            setattr(p, k, v)
    ctx = StageContext(settings=settings, secrets={"elevenlabs": KEY, "openai_speech": KEY})
    folder.mkdir()
    (folder / artifacts.SCRIPT_MD).write_text(script, encoding="utf-8")
    cpu, wall = _cpu(), time.perf_counter()
    result = audio_stage.run(folder, EpisodeInput("ep_001_bench", "bench", 1, "Dark matter"), ctx)
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    seconds = float(result.details.get("audio_seconds") or 0.0)
    requests = sum(u.requests for u in result.usage)
    return cpu, wall, seconds, requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", type=int, default=450)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="runs per provider; the best CPU figure is kept")
    args = ap.parse_args()
    turns = episode_turns(args.words, args.turns)
    script = "# Dark matter\n\n" + "\n\n".join(f"**{t.host}:** {t.text}" for t in turns) + "\n"
    words = sum(len(t.text.split()) for t in turns)
    print(f"episode: {words} words, {len(turns)} turns, {sum(len(t.text) for t in turns)} characters, two hosts")
    limits = RateLimits().parsed()
    print(f"{'provider':<22} {'requests':>8} {'at server':>9} {'req/audio min':>13} {'ep/min at limit':>15} "
          f"{'audio s':>8} {'CPU s':>7} {'CPU s/audio min':>15} {'wall s':>7}")
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for n, (label, provider, section, overrides, kind) in enumerate(CASES):
            server = None
            count: Synchronized[int] = spawn.Value("i", 0)  # type: ignore[assignment]
            base_url = None
            if kind:
                port, stop = spawn.Queue(), spawn.Event()
                server = spawn.Process(target=_serve, args=(kind, port, count, stop), daemon=True)
                server.start()
                base_url = port.get(timeout=30)
            try:
                best: tuple[float, float, float, int] | None = None
                for r in range(args.repeat):
                    before = count.value
                    try:
                        got = run_case(provider, section, overrides, base_url, script, Path(tmp) / f"{n}-{r}")
                    except Exception as exc:  # e.g. piper not installed: say so, go on
                        print(f"{label:<22} skipped: {exc}")
                        break
                    at_server = count.value - before
                    if best is None or got[0] < best[0]:
                        best = (*got[:3], at_server)  # type: ignore[assignment]
                        requests = got[3]
                if best is None:
                    continue
                cpu, wall, seconds, at_server = best
                api = "openai_speech" if provider == "openai" else provider
                limit = limits.get(api)
                per_min = f"{limit[0] * 60 / limit[1] / requests:.1f}" if limit and requests else "unlimited"
                per_audio_min = requests / seconds * 60 if seconds else 0.0
                print(f"{label:<22} {requests:>8} {at_server if kind else '-':>9} {per_audio_min:>13.2f} "
                      f"{per_min:>15} {seconds:>8.1f} {cpu:>7.3f} {cpu / seconds * 60 if seconds else 0:>15.3f} "
                      f"{wall:>7.2f}")
            finally:
                if server is not None:
                    stop.set()
                    server.join(timeout=10)


if __name__ == "__main__":
    main()
