"""Read the encoded mp3 back as a player plays it (miniaudio's decoder, mono on both speakers) and measure it.

Lossy coding moves peaks and loudness: at 64 kbit/s an espeak take normalised to -1.5 dBTP decoded at up
to -0.66 dBTP, and about 0.5 LU quieter than its PCM (benchmarks/publish_bench.py's takes). The targets
are promises about the file as heard, so the file is what is measured, decoded in blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from podspool.stages.publish.loudness import Meter, db, gated_lufs

DECODE_FRAMES = 1 << 18  # frames decoded at a time: a few MB, whatever the episode's length
HEARD_CHANNELS = 2  # a player puts a mono file on both speakers


@dataclass(frozen=True)
class Decoded:
    true_peak_dbtp: float  # the loudest channel
    lufs: float  # integrated, as heard: every channel counted (BS.1770), a mono file on two speakers
    channels: int = 1


def heard_offset_lu(channels: int) -> float:
    """What playing `channels` on two speakers adds to one channel's loudness: BS.1770 sums the channels'
    power, so the same signal on both speakers measures 3.01 LU louder than on one."""
    return 10 * math.log10(HEARD_CHANNELS if channels == 1 else 1)


def measure(mp3: bytes | Path) -> Decoded:
    """The mp3 (its bytes, or a file, decoded from the disk a block at a time) measured as heard."""
    import miniaudio

    info = miniaudio.mp3_get_file_info(str(mp3)) if isinstance(mp3, Path) else miniaudio.mp3_get_info(mp3)
    channels, rate = max(1, info.nchannels), info.sample_rate
    meters = [Meter(rate) for _ in range(channels)]
    fmt = miniaudio.SampleFormat.FLOAT32
    stream = miniaudio.stream_file(str(mp3), output_format=fmt, nchannels=channels, sample_rate=rate,
                                   frames_to_read=DECODE_FRAMES) if isinstance(mp3, Path) else \
        miniaudio.stream_memory(mp3, output_format=fmt, nchannels=channels, sample_rate=rate,
                                frames_to_read=DECODE_FRAMES)
    for block in stream:
        x = np.frombuffer(block, dtype=np.float32)
        for c, meter in enumerate(meters):
            meter.add(x[c::channels])
    for meter in meters:
        meter.finish()
    peak = max(m.true_peak() for m in meters)
    power = np.sum([m.power() for m in meters], axis=0) * (HEARD_CHANNELS if channels == 1 else 1)
    return Decoded(true_peak_dbtp=db(peak), lufs=gated_lufs(power, rate), channels=channels)
