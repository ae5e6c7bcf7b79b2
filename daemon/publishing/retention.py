"""Retention: what a finished episode keeps, and when finished batches move to the archive.

Removing audio.wav is one unlink (the mp3 beside it is already durable), so a crash leaves the file
there or gone, never half of it. Archiving is daemon/publishing/archive.py's crash-safe moves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from loguru import logger
from podspool.daemon.config import Retention
from podspool.daemon.spool import Spool
from podspool.stages import artifacts, fsio
from podspool.stages.providers import speech_clips

DAY_S = 86400.0


def drop_wav(folder: Path, keep_days: float, now: float | None = None) -> int:
    """Remove `audio.wav`, and the speech clips it was made from, once older than `keep_days` and an mp3
    of the episode exists. Bytes freed. (A clip is each paid speech request's audio, kept so an attempt
    after a crash pays for none again: stages/providers/speech_clips.py; within the days kept, a redo
    of the audio reuses those whose text did not change.)"""
    if not any((folder / name).exists() for name in artifacts.MP3_NAMES):
        return 0  # the wav is the only audio: keep it
    now = time.time() if now is None else now
    clips = [folder / n for n in os.listdir(folder) if n.startswith(speech_clips.PREFIX) and n.endswith(speech_clips.SUFFIX)]
    freed = 0
    for path in [folder / artifacts.AUDIO_WAV, *clips]:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if keep_days > 0 and now - st.st_mtime < keep_days * DAY_S:
            continue
        os.unlink(path)
        freed += st.st_size
    if freed:
        fsio.fsync_dir(folder)
    return freed


def sweep(spool: Spool, policy: Retention, now: float | None = None) -> int:
    """The periodic pass for a wav kept some days: remove those now past their time. Bytes freed."""
    freed = 0
    for loc in spool.scan_location("done"):
        try:
            freed += drop_wav(loc.folder, policy.keep_wav_days, now)
        except OSError as exc:
            logger.warning("retention: could not remove the wav of {}: {}", loc.episode_id, exc)
    return freed
