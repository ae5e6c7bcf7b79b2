"""Loudness normalisation to a target integrated loudness (ITU-R BS.1770-4) under a true-peak ceiling.

Loudness: pyloudnorm's K-weighting filters (the standard's), with the gating done here over per-chunk
sums; tests/test_publish_audio.py checks it agrees with pyloudnorm's own integrated_loudness. True peak
follows BS.1770-4 Annex 2: the signal read at 4x its rate through an interpolating FIR, one short
convolution per in-between phase.

Everything runs over slices of the take and keeps only per-chunk figures (32 samples), so memory stays
at about two float32 copies of the take whatever its length (pyloudnorm and a whole oversampled signal
took 500 MB above that for 16 minutes), and the limiter's passes are nearly free.

tests/test_publish_audio.py reads the result with an independent meter (libebur128) after an
independent mp3 decoder (miniaudio).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BLOCK_S = 0.4  # gating block, 75 % overlap (BS.1770-4)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
OVERSAMPLE = 4
TAPS_PER_PHASE = 12  # BS.1770-4's own interpolator has 48 taps, 12 per phase
LIMITER_RAMP_S = 0.010  # the limiter's gain ramps down over this before a peak and back up after it
LOUDNESS_TOLERANCE_LU = 0.1  # a pass whose estimate lands this close to the target is good enough
MAX_PASSES = 4
CHUNK = 32  # samples: every figure is kept per chunk
SLICE = CHUNK << 15  # samples per slice of work (1 Mi)


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


def _slices(n: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, SLICE):
        yield a, min(n, a + SLICE)


def _per_chunk(values: np.ndarray, how: str) -> np.ndarray:
    """Sum or max over each CHUNK of `values` (a slice that starts on a chunk boundary)."""
    n = -(-values.size // CHUNK)
    padded = np.pad(values, (0, n * CHUNK - values.size))
    rows = padded.reshape(n, CHUNK)
    return rows.sum(axis=1, dtype=np.float64) if how == "sum" else rows.max(axis=1).astype(np.float64)


@lru_cache(maxsize=4)
def _k_weighting(rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from pyloudnorm import Meter  # imported here: only the audio worker pays for scipy

    # pyloudnorm's filters for this rate (high shelf, then high pass); no public accessor
    return tuple((np.asarray(f.b, dtype=np.float64), np.asarray(f.a, dtype=np.float64))
                 for f in Meter(rate)._filters.values())


def chunk_power(x: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted power summed per chunk; filter state is carried from slice to slice."""
    from scipy.signal import lfilter

    filters = _k_weighting(rate)
    state = [np.zeros(max(len(a), len(b)) - 1) for b, a in filters]  # at rest before the first sample
    out = []
    for lo, hi in _slices(x.size):
        y = np.asarray(x[lo:hi], dtype=np.float64)
        for i, (b, a) in enumerate(filters):
            y, state[i] = lfilter(b, a, y, zi=state[i])
        out.append(_per_chunk(y * y, "sum"))
    return np.concatenate(out) if out else np.zeros(0)


def gated_lufs(power: np.ndarray, rate: int) -> float:
    """BS.1770-4 gated loudness from per-chunk K-weighted power (blocks rounded to whole chunks)."""
    block = max(4, round(BLOCK_S * rate / CHUNK / 4) * 4)
    step = block // 4
    if power.size < block:  # a take shorter than one gating block is measured as one, padded with silence
        power = np.pad(power, (0, block - power.size))
    energy = np.concatenate(([0.0], np.cumsum(power, dtype=np.float64)))
    starts = np.arange(0, power.size - block + 1, step)
    z = (energy[starts + block] - energy[starts]) / (block * CHUNK)
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10 * np.log10(z) >= ABSOLUTE_GATE_LUFS]
        if z.size == 0:
            return float("-inf")
        relative = -0.691 + 10 * np.log10(z.mean()) + RELATIVE_GATE_LU
        z = z[-0.691 + 10 * np.log10(z) >= relative]
    return float(-0.691 + 10 * np.log10(z.mean()))


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    """Gated integrated loudness of a mono float signal (full scale 1.0) in LUFS; -inf for silence."""
    return gated_lufs(chunk_power(x, rate), rate)


@lru_cache(maxsize=1)
def _phases() -> tuple[np.ndarray, ...]:
    from scipy.signal import firwin

    n = OVERSAMPLE * TAPS_PER_PHASE + 1  # odd: phase 0 is the original samples themselves
    h = (firwin(n, 1 / OVERSAMPLE) * OVERSAMPLE).astype(np.float32)
    return tuple(h[k::OVERSAMPLE] for k in range(1, OVERSAMPLE))


def chunk_peaks(x: np.ndarray) -> np.ndarray:
    """Per chunk, the largest magnitude of the 4x-oversampled signal (BS.1770-4 true peak), linear."""
    delay = TAPS_PER_PHASE // 2  # the FIR's centre, in input samples
    out = []
    for lo, hi in _slices(x.size):
        a, b = max(0, lo - TAPS_PER_PHASE), min(x.size, hi + TAPS_PER_PHASE)  # the neighbours the FIR reads
        seg = np.asarray(x[a:b], dtype=np.float32)
        env = np.abs(seg)
        for taps in _phases():
            np.maximum(env, np.abs(np.convolve(seg, taps)[delay: delay + seg.size]), out=env)
        out.append(_per_chunk(env[lo - a: hi - a], "max"))
    return np.concatenate(out) if out else np.zeros(0)


def true_peak(x: np.ndarray) -> float:
    """True peak, linear (1.0 = full scale)."""
    return float(chunk_peaks(x).max()) if x.size else 0.0


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


def _apply(x: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """`x` times the per-chunk gain `curve`, interpolated per sample (in slices: no full-length temporaries)."""
    centres = np.arange(curve.size) * CHUNK + (CHUNK - 1) / 2
    y = np.empty_like(x)
    for a, b in _slices(x.size):
        np.multiply(x[a:b], np.interp(np.arange(a, b), centres, curve), out=y[a:b], casting="same_kind")
    return y


def normalise(x: np.ndarray, rate: int, target_lufs: float, ceiling_dbtp: float) -> tuple[np.ndarray, Loudness]:
    """`x` (float, full scale 1.0) at `target_lufs`, its true peaks at or under `ceiling_dbtp` (float32).

    The gain that reaches the target is applied, and a look-ahead limiter lowers it around every peak it
    would push over the ceiling. Limiting costs some loudness, so the gain is raised by what the next
    estimate lacks (a few passes). The gain curve varies slowly (10 ms ramps), so the input's K-weighted
    power and peak envelope, scaled by the curve, stand for the output's own during the passes; the
    output itself is then measured (loudness and true peak), and that measurement is what is reported.
    """
    power = chunk_power(x, rate)
    measured = gated_lufs(power, rate)
    if not np.isfinite(measured):
        raise ValueError("the audio has no measurable loudness (it is silent)")
    ceiling = 10 ** (ceiling_dbtp / 20)
    peaks = chunk_peaks(x)
    gain_db = target_lufs - measured
    for _ in range(MAX_PASSES):
        curve = _gain_curve(peaks, 10 ** (gain_db / 20), ceiling, rate)
        estimate = gated_lufs(power * curve**2, rate)
        if abs(estimate - target_lufs) < LOUDNESS_TOLERANCE_LU:
            break
        gain_db += target_lufs - estimate
    y = _apply(np.asarray(x, dtype=np.float32), curve)
    peak = true_peak(y)
    if peak > ceiling:  # the envelope's approximation missed by a hair: trade a little loudness for the ceiling
        y *= np.float32(ceiling / peak)
        peak = true_peak(y)
    out_lufs = integrated_lufs(y, rate)
    limited = int(np.count_nonzero(curve < 10 ** (gain_db / 20) * (1 - 1e-6))) * CHUNK
    return y, Loudness(input_lufs=round(measured, 2), output_lufs=round(out_lufs, 2), gain_db=round(gain_db, 2),
                       true_peak_dbtp=round(db(peak), 2), limited_samples=limited)
