"""Loudness normalisation to a target integrated loudness (ITU-R BS.1770-4) under a true-peak ceiling.

Loudness: the standard's K-weighting (the biquads pyloudnorm uses, applied by FFT convolution with their
impulse response), with the gating done here over per-chunk sums; tests/test_publish_audio.py checks it
agrees with pyloudnorm's own integrated_loudness. True peak follows BS.1770-4 Annex 2: the signal read at
4x its rate through an interpolating FIR, one short convolution per in-between phase. Only numpy: scipy
(which pyloudnorm needs) cost each audio worker 75 MB of memory at import, a quarter of its budget.

Everything runs over blocks of the take and keeps only per-chunk figures (CHUNK samples): `Meter`
measures a signal fed in blocks, `plan` turns its figures into a gain per chunk, `apply` applies it block
by block. So the audio stage never holds the take, and the limiter's passes over the figures are nearly
free (pyloudnorm and a whole oversampled signal took 500 MB for 16 minutes).

tests/test_publish_audio.py reads the result with an independent meter (libebur128) after an
independent mp3 decoder (miniaudio).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
LOUDNESS_TOLERANCE_LU = 0.1  # a pass whose estimate lands this close to the target is good enough
MAX_PASSES = 4
# samples: every figure is kept per chunk of about this many (5.8 ms at 22,050 Hz), about a dozen float64
# arrays of them at once while planning: 60 MB for an hour, where 32-sample chunks took 230 MB
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


@lru_cache(maxsize=8)
def chunk_size(rate: int) -> int:
    """The chunk for `rate`: the divisor of a 100 ms gating step nearest CHUNK, so the gating blocks
    (400 ms, every 100 ms) are whole chunks exactly (147 samples at 22,050 Hz, 120 at 48 kHz)."""
    step = round(BLOCK_S / 4 * rate)
    if abs(step - BLOCK_S / 4 * rate) > 1e-9:
        return CHUNK  # a rate without a whole-sample 100 ms step: blocks rounded to whole chunks
    return min((d for d in range(1, step + 1) if step % d == 0), key=lambda d: (abs(d - CHUNK), d))


def _per_chunk(values: np.ndarray, how: str, chunk: int) -> np.ndarray:
    """Sum or max over each chunk of `values` (a slice that starts on a chunk boundary)."""
    n = -(-values.size // chunk)
    padded = np.pad(values, (0, n * chunk - values.size))
    rows = padded.reshape(n, chunk)
    return rows.sum(axis=1, dtype=np.float64) if how == "sum" else rows.max(axis=1).astype(np.float64)


# BS.1770's K-weighting as two biquads (RBJ cookbook formulas, the parameters pyloudnorm uses): a high
# shelf of +4 dB above 1.5 kHz, then a high pass at 38 Hz
K_WEIGHTING: tuple[tuple[str, float, float, float], ...] = (("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0),
                                                            ("high_pass", 0.0, 0.5, 38.0))
IR_SECONDS = 0.1  # the cascade's impulse response has fallen 140 dB by 66 ms at every rate: cut there
FFT_PER_IR = 16  # overlap-save frames this many impulse responses long


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of one biquad, normalised so a[0] = 1."""
    big_a, w0 = 10 ** (gain_db / 40), 2 * np.pi * fc / rate
    alpha, cos = np.sin(w0) / (2 * q), np.cos(w0)
    if kind == "high_shelf":
        root = 2 * np.sqrt(big_a) * alpha
        b = [big_a * ((big_a + 1) + (big_a - 1) * cos + root), -2 * big_a * ((big_a - 1) + (big_a + 1) * cos),
             big_a * ((big_a + 1) + (big_a - 1) * cos - root)]
        a = [(big_a + 1) - (big_a - 1) * cos + root, 2 * ((big_a - 1) - (big_a + 1) * cos),
             (big_a + 1) - (big_a - 1) * cos - root]
    else:  # high_pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.asarray(b) / a[0], np.asarray(a) / a[0]


@lru_cache(maxsize=4)
def k_weighting(rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The K-weighting biquads for `rate`, in order."""
    return tuple(_biquad(kind, gain_db, q, fc, rate) for kind, gain_db, q, fc in K_WEIGHTING)


@lru_cache(maxsize=4)
def _k_response(rate: int) -> tuple[np.ndarray, int, int]:
    """(the spectrum of the K-weighting impulse response, its length L, the FFT size n)."""
    length = 1 << int(np.ceil(np.log2(IR_SECONDS * rate)))
    h = np.zeros(length)
    h[0] = 1.0
    for b, a in k_weighting(rate):  # the recursion itself, once per rate: a few thousand samples
        x, y = h, np.zeros(length)
        for i in range(length):
            y[i] = (b[0] * x[i] + (b[1] * x[i - 1] + b[2] * x[i - 2] - a[1] * y[i - 1] - a[2] * y[i - 2]
                                   if i >= 2 else (b[1] * x[0] - a[1] * y[0] if i == 1 else 0.0)))
        h = y
    n = FFT_PER_IR * length
    return np.fft.rfft(h, n), length, n


class _KFilter:
    """K-weighting of a signal fed in blocks, by overlap-save convolution with the cascade's impulse
    response (numpy's FFT): the same output as running the two biquads (within 140 dB), without scipy,
    whose import alone costs an audio worker 75 MB."""

    def __init__(self, rate: int) -> None:
        self._spectrum, self._length, self._n = _k_response(rate)
        self._history = np.zeros(self._length - 1)  # at rest before the first sample

    def __call__(self, seg: np.ndarray) -> np.ndarray:
        data = np.concatenate((self._history, np.asarray(seg, dtype=np.float64)))
        hop = self._n - self._length + 1
        out = np.empty(seg.size)
        for start in range(0, seg.size, hop):
            frame = np.fft.irfft(np.fft.rfft(data[start: start + self._n], self._n) * self._spectrum, self._n)
            count = min(hop, seg.size - start)
            out[start: start + count] = frame[self._length - 1: self._length - 1 + count]
        self._history = data[data.size - (self._length - 1):]
        return out


class Meter:
    """BS.1770-4 loudness and true peak of a signal fed in blocks of any size, kept as per-chunk figures.

    The K-weighting filters' state is carried from block to block, and the true-peak interpolator reads
    TAPS_PER_PHASE samples either side of each one, so a block's last samples wait for the next block (or
    `finish`) before they are measured: the figures are those of the whole signal at once.
    """

    def __init__(self, rate: int, peaks: bool = True) -> None:
        self.rate = rate
        self.chunk = chunk_size(rate)
        self._k = _KFilter(rate)
        self._peaks_wanted = peaks
        self._power: list[np.ndarray] = []
        self._peaks: list[np.ndarray] = []
        self._left = np.zeros(TAPS_PER_PHASE, dtype=np.float32)  # silence before the first sample
        self._carry = np.zeros(0, dtype=np.float32)  # samples not yet measured
        self.n_samples = 0

    def add(self, x: np.ndarray) -> None:
        data = np.concatenate((self._carry, np.asarray(x, dtype=np.float32)))
        self.n_samples += int(np.asarray(x).size)
        whole = (data.size - TAPS_PER_PHASE) // self.chunk * self.chunk  # measurable now: its right neighbours are here
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
        y = self._k(seg)
        self._power.append(_per_chunk(y * y, "sum", self.chunk))
        if self._peaks_wanted:
            around = np.concatenate((self._left, seg, right))
            env = np.abs(around)
            delay = TAPS_PER_PHASE // 2  # the FIR's centre, in input samples
            for taps in _phases():
                np.maximum(env, np.abs(np.convolve(around, taps)[delay: delay + around.size]), out=env)
            peaks = _per_chunk(env[TAPS_PER_PHASE: TAPS_PER_PHASE + seg.size], "max", self.chunk)
            self._peaks.append(peaks.astype(np.float32))
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
    chunk = chunk_size(rate)
    block = max(4, round(BLOCK_S * rate / chunk / 4) * 4)
    step = block // 4
    if power.size < block:  # a take shorter than one gating block is measured as one, padded with silence
        power = np.pad(power, (0, block - power.size))
    energy = np.concatenate(([0.0], np.cumsum(power, dtype=np.float64)))
    starts = np.arange(0, power.size - block + 1, step)
    z = (energy[starts + block] - energy[starts]) / (block * chunk)
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
    n = OVERSAMPLE * TAPS_PER_PHASE + 1  # odd: phase 0 is the original samples themselves
    # a windowed-sinc low pass at the original Nyquist frequency (Hamming, unity gain at DC: scipy's firwin)
    m = np.arange(n) - (n - 1) / 2
    h = np.sinc(m / OVERSAMPLE) * np.hamming(n)
    h = (h / h.sum() * OVERSAMPLE).astype(np.float32)
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
    need = np.minimum(gain, ceiling / np.maximum(chunk_peak, 1e-9))
    if need.min() >= gain:
        return np.full(chunk_peak.size, gain)
    r = max(1, round(LIMITER_RAMP_S * rate / chunk_size(rate)))
    held = _running(need, 2 * r, np.min)
    return np.minimum(_running(held, r, np.mean), need)


def _running(x: np.ndarray, half: int, how: Any) -> np.ndarray:
    """`how` (min or mean) over a window of 2 * half + 1 around each value, the edges repeated."""
    padded = np.pad(x, half, mode="edge")
    return np.asarray(how(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1))


def apply(blocks: Iterable[np.ndarray], plan: Plan, scale: float = 1.0) -> Iterator[np.ndarray]:
    """Each block (float32, in order) times the plan's per-chunk gain (times `scale`), interpolated per sample."""
    curve, chunk = plan.curve, plan.chunk
    at = 0
    for block in blocks:
        # the chunks around this block only: no full-length array of chunk centres
        lo, hi = max(0, at // chunk - 1), min(curve.size, (at + block.size) // chunk + 2)
        centres = np.arange(lo, hi) * chunk + (chunk - 1) / 2
        gain = np.interp(np.arange(at, at + block.size), centres, curve[lo:hi]).astype(np.float32)
        at += block.size
        yield np.multiply(block, gain * np.float32(scale), dtype=np.float32)


@dataclass(frozen=True)
class Plan:
    """How to bring one signal to its target: the gain per chunk, and what it was planned from."""

    curve: np.ndarray
    chunk: int  # samples per value of the curve
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
    limited = int(np.count_nonzero(curve < 10 ** (gain_db / 20) * (1 - 1e-6))) * meter.chunk
    return Plan(curve=curve, chunk=meter.chunk, input_lufs=round(measured, 2), gain_db=round(gain_db, 2), limited_samples=limited)


def normalise(x: np.ndarray, rate: int, target_lufs: float, ceiling_dbtp: float) -> tuple[np.ndarray, Loudness]:
    """A whole signal `x` (float, full scale 1.0) at `target_lufs`, true peaks at or under `ceiling_dbtp`
    (float32): `plan`, `apply`, then the output measured, and scaled down by a hair if the envelope's
    approximation let a peak past the ceiling. The audio stage does the same over a take in blocks."""
    p = plan(_measured(x, rate), target_lufs, ceiling_dbtp)
    y = np.concatenate(list(apply((np.asarray(x[a:b], dtype=np.float32) for a, b in _slices(x.size)), p)))
    out = _measured(y, rate)
    peak, ceiling = out.true_peak(), 10 ** (ceiling_dbtp / 20)
    if peak > ceiling:
        y *= np.float32(ceiling / peak)
        out = _measured(y, rate)
        peak = out.true_peak()
    return y, Loudness(input_lufs=p.input_lufs, output_lufs=round(out.lufs(), 2), gain_db=p.gain_db,
                       true_peak_dbtp=round(db(peak), 2), limited_samples=p.limited_samples)
