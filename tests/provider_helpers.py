"""Shared by the provider tests: a test key, an episode, a limiter that records, and a stage context aimed
at a loopback server (tests/fakeapi.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

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
