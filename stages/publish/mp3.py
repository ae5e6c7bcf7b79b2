"""MP3 encoding with LAME (lameenc), once per episode, from the normalised float signal fed in blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

LAME_QUALITY = 5  # LAME's -q: 2 costs twice the CPU for no audible gain on speech at these rates
DEFAULT_KBPS = {1: 64, 2: 128}  # mono speech / stereo, the usual podcast rates


SLICE = 1 << 20  # samples converted at a time: no full-length float temporaries


def to_int16(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.size, dtype="<i2")
    for a in range(0, x.size, SLICE):
        seg = np.asarray(x[a: a + SLICE], dtype=np.float32) * np.float32(32767)
        out[a: a + SLICE] = np.clip(np.round(seg, out=seg), -32768, 32767, out=seg)
    return out


class Encoder:
    """LAME fed a block at a time (it keeps its own state). The encoded bytes go to `sink` (a binary file)
    as they come, or are kept for `finish` to return: 30 MB an hour at 64 kbit/s, which the audio stage
    would hold three times over (encoded, tagged, read back), so it gives a file. Stereo carries the same
    voice in both channels."""

    def __init__(self, rate: int, channels: int = 1, kbps: int | None = None, sink: BinaryIO | None = None) -> None:
        import lameenc

        self.channels = channels
        self._sink = sink
        self._enc = lameenc.Encoder()
        self._enc.set_bit_rate(kbps or DEFAULT_KBPS[channels])
        self._enc.set_in_sample_rate(rate)
        self._enc.set_channels(channels)
        self._enc.set_quality(LAME_QUALITY)
        self._parts: list[bytes] = []

    def add(self, x: np.ndarray) -> None:
        """Encode a block of the mono float signal (full scale 1.0)."""
        for a in range(0, x.size, SLICE):
            samples = to_int16(x[a: a + SLICE])
            if self.channels == 2:
                samples = np.repeat(samples, 2)  # interleaved L R L R
            self._put(bytes(self._enc.encode(samples.tobytes())))

    def _put(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.write(data)
        else:
            self._parts.append(data)

    def finish(self) -> bytes:
        """The encoded bytes (b"" when they went to the sink, which is then flushed)."""
        self._put(bytes(self._enc.flush()))
        if self._sink is not None:
            self._sink.flush()
        out, self._parts = b"".join(self._parts), []
        return out


def encode_blocks(blocks: Iterable[np.ndarray], rate: int, channels: int = 1, kbps: int | None = None) -> bytes:
    enc = Encoder(rate, channels, kbps)
    for block in blocks:
        enc.add(block)
    return enc.finish()


def encode(x: np.ndarray, rate: int, channels: int = 1, kbps: int | None = None) -> bytes:
    """MP3 of a whole mono float signal (full scale 1.0)."""
    return encode_blocks((x[a: a + SLICE] for a in range(0, x.size, SLICE)), rate, channels, kbps)
