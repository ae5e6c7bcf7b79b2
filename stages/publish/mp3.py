"""MP3 encoding with LAME (lameenc), once per episode, from the normalised float signal."""

from __future__ import annotations

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


def encode(x: np.ndarray, rate: int, channels: int = 1, kbps: int | None = None) -> bytes:
    """MP3 of a mono float signal (full scale 1.0); stereo carries the same voice in both channels.

    Fed to LAME a slice at a time: LAME keeps its own state, and no full-length copy is made.
    """
    import lameenc

    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps or DEFAULT_KBPS[channels])
    enc.set_in_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(LAME_QUALITY)
    parts = []
    for a in range(0, x.size, SLICE):
        samples = to_int16(x[a: a + SLICE])
        if channels == 2:
            samples = np.repeat(samples, 2)  # interleaved L R L R
        parts.append(bytes(enc.encode(samples.tobytes())))
    parts.append(bytes(enc.flush()))
    return b"".join(parts)
