"""Loudness normalisation to a target integrated loudness (ITU-R BS.1770-4) under a true-peak ceiling.

Integrated loudness comes from pyloudnorm. True peak follows BS.1770-4 Annex 2: the signal read at 4x
its sample rate through an interpolating FIR. The oversampled signal is never built whole: each of the
three in-between phases is one short convolution in float32, reduced at once to a per-sample peak
envelope (about 0.1 s of CPU for three minutes of audio, a quarter of scipy's resample_poly).

tests/test_publish_audio.py reads the result with an independent meter (libebur128) after an
independent mp3 decoder (miniaudio).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

BLOCK_S = 0.4  # gating block, 75 % overlap (BS.1770-4)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
OVERSAMPLE = 4
TAPS_PER_PHASE = 12  # BS.1770-4's own interpolator has 48 taps, 12 per phase
LIMITER_RAMP_S = 0.010  # the limiter's gain ramps down over this before a peak and back up after it
LOUDNESS_TOLERANCE_LU = 0.2  # a pass that lands this close to the target is good enough
MAX_PASSES = 4
CHUNK = 32  # samples: the limiter and the loudness estimates of its passes work per chunk


@dataclass(frozen=True)
class Loudness:
    input_lufs: float
    output_lufs: float
    gain_db: float  # the normalising gain; the limiter takes some back around the loudest peaks
    true_peak_dbtp: float
    limited_samples: int  # samples (to a chunk) the limiter turned down below the normalising gain

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def db(linear: float) -> float:
    return float(20 * np.log10(max(linear, 1e-12)))


def _meter(rate: int) -> Any:
    from pyloudnorm import Meter  # imported here: only the audio worker pays for scipy

    return Meter(rate)


def _padded(x: np.ndarray, rate: int) -> np.ndarray:
    block = int(BLOCK_S * rate)
    # a take shorter than one gating block is measured padded with silence
    return np.pad(x, (0, block - x.size)) if x.size < block else x


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    """Gated integrated loudness (pyloudnorm) of a mono float signal (full scale 1.0) in LUFS."""
    return float(_meter(rate).integrated_loudness(np.asarray(_padded(x, rate), dtype=np.float64)))


def k_weighted_power(x: np.ndarray, rate: int) -> np.ndarray:
    """The squared K-weighted signal, through pyloudnorm's own filters (high shelf, then high pass)."""
    y = np.asarray(_padded(x, rate), dtype=np.float64)
    for stage in _meter(rate)._filters.values():  # no public accessor; the filters are the standard's
        y = stage.apply_filter(y)
    return y * y


def gated_lufs(chunk_power: np.ndarray, chunk: int, rate: int) -> float:
    """BS.1770-4 gating over K-weighted power summed per `chunk` samples (blocks rounded to whole chunks).

    Vectorised: pyloudnorm loops over every block in Python, and the limiter's passes measure often.
    """
    block = max(4, round(BLOCK_S * rate / chunk / 4) * 4)
    step = block // 4
    energy = np.concatenate(([0.0], np.cumsum(chunk_power, dtype=np.float64)))
    starts = np.arange(0, max(1, chunk_power.size - block + 1), step)
    z = (energy[np.minimum(starts + block, chunk_power.size)] - energy[starts]) / (block * chunk)
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10 * np.log10(z) >= ABSOLUTE_GATE_LUFS]
        if z.size == 0:
            return float("-inf")
        relative = -0.691 + 10 * np.log10(z.mean()) + RELATIVE_GATE_LU
        z = z[-0.691 + 10 * np.log10(z) >= relative]
    return float(-0.691 + 10 * np.log10(z.mean()))


def _per_chunk(values: np.ndarray, how: Any, fill: float = 0.0) -> np.ndarray:
    n = -(-values.size // CHUNK)
    padded = np.pad(values, (0, n * CHUNK - values.size), constant_values=fill)
    return np.asarray(how(padded.reshape(n, CHUNK), axis=1))


@lru_cache(maxsize=1)
def _phases() -> tuple[np.ndarray, ...]:
    from scipy.signal import firwin

    n = OVERSAMPLE * TAPS_PER_PHASE + 1  # odd: phase 0 is the original samples themselves
    h = (firwin(n, 1 / OVERSAMPLE) * OVERSAMPLE).astype(np.float32)
    return tuple(h[k::OVERSAMPLE] for k in range(1, OVERSAMPLE))


def peak_envelope(x: np.ndarray) -> np.ndarray:
    """Per sample n, the largest magnitude of the 4x-oversampled signal in [n, n+1) (float32)."""
    x32 = np.asarray(x, dtype=np.float32)
    env = np.abs(x32)
    delay = TAPS_PER_PHASE // 2  # the FIR's centre, in input samples
    for taps in _phases():
        np.maximum(env, np.abs(np.convolve(x32, taps)[delay: delay + x32.size]), out=env)
    return env


def true_peak(x: np.ndarray) -> float:
    """True peak, linear (1.0 = full scale)."""
    return float(peak_envelope(x).max()) if x.size else 0.0


def _gain_curve(chunk_peak: np.ndarray, gain: float, ceiling: float, rate: int) -> np.ndarray:
    """Gain per chunk: `gain`, lowered smoothly wherever `gain * peak` would pass `ceiling`.

    The lowest gain is held over +-2r chunks and then averaged over 2r: each average spans only minima of
    windows that contain the chunk itself, so the curve never rises above what any chunk (or, interpolated,
    any sample) needs, and it ramps over r chunks (10 ms) instead of clicking.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    need = np.minimum(gain, ceiling / np.maximum(chunk_peak, 1e-9))
    if need.min() >= gain:
        return np.full(chunk_peak.size, gain)
    r = max(1, round(LIMITER_RAMP_S * rate / CHUNK))
    held = minimum_filter1d(need, size=4 * r + 1, mode="nearest")
    return np.minimum(uniform_filter1d(held, size=2 * r + 1, mode="nearest"), need)


def normalise(x: np.ndarray, rate: int, target_lufs: float, ceiling_dbtp: float) -> tuple[np.ndarray, Loudness]:
    """`x` (float, full scale 1.0) at `target_lufs`, its true peaks at or under `ceiling_dbtp`.

    The gain that reaches the target is applied, and a look-ahead limiter lowers it around every peak it
    would push over the ceiling. Limiting costs some loudness, so the gain is raised by what the next
    estimate lacks (a few passes). The gain curve varies slowly (10 ms ramps), so the input's K-weighted
    power and peak envelope, scaled by the curve, stand for the output's own during the passes; the
    output itself is then measured (pyloudnorm, true peak), and that measurement is what is reported.
    """
    chunk_power = _per_chunk(k_weighted_power(x, rate), np.sum)
    measured = gated_lufs(chunk_power, CHUNK, rate)
    if not np.isfinite(measured):
        raise ValueError("the audio has no measurable loudness (it is silent)")
    ceiling = 10 ** (ceiling_dbtp / 20)
    chunk_peak = _per_chunk(peak_envelope(x), np.max).astype(np.float64)
    gain_db = target_lufs - measured
    for _ in range(MAX_PASSES):
        curve = _gain_curve(chunk_peak, 10 ** (gain_db / 20), ceiling, rate)
        estimate = gated_lufs(chunk_power * np.pad(curve, (0, chunk_power.size - curve.size), mode="edge") ** 2,
                              CHUNK, rate)
        if abs(estimate - target_lufs) < LOUDNESS_TOLERANCE_LU:
            break
        gain_db += target_lufs - estimate
    centres = np.arange(curve.size) * CHUNK + (CHUNK - 1) / 2
    y = x * np.interp(np.arange(x.size), centres, curve)
    peak = true_peak(y)
    if peak > ceiling:  # the envelope's approximation missed by a hair: trade a little loudness for the ceiling
        y = y * (ceiling / peak)
        peak = true_peak(y)
    out_lufs = integrated_lufs(y, rate)
    limited = int(np.count_nonzero(curve < 10 ** (gain_db / 20) * (1 - 1e-6))) * CHUNK
    return y, Loudness(input_lufs=round(measured, 2), output_lufs=round(out_lufs, 2), gain_db=round(gain_db, 2),
                       true_peak_dbtp=round(db(peak), 2), limited_samples=limited)
