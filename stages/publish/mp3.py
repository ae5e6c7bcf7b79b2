"""MP3 encoding with LAME (lameenc), once per episode, from the normalised float signal."""

from __future__ import annotations

import numpy as np

LAME_QUALITY = 5  # LAME's -q: 2 costs twice the CPU for no audible gain on speech at these rates
DEFAULT_KBPS = {1: 64, 2: 128}  # mono speech / stereo, the usual podcast rates


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")


def encode(x: np.ndarray, rate: int, channels: int = 1, kbps: int | None = None) -> bytes:
    """MP3 of a mono float signal (full scale 1.0); stereo carries the same voice in both channels."""
    import lameenc

    samples = to_int16(x)
    if channels == 2:
        samples = np.repeat(samples, 2)  # interleaved L R L R
    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps or DEFAULT_KBPS[channels])
    enc.set_in_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(LAME_QUALITY)
    return bytes(enc.encode(samples.tobytes()) + enc.flush())
