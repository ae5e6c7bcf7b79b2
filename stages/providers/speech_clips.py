"""Each paid speech request's audio, kept in the episode folder as it arrives, so an attempt after a crash,
a kill or a retry asks only for what is missing.

A clip is one file, `speech-<index>-<hash>.clip`: the request's place in the episode and a hash of what
was asked (text, voices, model, format), so an edited script or another voice asks again. It is written
whole and durable at once (fsio.write_bytes_now), not left for the supervisor's commit like the stage's
other files: a worker killed mid-episode has nothing committed, and its clips are what survive it.
The file holds a JSON header (what the provider needs to reuse the answer: its timings, request id,
billed characters, rate) and the raw 16-bit PCM after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import fsio

PREFIX = "speech-"
SUFFIX = ".clip"
HEADER = struct.Struct("<I")  # the JSON header's length in bytes


@dataclass(frozen=True)
class Saved:
    meta: dict[str, Any]
    pcm: bytes


def clip_name(index: int, request: object) -> str:
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{PREFIX}{index:04d}-{digest}{SUFFIX}"


class ClipStore:
    """The clips of one episode's speech; with no folder (a provider used alone) it keeps nothing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.reused = 0  # requests answered from the folder in this attempt

    def keep_only(self, names: set[str]) -> None:
        """Remove the clips of an earlier script or voice (the ones this episode will not ask for again)."""
        if self.folder is None:
            return
        for entry in os.scandir(self.folder):
            if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX) and entry.name not in names:
                fsio.unlink_quietly(entry.path)

    def load(self, name: str) -> Saved | None:
        if self.folder is None:
            return None
        try:
            data = fsio.read_whole(str(self.folder / name))
        except FileNotFoundError:
            return None
        try:
            (size,) = HEADER.unpack_from(data)
            meta = json.loads(data[HEADER.size: HEADER.size + size])
            pcm = data[HEADER.size + size:]
        except (struct.error, ValueError):
            logger.warning("speech clip {} is unreadable: asking again", name)
            return None
        if not isinstance(meta, dict) or len(pcm) % 2:
            return None
        self.reused += 1
        return Saved(meta, pcm)

    def save(self, name: str, meta: dict[str, Any], pcm: bytes) -> None:
        if self.folder is None:
            return
        header = json.dumps(meta, ensure_ascii=False).encode()
        fsio.write_bytes_now(self.folder / name, HEADER.pack(len(header)) + header + pcm)
