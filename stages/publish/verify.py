"""Read the encoded mp3 back as a player would (miniaudio's decoder) and measure it.

Lossy coding moves peaks and loudness: at 64 kbit/s an espeak take normalised to -1.5 dBTP decoded at up
to -0.66 dBTP, and about 0.5 LU quieter than its PCM (benchmarks/publish_bench.py's takes). The targets
are promises about the file, so the file is what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from podspool.stages.publish.loudness import chunk_peaks, chunk_power, db, gated_lufs


@dataclass(frozen=True)
class Decoded:
    true_peak_dbtp: float  # the loudest channel
    lufs: float  # integrated, every channel counted (BS.1770)


def measure(mp3: bytes) -> Decoded:
    import miniaudio

    decoded = miniaudio.mp3_read_f32(mp3)
    samples = np.frombuffer(decoded.samples, dtype=np.float32)
    channels = max(1, decoded.nchannels)
    voices = [samples[c::channels] for c in range(channels)]
    peak = max(float(chunk_peaks(v).max(initial=0.0)) for v in voices)
    power = np.sum([chunk_power(v, decoded.sample_rate) for v in voices], axis=0)
    return Decoded(true_peak_dbtp=db(peak), lufs=gated_lufs(power, decoded.sample_rate))
