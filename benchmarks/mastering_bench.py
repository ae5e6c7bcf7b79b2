"""Mastering benchmark: an audio worker's peak memory for a 60-minute episode, on every speech provider path.

Each case runs the whole audio stage (`stages.audio.run`: synthesis, validation, loudness measurement and
limiting, mp3 encoding, the read-back check, audio.wav) in a fresh spawned process and reports that
process's peak RSS (ru_maxrss), so nothing of another case or of this parent counts. HTTP providers talk
to a loopback fake of their wire format in another process; espeak speaks the whole hour for real; Piper
speaks one sentence for real and repeats it for every piece (an hour of neural synthesis would take an hour
of CPU here, and its memory per call is bounded by its piece size anyway). Prints figures; asserts nothing.

    python benchmarks/mastering_bench.py [--minutes 60] [--only espeak,elevenlabs]

The target is 300 MiB whatever the length: run it with --minutes 10 and 60 to see that peak RSS does not
grow with the episode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loopback fakes

from fakeapi import FakeApi  # noqa: E402
from fakespeech import dialogue_handler, episode_turns, openai_speech_handler  # noqa: E402

KEY = "bench-key"
WORDS_PER_MINUTE = 150  # the fakes' pace (fakespeech.SECONDS_PER_CHAR), and about espeak's at this setting
# (label, [audio] provider, providers section, its settings, fake server kind or None)
CASES: list[tuple[str, str, str | None, dict[str, Any], str | None]] = [
    ("espeak", "espeak", None, {}, None),
    ("piper", "piper", None, {}, None),
    ("elevenlabs", "elevenlabs", "elevenlabs", {"mode": "dialogue"}, "dialogue"),
    ("openai", "openai", "openai_speech", {}, "openai"),
]


def _serve(kind: str, port: Any, stop: Any) -> None:
    handler = dialogue_handler() if kind == "dialogue" else openai_speech_handler()
    with FakeApi(handler) as fake:
        port.put(fake.base_url)
        stop.wait()


def _repeat_piper() -> None:
    """Piper's provider path with one real synthesis: every piece gets that sentence, tiled to its length."""
    import numpy as np
    from podspool.stages.providers import piper

    real = piper.speak
    cache: dict[tuple[object, int], tuple[np.ndarray, float]] = {}
    sentence = "Galaxies spin faster at their edges than their visible stars can explain."

    def speak(text: str, how: piper.HostVoice, rate: int) -> bytes:
        key = (how, rate)
        if key not in cache:
            x = np.frombuffer(real(sentence, how, rate), dtype="<i2")
            cache[key] = (x, x.size / len(sentence))
        x, per_char = cache[key]
        n = round(len(text) * per_char)
        return np.resize(x, n).astype("<i2").tobytes()

    piper.speak = speak  # type: ignore[assignment]


def _child(provider: str, section: str | None, overrides: dict[str, Any], base_url: str | None, script: str,
           folder: str, out: Any, real_piper: bool) -> None:
    from podspool.stages import artifacts
    from podspool.stages import audio as audio_stage
    from podspool.stages.base import EpisodeInput, StageContext
    from podspool.stages.settings import StageSettings

    if provider == "piper" and not real_piper:
        _repeat_piper()
    settings = StageSettings()
    settings.audio.provider = provider  # type: ignore[assignment]
    settings.audio.words_per_minute = WORDS_PER_MINUTE
    if section:
        p = getattr(settings.providers, section)
        p.base_url = base_url
        for k, v in overrides.items():
            setattr(p, k, v)
    ctx = StageContext(settings=settings, secrets={"elevenlabs": KEY, "openai_speech": KEY})
    path = Path(folder)
    (path / artifacts.SCRIPT_MD).write_text(script, encoding="utf-8")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall = time.perf_counter()
    result = audio_stage.run(path, EpisodeInput("ep_001_bench", "bench", 1, "Dark matter"), ctx)
    wall = time.perf_counter() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    doc = (path / artifacts.AUDIO_JSON).read_text() if result.ok else ""
    out.put({"ok": result.ok, "error": result.error, "peak_kb": peak, "base_kb": base, "wall": wall,
             "seconds": result.details.get("audio_seconds"), "requests": sum(u.requests for u in result.usage),
             "loudness": __import__("json").loads(doc)["publish"]["loudness"] if doc else None,
             "wav_mb": (path / artifacts.AUDIO_WAV).stat().st_size / 2**20 if result.ok else 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--only", default="", help="comma-separated case labels")
    ap.add_argument("--real-piper", action="store_true", help="Piper speaks every sentence (slow: use few minutes)")
    args = ap.parse_args()
    words = round(args.minutes * WORDS_PER_MINUTE)
    turns = episode_turns(words, max(2, round(args.minutes * 5)))
    script = "# Dark matter\n\n## Intro\n\n" + "\n\n".join(f"**{t.host}:** {t.text}" for t in turns) + "\n"
    print(f"episode: {words} words, {len(turns)} turns, about {args.minutes:.0f} minutes of speech")
    print(f"{'provider':<12} {'audio min':>9} {'requests':>8} {'peak RSS MiB':>12} {'at start':>8} "
          f"{'wav MiB':>8} {'file LUFS':>9} {'file dBTP':>9} {'wall s':>7}")
    spawn = mp.get_context("spawn")
    only = {s for s in args.only.split(",") if s}
    for label, provider, section, overrides, kind in CASES:
        if only and label not in only:
            continue
        server, stop, base_url = None, None, None
        if kind:
            port, stop = spawn.Queue(), spawn.Event()
            server = spawn.Process(target=_serve, args=(kind, port, stop), daemon=True)
            server.start()
            base_url = port.get(timeout=30)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out = spawn.Queue()
                child = spawn.Process(target=_child, args=(provider, section, overrides, base_url, script, tmp, out,
                                                               args.real_piper))
                child.start()
                got = out.get(timeout=3600)
                child.join(timeout=60)
        finally:
            if server is not None and stop is not None:
                stop.set()
                server.join(timeout=10)
        if not got["ok"]:
            print(f"{label:<12} failed: {got['error']}")
            continue
        loud = got["loudness"] or {}
        print(f"{label:<12} {got['seconds'] / 60:>9.1f} {got['requests']:>8} {got['peak_kb'] / 1024:>12.0f} "
              f"{got['base_kb'] / 1024:>8.0f} {got['wav_mb']:>8.0f} {loud.get('file_lufs', 0):>9.2f} "
              f"{loud.get('file_true_peak_dbtp', 0):>9.2f} {got['wall']:>7.1f}")


if __name__ == "__main__":
    main()
