"""Make a validated take publishable: normalise, encode and tag episode.mp3, then the text companions.

Called by the audio stage after validation. Every file is written whole through fsio; audio.mp3 is a
hard link to episode.mp3 (one inode, no extra bytes) so the contract's `audio.mp3` stays true.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from podspool.stages import artifacts, fsio, pcm
from podspool.stages.base import EpisodeInput, Finding, SpeechOutput, Turn, TurnSpan
from podspool.stages.publish import chapters as chapter_rules
from podspool.stages.publish import loudness, mp3, shownotes, tags, timing, transcript, verify
from podspool.stages.script.format import HEADING_RE
from podspool.stages.settings import AudioSettings, StageSettings

# Lossy coding moves peaks up by up to about 0.9 dB at 64 kbit/s, and the decoded file is about 0.5 LU
# quieter than the PCM (measured on espeak takes): the PCM is aimed to allow for both, then the mp3 is
# read back, and in the rare case it misses, made again from the PCM with the aim corrected by the miss.
ENCODER_HEADROOM_DB = 1.0
CODEC_LOSS_LU = 0.5
FILE_TOLERANCE_LU = 0.5  # how far the file's loudness may be from the target before it is made again
MAX_ENCODES = 3
RETRY_MARGIN_DB = 0.2
ENCODED_NAME = "encoded.mp3"  # the mp3 being made, under an fsio temp name in the episode folder


@dataclass
class Published:
    """What publishing made: the normalised take (read again, a block at a time, for audio.wav) and the
    figures audio.json records under "publish"."""

    take: pcm.Take
    plan: loudness.Plan
    report: dict[str, Any]

    def blocks(self) -> Iterator[np.ndarray]:
        """The normalised take as int16 blocks."""
        for y in loudness.apply(self.take.float_blocks(), self.plan):
            yield mp3.to_int16(y)


def episode_title(script: str, episode: EpisodeInput) -> str:
    """The manifest's title, else the script's "# " title, else the topic."""
    if episode.title:
        return episode.title
    for line in script.splitlines():
        m = HEADING_RE.match(line)
        if m and len(m["hashes"]) == 1:
            return m["text"].strip()
    return episode.topic


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while data := fh.read(size):
            yield data


def speech_take(speech: SpeechOutput) -> pcm.Take:
    """The provider's take: its file when it wrote one, else the PCM it returned."""
    return pcm.Take(speech.sample_rate, path=speech.path) if speech.path is not None else \
        pcm.Take(speech.sample_rate, data=speech.pcm)


def publish(folder: Path, episode: EpisodeInput, script: str, turns: list[Turn], speech: SpeechOutput,
            findings: list[Finding], settings: StageSettings, today: str | None = None) -> Published:
    """Write episode.mp3 (and its audio.mp3 link), chapters.json, transcript.vtt and shownotes.md."""
    audio = settings.audio
    take = speech_take(speech)
    rate = take.sample_rate
    # detecting pauses reads the whole take: only a short one held in memory is searched; a long take
    # comes from a provider that measured its spans
    samples = take.samples() if take.path is None else np.broadcast_to(np.zeros(1, dtype="<i2"), (take.n_samples,))
    spans, method = timing.turn_spans(turns, speech.spans, samples, rate, audio.pause_ms)
    measured = loudness.Meter(rate)
    for block in take.float_blocks():
        measured.add(block)
    measured.finish()
    # the mp3 is encoded to a work file and read back from it: never held in memory (30 MB an hour, thrice)
    encoded = fsio.temp_name_for(folder / ENCODED_NAME)
    try:
        m = _master(take, measured, audio, encoded)
        return _write(folder, episode, script, turns, findings, settings, today, take, spans, method, m, encoded)
    finally:
        fsio.unlink_quietly(encoded)


@dataclass
class _Mastered:
    plan: loudness.Plan
    loudness: loudness.Loudness
    heard: verify.Decoded
    encodes: int


def _master(take: pcm.Take, measured: loudness.Meter, audio: AudioSettings, encoded: Path) -> _Mastered:
    """Normalise and limit the take, encode it to `encoded`, read that back as heard, and again if it missed."""
    rate = take.sample_rate
    # the target is the loudness as heard: a mono file is played on both speakers, which BS.1770 measures
    # 3 LU louder than its one channel, and a stereo file carries the same voice in both channels
    aim = audio.loudness_lufs - 10 * math.log10(2) + CODEC_LOSS_LU
    ceiling = audio.true_peak_dbtp - ENCODER_HEADROOM_DB
    encodes = 0
    while True:  # once, as a rule: again only when the decoded file misses a target
        encodes += 1
        plan = loudness.plan(measured, aim, ceiling)
        out = loudness.Meter(rate)
        with open(encoded, "wb") as sink:
            encoder = mp3.Encoder(rate, audio.mp3_channels, audio.mp3_kbps, sink)
            for y in loudness.apply(take.float_blocks(), plan):
                out.add(y)
                encoder.add(y)
            encoder.finish()
        pcm_peak = out.finish().true_peak()
        heard = verify.measure(encoded)
        over = heard.true_peak_dbtp - audio.true_peak_dbtp
        miss = audio.loudness_lufs - heard.lufs
        if (over <= 0 and abs(miss) <= FILE_TOLERANCE_LU) or encodes >= MAX_ENCODES:
            break
        if over > 0:
            ceiling -= over + RETRY_MARGIN_DB  # lower by what the codec overshot
        if abs(miss) > FILE_TOLERANCE_LU:
            aim += miss
    loud = loudness.Loudness(input_lufs=plan.input_lufs, output_lufs=round(out.lufs(), 2),
                             gain_db=plan.gain_db,
                             true_peak_dbtp=round(loudness.db(pcm_peak), 2), limited_samples=plan.limited_samples)
    return _Mastered(plan, loud, heard, encodes)


def _write(folder: Path, episode: EpisodeInput, script: str, turns: list[Turn], findings: list[Finding],
           settings: StageSettings, today: str | None, take: pcm.Take, spans: list[TurnSpan], method: str,
           m: _Mastered, encoded: Path) -> Published:
    """episode.mp3 (the tag, then the encoded frames), its audio.mp3 link, and the text companions."""
    audio, show = settings.audio, settings.publish
    loud, heard, encodes = m.loudness, m.heard, m.encodes
    seconds = take.seconds
    title = episode_title(script, episode)
    chapters = chapter_rules.chapters(script, spans, seconds, title)
    date = today or datetime.now(UTC).strftime("%Y-%m-%d")
    meta = tags.EpisodeTags(title=title, show=show.title, author=show.author, number=episode.number, date=date)
    tag = tags.tagged(b"", meta, chapters)  # the ID3 tag alone: the frames follow it from the work file
    fsio.write_chunks(folder / artifacts.EPISODE_MP3, itertools.chain([tag], _file_chunks(encoded)))
    mp3_bytes = len(tag) + encoded.stat().st_size
    fsio.link(folder / artifacts.EPISODE_MP3, folder / artifacts.AUDIO_MP3)
    fsio.write_json(folder / artifacts.CHAPTERS_JSON, chapter_rules.json_chapters(chapters))
    fsio.write_text(folder / artifacts.TRANSCRIPT_VTT, transcript.webvtt(turns, spans))
    fsio.write_text(folder / artifacts.SHOWNOTES_MD,
                    shownotes.markdown(title, turns, episode.notes, chapters, script, findings))
    return Published(
        take=take, plan=m.plan,
        report={
            "title": title, "number": episode.number, "date": date,
            # the PCM's figures (one channel), then the mp3's as decoded and heard (mono on two speakers)
            "loudness": {**loud.to_dict(), "target_lufs": audio.loudness_lufs, "measured_as": "heard",
                         "file_lufs": round(heard.lufs, 2), "file_true_peak_dbtp": round(heard.true_peak_dbtp, 2),
                         "encodes": encodes},
            "mp3": {"bytes": mp3_bytes, "channels": audio.mp3_channels,
                    "kbps": audio.mp3_kbps or mp3.DEFAULT_KBPS[audio.mp3_channels]},
            "timing": method,  # measured (by the provider) | detected (pauses in the audio) | estimated
            "spans": [{"turn": s.turn, "host": turns[s.turn].host, "start": round(s.start, 3),
                       "end": round(s.end, 3)} for s in spans],
            "chapters": len(chapters),
            "files": [artifacts.EPISODE_MP3, artifacts.AUDIO_MP3, artifacts.CHAPTERS_JSON,
                      artifacts.TRANSCRIPT_VTT, artifacts.SHOWNOTES_MD],
        },
    )
