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

DAY_S = 86400.0


def drop_wav(folder: Path, keep_days: float, now: float | None = None) -> int:
    """Remove `audio.wav` once it is older than `keep_days` and an mp3 of the episode exists. Bytes freed."""
    wav = folder / artifacts.AUDIO_WAV
    if not any((folder / name).exists() for name in artifacts.MP3_NAMES):
        return 0  # the wav is the only audio: keep it
    try:
        st = wav.stat()
    except FileNotFoundError:
        return 0
    now = time.time() if now is None else now
    if keep_days > 0 and now - st.st_mtime < keep_days * DAY_S:
        return 0
    os.unlink(wav)
    fsio.fsync_dir(folder)
    return st.st_size


def sweep(spool: Spool, policy: Retention, now: float | None = None) -> int:
    """The periodic pass for a wav kept some days: remove those now past their time. Bytes freed."""
    freed = 0
    for loc in spool.scan_location("done"):
        try:
            freed += drop_wav(loc.folder, policy.keep_wav_days, now)
        except OSError as exc:
            logger.warning("retention: could not remove the wav of {}: {}", loc.episode_id, exc)
    return freed
