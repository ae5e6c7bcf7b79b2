"""Make a validated take publishable: normalise, encode and tag episode.mp3, then the text companions.

Called by the audio stage after validation. Every file is written whole through fsio; audio.mp3 is a
hard link to episode.mp3 (one inode, no extra bytes) so the contract's `audio.mp3` stays true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from podspool.stages import artifacts, fsio, pcm
from podspool.stages.base import EpisodeInput, Finding, SpeechOutput, Turn
from podspool.stages.publish import chapters as chapter_rules
from podspool.stages.publish import loudness, mp3, shownotes, tags, timing, transcript, verify
from podspool.stages.script.format import HEADING_RE
from podspool.stages.settings import StageSettings

# Lossy coding moves peaks up by up to about 0.9 dB at 64 kbit/s, and the decoded file is about 0.5 LU
# quieter than the PCM (measured on espeak takes): the PCM is aimed to allow for both, then the mp3 is
# read back, and in the rare case it misses, made again from the PCM with the aim corrected by the miss.
ENCODER_HEADROOM_DB = 1.0
CODEC_LOSS_LU = 0.5
FILE_TOLERANCE_LU = 0.5  # how far the file's loudness may be from the target before it is made again
MAX_ENCODES = 3
RETRY_MARGIN_DB = 0.2


@dataclass
class Published:
    pcm: bytes  # the normalised take, 16-bit, for audio.wav
    report: dict[str, Any]  # what audio.json records under "publish"


def episode_title(script: str, episode: EpisodeInput) -> str:
    """The manifest's title, else the script's "# " title, else the topic."""
    if episode.title:
        return episode.title
    for line in script.splitlines():
        m = HEADING_RE.match(line)
        if m and len(m["hashes"]) == 1:
            return m["text"].strip()
    return episode.topic


def publish(folder: Path, episode: EpisodeInput, script: str, turns: list[Turn], speech: SpeechOutput,
            findings: list[Finding], settings: StageSettings, today: str | None = None) -> Published:
    """Write episode.mp3 (and its audio.mp3 link), chapters.json, transcript.vtt and shownotes.md."""
    audio, show = settings.audio, settings.publish
    samples = pcm.samples(speech.pcm)
    rate = speech.sample_rate
    spans, method = timing.turn_spans(turns, speech.spans, samples, rate, audio.pause_ms)
    # BS.1770 adds the channels' power: the same voice in two channels measures 3 dB louder than in one
    aim = audio.loudness_lufs - 10 * math.log10(audio.mp3_channels) + CODEC_LOSS_LU
    ceiling = audio.true_peak_dbtp - ENCODER_HEADROOM_DB
    x = samples.astype(np.float32) / np.float32(32768)
    encodes = 0
    while True:  # once, as a rule: again only when the decoded file misses a target
        encodes += 1
        normal, loud = loudness.normalise(x, rate, aim, ceiling)
        encoded = mp3.encode(normal, rate, audio.mp3_channels, audio.mp3_kbps)
        heard = verify.measure(encoded)
        over = heard.true_peak_dbtp - audio.true_peak_dbtp
        miss = audio.loudness_lufs - heard.lufs
        if (over <= 0 and abs(miss) <= FILE_TOLERANCE_LU) or encodes == MAX_ENCODES:
            break
        if over > 0:
            ceiling -= over + RETRY_MARGIN_DB  # lower by what the codec overshot
        if abs(miss) > FILE_TOLERANCE_LU:
            aim += miss
    seconds = samples.size / rate
    title = episode_title(script, episode)
    chapters = chapter_rules.chapters(script, spans, seconds, title)
    date = today or datetime.now(UTC).strftime("%Y-%m-%d")
    meta = tags.EpisodeTags(title=title, show=show.title, author=show.author, number=episode.number, date=date)
    tagged = tags.tagged(encoded, meta, chapters)
    fsio.write_bytes(folder / artifacts.EPISODE_MP3, tagged)
    fsio.link(folder / artifacts.EPISODE_MP3, folder / artifacts.AUDIO_MP3)
    fsio.write_json(folder / artifacts.CHAPTERS_JSON, chapter_rules.json_chapters(chapters))
    fsio.write_text(folder / artifacts.TRANSCRIPT_VTT, transcript.webvtt(turns, spans))
    fsio.write_text(folder / artifacts.SHOWNOTES_MD,
                    shownotes.markdown(title, turns, episode.notes, chapters, script, findings))
    return Published(
        pcm=mp3.to_int16(normal).tobytes(),
        report={
            "title": title, "number": episode.number, "date": date,
            # the PCM's figures (one channel), then the mp3's as decoded, every channel counted
            "loudness": {**loud.to_dict(), "target_lufs": audio.loudness_lufs,
                         "file_lufs": round(heard.lufs, 2), "file_true_peak_dbtp": round(heard.true_peak_dbtp, 2),
                         "encodes": encodes},
            "mp3": {"bytes": len(tagged), "channels": audio.mp3_channels,
                    "kbps": audio.mp3_kbps or mp3.DEFAULT_KBPS[audio.mp3_channels]},
            "timing": method,  # measured (by the provider) | detected (pauses in the audio) | estimated
            "spans": [{"turn": s.turn, "host": turns[s.turn].host, "start": round(s.start, 3),
                       "end": round(s.end, 3)} for s in spans],
            "chapters": len(chapters),
            "files": [artifacts.EPISODE_MP3, artifacts.AUDIO_MP3, artifacts.CHAPTERS_JSON,
                      artifacts.TRANSCRIPT_VTT, artifacts.SHOWNOTES_MD],
        },
    )
