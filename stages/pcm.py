"""16-bit mono PCM helpers: measure, resample, wrap as WAV. Provider-neutral (mp3: stages/publish/mp3.py)."""

from __future__ import annotations

import io
import wave

import numpy as np

FULL_SCALE = 32767
CLIP_LEVEL = 32766  # at or beyond this magnitude a sample is treated as clipped
CLIP_RUN = 8  # consecutive clipped samples that make an audible flat-topped click


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
