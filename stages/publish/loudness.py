"""Loudness normalisation to a target integrated loudness (ITU-R BS.1770-4) under a true-peak ceiling.

Loudness: pyloudnorm's K-weighting filters (the standard's), with the gating done here over per-chunk
sums; tests/test_publish_audio.py checks it agrees with pyloudnorm's own integrated_loudness. True peak
follows BS.1770-4 Annex 2: the signal read at 4x its rate through an interpolating FIR, one short
convolution per in-between phase.

Everything runs over blocks of the take and keeps only per-chunk figures (32 samples): `Meter` measures a
signal fed in blocks, `plan` turns its figures into a gain per chunk, `apply` applies it block by block.
So the audio stage never holds the take, only about 16 bytes a chunk (20 MB for an hour at 22,050 Hz),
and the limiter's passes over the figures are nearly free (pyloudnorm and a whole oversampled signal took
500 MB for 16 minutes).

tests/test_publish_audio.py reads the result with an independent meter (libebur128) after an
independent mp3 decoder (miniaudio).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
# samples: every figure is kept per chunk (5.8 ms at 22,050 Hz), about a dozen float64 arrays of them at
# once while planning: 60 MB for an hour, where 32-sample chunks took 230 MB
CHUNK = 128
SLICE = CHUNK << 11  # samples per slice of work (256 Ki): a slice's temporaries stay around 10 MB


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


class Meter:
    """BS.1770-4 loudness and true peak of a signal fed in blocks of any size, kept as per-chunk figures.

    The K-weighting filters' state is carried from block to block, and the true-peak interpolator reads
    TAPS_PER_PHASE samples either side of each one, so a block's last samples wait for the next block (or
    `finish`) before they are measured: the figures are those of the whole signal at once.
    """

    def __init__(self, rate: int, peaks: bool = True) -> None:
        self.rate = rate
        self._filters = _k_weighting(rate)
        self._state = [np.zeros(max(len(a), len(b)) - 1) for b, a in self._filters]  # at rest before the start
        self._peaks_wanted = peaks
        self._power: list[np.ndarray] = []
        self._peaks: list[np.ndarray] = []
        self._left = np.zeros(TAPS_PER_PHASE, dtype=np.float32)  # silence before the first sample
        self._carry = np.zeros(0, dtype=np.float32)  # samples not yet measured
        self.n_samples = 0

    def add(self, x: np.ndarray) -> None:
        data = np.concatenate((self._carry, np.asarray(x, dtype=np.float32)))
        self.n_samples += int(np.asarray(x).size)
        whole = (data.size - TAPS_PER_PHASE) // CHUNK * CHUNK  # measurable now: its right neighbours are here
        if whole <= 0:
            self._carry = data
            return
        self._measure(data[:whole], data[whole: whole + TAPS_PER_PHASE])
        self._carry = data[whole:]

    def finish(self) -> Meter:
        """Measure what is left (silence after the end); returns self for chaining."""
        if self._carry.size:
            self._measure(self._carry, np.zeros(TAPS_PER_PHASE, dtype=np.float32))
            self._carry = np.zeros(0, dtype=np.float32)
        return self

    def _measure(self, seg: np.ndarray, right: np.ndarray) -> None:
        from scipy.signal import lfilter

        y = seg.astype(np.float64)
        for i, (b, a) in enumerate(self._filters):
            y, self._state[i] = lfilter(b, a, y, zi=self._state[i])
        self._power.append(_per_chunk(y * y, "sum"))
        if self._peaks_wanted:
            around = np.concatenate((self._left, seg, right))
            env = np.abs(around)
            delay = TAPS_PER_PHASE // 2  # the FIR's centre, in input samples
            for taps in _phases():
                np.maximum(env, np.abs(np.convolve(around, taps)[delay: delay + around.size]), out=env)
            self._peaks.append(_per_chunk(env[TAPS_PER_PHASE: TAPS_PER_PHASE + seg.size], "max").astype(np.float32))
        self._left = np.concatenate((self._left, seg))[-TAPS_PER_PHASE:]

    def power(self) -> np.ndarray:
        """K-weighted power summed per chunk."""
        self._power = [np.concatenate(self._power) if self._power else np.zeros(0)]  # joined once, kept joined
        return self._power[0]

    def peaks(self) -> np.ndarray:
        """Per chunk, the largest magnitude of the 4x-oversampled signal (BS.1770-4 true peak), linear."""
        self._peaks = [np.concatenate(self._peaks) if self._peaks else np.zeros(0, dtype=np.float32)]
        return self._peaks[0]

    def lufs(self) -> float:
        return gated_lufs(self.power(), self.rate)

    def true_peak(self) -> float:
        return float(max((float(p.max(initial=0.0)) for p in self._peaks), default=0.0))


def _measured(x: np.ndarray, rate: int, peaks: bool = True) -> Meter:
    meter = Meter(rate, peaks)
    for lo, hi in _slices(x.size):
        meter.add(x[lo:hi])
    return meter.finish()


def chunk_power(x: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted power summed per chunk of a whole signal."""
    return _measured(x, rate, peaks=False).power()


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
    """Per chunk, the true peak (linear) of a whole signal."""
    return _measured(x, 48000).peaks()  # the rate only shapes the loudness filters, unused here


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


def apply(blocks: Iterable[np.ndarray], curve: np.ndarray, scale: float = 1.0) -> Iterator[np.ndarray]:
    """Each block (float32, in order) times the per-chunk gain `curve` (times `scale`), interpolated per sample."""
    at = 0
    for block in blocks:
        # the chunks around this block only: no full-length array of chunk centres
        lo, hi = max(0, at // CHUNK - 1), min(curve.size, (at + block.size) // CHUNK + 2)
        centres = np.arange(lo, hi) * CHUNK + (CHUNK - 1) / 2
        gain = np.interp(np.arange(at, at + block.size), centres, curve[lo:hi]).astype(np.float32)
        at += block.size
        yield np.multiply(block, gain * np.float32(scale), dtype=np.float32)


@dataclass(frozen=True)
class Plan:
    """How to bring one signal to its target: the gain per chunk, and what it was planned from."""

    curve: np.ndarray
    input_lufs: float
    gain_db: float
    limited_samples: int


def plan(meter: Meter, target_lufs: float, ceiling_dbtp: float) -> Plan:
    """The gain curve that brings the measured signal to `target_lufs` with its true peaks under the ceiling.

    The gain that reaches the target is applied, and a look-ahead limiter lowers it around every peak it
    would push over the ceiling. Limiting costs some loudness, so the gain is raised by what the next
    estimate lacks (a few passes). The gain curve varies slowly (10 ms ramps), so the input's K-weighted
    power and peak envelope, scaled by the curve, stand for the output's own during the passes; the
    output itself is measured afterwards, and that measurement is what is reported.
    """
    rate, power, peaks = meter.rate, meter.power(), meter.peaks()
    measured = gated_lufs(power, rate)
    if not np.isfinite(measured):
        raise ValueError("the audio has no measurable loudness (it is silent)")
    ceiling = 10 ** (ceiling_dbtp / 20)
    gain_db = target_lufs - measured
    for _ in range(MAX_PASSES):
        curve = _gain_curve(peaks, 10 ** (gain_db / 20), ceiling, rate)
        estimate = gated_lufs(power * curve**2, rate)
        if abs(estimate - target_lufs) < LOUDNESS_TOLERANCE_LU:
            break
        gain_db += target_lufs - estimate
    limited = int(np.count_nonzero(curve < 10 ** (gain_db / 20) * (1 - 1e-6))) * CHUNK
    return Plan(curve=curve, input_lufs=round(measured, 2), gain_db=round(gain_db, 2), limited_samples=limited)


def normalise(x: np.ndarray, rate: int, target_lufs: float, ceiling_dbtp: float) -> tuple[np.ndarray, Loudness]:
    """A whole signal `x` (float, full scale 1.0) at `target_lufs`, true peaks at or under `ceiling_dbtp`
    (float32): `plan`, `apply`, then the output measured, and scaled down by a hair if the envelope's
    approximation let a peak past the ceiling. The audio stage does the same over a take in blocks."""
    p = plan(_measured(x, rate), target_lufs, ceiling_dbtp)
    y = np.concatenate(list(apply((np.asarray(x[a:b], dtype=np.float32) for a, b in _slices(x.size)), p.curve)))
    out = _measured(y, rate)
    peak, ceiling = out.true_peak(), 10 ** (ceiling_dbtp / 20)
    if peak > ceiling:
        y *= np.float32(ceiling / peak)
        out = _measured(y, rate)
        peak = out.true_peak()
    return y, Loudness(input_lufs=p.input_lufs, output_lufs=round(out.lufs(), 2), gain_db=p.gain_db,
                       true_peak_dbtp=round(db(peak), 2), limited_samples=p.limited_samples)
