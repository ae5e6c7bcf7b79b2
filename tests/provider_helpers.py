"""Shared by the provider tests: a test key, an episode, a limiter that records, and a stage context aimed
at a loopback server (tests/fakeapi.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from fakeapi import FakeApi
from podspool.stages.base import EpisodeInput, StageContext
from podspool.stages.settings import StageSettings

KEY = "sk-TESTKEY-0123456789abcdef"
EPISODE = EpisodeInput(episode_id="ep_001_b", batch_id="b", number=1, topic="Dark matter", notes="galaxy rotation")


class RecordingLimiter:
    """Counts acquires and remembers pauses (the shared limiter itself is tested in test_ratelimit)."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, float]] = []
        self.paused: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def acquire(self, api: str) -> None:
        with self._lock:
            self.acquired.append((api, time.monotonic()))

    def pause(self, api: str, seconds: float) -> None:
        with self._lock:
            self.paused.append((api, seconds))


def make_ctx(fake: FakeApi, which: str, *, key: str | None = KEY, limiter: Any = None, base_path: str = "",
             **provider: Any) -> StageContext:
    settings = StageSettings()
    p = getattr(settings.providers, which)
    p.base_url = fake.base_url + base_path
    p.timeout_s = 2.0
    p.max_attempts = 4
    p.max_retry_time_s = 4.0  # backoff starts at 0.2 s: fast tests, real behaviour
    for name, value in provider.items():
        setattr(p, name, value)
    return StageContext(settings=settings, limiter=limiter or RecordingLimiter(),
                        secrets={which: key} if key else {})  # section = api name


def pitch_hz(audio: np.ndarray | bytes, rate: int) -> float:
    """Median fundamental frequency of the voiced 40 ms frames, by autocorrelation (60-400 Hz)."""
    x = (np.frombuffer(audio, dtype="<i2") if isinstance(audio, bytes) else audio).astype(np.float64)
    n = int(0.04 * rate)
    lo, hi = rate // 400, rate // 60
    loud = np.sqrt(np.mean(x ** 2)) * 0.5
    found = []
    for start in range(0, len(x) - n, n):
        frame = x[start:start + n] - x[start:start + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < loud:
            continue  # a pause or an unvoiced sound
        ac = np.correlate(frame, frame, "full")[n - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))
