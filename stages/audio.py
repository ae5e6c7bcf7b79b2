"""Audio stage: speak the script, one voice per speaker, validate the take, then publish it.

Pipeline: provider PCM (a work file in the episode folder for a long take) -> validate -> loudness-
normalise -> encode and tag episode.mp3 -> chapters, transcript, show notes (stages/publish/) ->
audio.wav -> audio.json, last. Every step after synthesis reads the take a block at a time, so a
worker's memory does not grow with the episode's length.

Validation and encoding live here, not in a provider, so espeak, ElevenLabs and sim output are held
to the same checks. A failed check is a failed attempt (StageError): nothing is written, so a retry
starts clean.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from podspool.stages import artifacts, fsio, pcm
from podspool.stages.base import EpisodeInput, SpeechOutput, StageContext, StageError, StageResult, Turn
from podspool.stages.costs import cost_of
from podspool.stages.providers import registry
from podspool.stages.providers.speech_text import TAKE_NAME
from podspool.stages.script.format import parse_turns
from podspool.stages.settings import AudioSettings, StageSettings
from podspool.stages.words import words

# imported inside run() so a stage test without publishing stays light; a worker imports it at boot, or
# its first episode pays for lame, mutagen and miniaudio
PUBLISH_IMPORTS = ("podspool.stages.publish.episode", "lameenc", "mutagen.id3", "miniaudio")


def warm_up_imports(settings: StageSettings) -> tuple[str, ...]:
    """What a worker imports at boot: publishing's libraries only when it publishes (paid again at every
    recycle)."""
    return ("miniaudio", *(PUBLISH_IMPORTS if settings.audio.mp3 else ()))

__all__ = ["parse_turns", "run", "validate"]

MIN_RMS = 0.01  # about -40 dBFS: quieter than this is silence or a broken stream, not speech


def validate(speech: SpeechOutput, n_words: int, n_turns: int, settings: AudioSettings,
             check_duration: bool = True) -> dict[str, Any]:
    """Measure `speech` (read in blocks) and raise StageError naming the first check it fails."""
    take = pcm.Take(speech.sample_rate, data=speech.pcm, path=speech.path)
    n_bytes = take.n_bytes
    seconds = n_bytes / 2 / speech.sample_rate if speech.sample_rate else 0.0
    level, clip_run = pcm.level_and_clips(take)
    pauses = max(0, n_turns - 1) * settings.pause_ms / 1000
    expected = n_words / settings.words_per_minute * 60 + pauses
    report: dict[str, Any] = {"seconds": round(seconds, 3), "rms": round(level, 5), "longest_clip_run": clip_run,
                              "sample_rate": speech.sample_rate, "expected_seconds": round(expected, 3),
                              "duration_checked": check_duration}
    if speech.sample_rate != settings.sample_rate:
        raise StageError(f"audio at {speech.sample_rate} Hz, configured {settings.sample_rate} Hz")
    if n_bytes % 2:
        raise StageError("audio is not whole 16-bit samples (odd byte count)")
    if seconds <= 0:
        raise StageError("audio is empty")
    if level < MIN_RMS:
        raise StageError(f"audio is silent (RMS {level:.4f} of full scale, minimum {MIN_RMS})")
    if clip_run >= pcm.CLIP_RUN:
        raise StageError(f"audio clips: {clip_run} consecutive full-scale samples")
    if check_duration:
        low, high = expected * (1 - settings.duration_tolerance), expected * (1 + settings.duration_tolerance)
        if not low <= seconds <= high:
            raise StageError(f"audio lasts {seconds:.1f} s but {n_words} words at {settings.words_per_minute} "
                             f"words/minute should take {low:.1f}-{high:.1f} s")
    return report


def _remove_takes(folder: Path) -> None:
    """This process's take work files in `folder` (finished with, or left by a failed attempt)."""
    mine = f"{fsio.TEMP_PREFIX}{os.getpid()}-"
    for entry in os.scandir(folder):
        if entry.name.startswith(mine) and entry.name.endswith(TAKE_NAME):
            fsio.unlink_quietly(entry.path)


def _reused(folder: Path) -> StageResult | None:
    jpath = folder / artifacts.AUDIO_JSON
    if not jpath.exists():  # audio.json is written last: present means finished (the usual case: absent)
        return None
    if not ((folder / artifacts.AUDIO_WAV).exists() or (folder / artifacts.AUDIO_MP3).exists()):
        return None
    doc = fsio.read_json(jpath)
    return StageResult(ok=True, cost_usd=float(doc.get("cost_usd", 0.0)), reused=True,
                       details={"audio_seconds": doc.get("seconds"), "words": doc.get("words")})


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    earlier = _reused(folder)
    if earlier:
        return earlier
    try:
        return _run(folder, episode, dataclasses.replace(ctx, folder=folder, show=episode.show))
    finally:
        _remove_takes(folder)


def _run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    settings = ctx.settings.audio
    script = (folder / artifacts.SCRIPT_MD).read_text(encoding="utf-8")
    turns: list[Turn] = parse_turns(script)
    if not turns:
        raise StageError("script.md has no lines of the form '**Host:** text' to speak", retryable=False)
    n_words = sum(len(words(t.text)) for t in turns)
    speech = registry.load(registry.SPEECH, settings.provider)
    with ctx.call_slot:
        out = speech.synthesize(turns, ctx)
    cost = cost_of(out.usage, ctx.settings)
    if out.sample_rate != settings.sample_rate and out.sample_rate > 0 and out.path is None:
        # a provider may only offer fixed rates: convert rather than refuse (the spans are in seconds:
        # time does not change with the rate); the providers that write long takes convert as they go
        out = dataclasses.replace(out, pcm=pcm.resample(out.pcm, out.sample_rate, settings.sample_rate),
                                  sample_rate=settings.sample_rate)
    try:
        # sim returns a one-second tone whatever the text: its length says nothing
        report = validate(out, n_words, len(turns), settings, check_duration=not speech.dry_run)
    except StageError as exc:
        exc.cost_usd, exc.usage = cost, out.usage  # the synthesis was paid for even if refused
        raise
    take = pcm.Take(out.sample_rate, data=out.pcm, path=out.path)
    blocks: Any = take.blocks()
    published = None
    if settings.mp3:
        # lame, mutagen, miniaudio: imported here, so only the audio worker pays for them
        from podspool.stages.publish.episode import publish

        findings = artifacts.load_research(folder)[0].findings if (folder / artifacts.RESEARCH_JSON).exists() else []
        try:
            published = publish(folder, episode, script, turns, out, findings, ctx.settings)
        except ValueError as exc:  # e.g. nothing to measure: refuse the take like any failed check
            raise StageError(f"audio cannot be published: {exc}", cost_usd=cost, usage=out.usage) from exc
        blocks = published.blocks()
    fsio.write_chunks(folder / artifacts.AUDIO_WAV, pcm.wav_chunks(blocks, take.n_samples, out.sample_rate))
    files = [artifacts.AUDIO_WAV, *(published.report["files"] if published else [])]
    doc = {"seconds": report["seconds"], "words": n_words, "turns": len(turns), "rms": report["rms"],
           "sample_rate": out.sample_rate, "provider": speech.name, "files": files, "cost_usd": cost,
           "usage": [u.to_dict() for u in out.usage], "validation": {**report, "passed": True},
           "publish": published.report if published else None}
    fsio.write_json(folder / artifacts.AUDIO_JSON, doc)  # last: its presence marks the phase finished
    return StageResult(ok=True, cost_usd=cost, usage=out.usage,
                       details={"audio_seconds": report["seconds"], "words": n_words})
