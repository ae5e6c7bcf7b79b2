"""16-bit mono PCM helpers: measure, resample, wrap as WAV, and a take read in blocks. Provider-neutral
(mp3: stages/publish/mp3.py).

An hour of speech is 160 MB of 16-bit samples at 22,050 Hz and twice that as float32, so a long take lives
in a file (`Take.path`) and everything after synthesis reads it a block at a time: a worker's memory stays
the same whatever the episode's length.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FULL_SCALE = 32767
CLIP_LEVEL = 32766  # at or beyond this magnitude a sample is treated as clipped
CLIP_RUN = 8  # consecutive clipped samples that make an audible flat-topped click
BLOCK = 1 << 18  # samples read at a time from a take (512 KB of 16-bit PCM; its float temporaries ~10 MB)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")


def silence(ms: int, sample_rate: int) -> bytes:
    return b"\x00\x00" * (sample_rate * ms // 1000)


def rms(pcm: bytes) -> float:
    """Root mean square level, 0..1 of full scale."""
    x = samples(pcm).astype(np.float64)
    return float(np.sqrt(np.mean(x * x)) / FULL_SCALE) if x.size else 0.0


def longest_clip_run(pcm: bytes) -> int:
    """Length of the longest run of consecutive samples at full scale."""
    x = samples(pcm)
    if not x.size or (x.max() < CLIP_LEVEL and x.min() > -CLIP_LEVEL):
        return 0  # the usual case, told by two passes over the samples without copying them
    clipped = np.abs(x.astype(np.int32)) >= CLIP_LEVEL
    if not clipped.any():
        return 0
    # run lengths from the edges of the boolean mask
    edges = np.diff(np.concatenate(([0], clipped.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max())


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Linear-interpolation resampling: plenty for speech, and no extra dependency."""
    if from_rate == to_rate:
        return pcm
    x = samples(pcm).astype(np.float64)
    if x.size == 0:
        return b""
    n_out = max(1, round(x.size * to_rate / from_rate))
    positions = np.arange(n_out) * (from_rate / to_rate)
    y = np.interp(positions, np.arange(x.size), x)
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_header(n_samples: int, sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit mono WAV of `n_samples` (written ahead of streamed samples)."""
    data = 2 * n_samples
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
            2 * sample_rate, 2, 16) + b"data" + struct.pack("<I", data))


def wav_chunks(blocks: Iterable[np.ndarray], n_samples: int, sample_rate: int) -> Iterator[bytes]:
    """A WAV file's bytes, piece by piece, from int16 blocks that hold `n_samples` in all."""
    yield wav_header(n_samples, sample_rate)
    for block in blocks:
        yield np.asarray(block, dtype="<i2").tobytes()


@dataclass(frozen=True)
class Take:
    """16-bit mono PCM at `sample_rate`, held in `data` (short takes) or in the file `path` (long ones)."""

    sample_rate: int
    data: bytes = b""
    path: Path | None = None

    @property
    def n_bytes(self) -> int:
        return os.path.getsize(self.path) if self.path is not None else len(self.data)

    @property
    def n_samples(self) -> int:
        return self.n_bytes // 2

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate if self.sample_rate else 0.0

    def blocks(self, size: int = BLOCK) -> Iterator[np.ndarray]:
        """The samples (int16) in order, at most `size` at a time; a file is read, never mapped, so what was
        read leaves memory with its block."""
        if self.path is None:
            x = samples(self.data)
            for a in range(0, x.size, size):
                yield x[a: a + size]
            return
        with open(self.path, "rb", buffering=0) as fh:
            while data := fh.read(2 * size):
                yield samples(data)

    def float_blocks(self, size: int = BLOCK) -> Iterator[np.ndarray]:
        """The samples as float32 at full scale 1.0, a block at a time."""
        for block in self.blocks(size):
            yield block.astype(np.float32) / np.float32(32768)

    def samples(self) -> np.ndarray:
        """Every sample at once (a short take's; a long one is read in blocks instead)."""
        if self.path is None:
            return samples(self.data)
        return np.concatenate(list(self.blocks())) if self.n_samples else np.zeros(0, dtype="<i2")


def level_and_clips(take: Take) -> tuple[float, int]:
    """(RMS level 0..1 of full scale, longest run of clipped samples) of a take, read in blocks."""
    total, n, longest, run = 0.0, 0, 0, 0
    for block in take.blocks():
        x = block.astype(np.float64)
        total += float(np.dot(x, x))
        n += block.size
        if block.max(initial=0) < CLIP_LEVEL and block.min(initial=0) > -CLIP_LEVEL:
            run = 0
            continue
        clipped = np.abs(block.astype(np.int32)) >= CLIP_LEVEL
        edges = np.diff(np.concatenate(([0], clipped.view(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts.size:
            lengths = ends - starts
            if starts[0] == 0:  # a run that went on from the block before
                lengths[0] += run
            longest = max(longest, int(lengths.max()))
            run = int(lengths[-1]) if ends[-1] == block.size else 0
        else:
            run = 0
    return (float(np.sqrt(total / n)) / FULL_SCALE if n else 0.0), longest


class TakeWriter:
    """A take written as it is spoken, to a work file (`path`) in the episode folder, or kept in memory.

    The file is work in progress, named as fsio names temp files, so a killed worker's copy is swept up with
    the other temp files; whoever finishes with the take removes it (`discard`).
    """

    def __init__(self, sample_rate: int, path: Path | None = None) -> None:
        self.sample_rate = sample_rate
        self.path = path
        self._parts: list[bytes] = []
        self._fh = open(path, "wb") if path is not None else None  # noqa: SIM115 - open for the take's life
        self.n_bytes = 0

    def write(self, pcm: bytes) -> None:
        if self._fh is not None:
            self._fh.write(pcm)
        else:
            self._parts.append(pcm)
        self.n_bytes += len(pcm)

    def take(self) -> Take:
        """The take so far (a file take is flushed first)."""
        if self._fh is not None:
            self._fh.flush()
            return Take(self.sample_rate, path=self.path)
        return Take(self.sample_rate, data=b"".join(self._parts))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
