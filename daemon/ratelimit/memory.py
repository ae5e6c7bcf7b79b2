"""An in-process backend: one lock and a list per API. For tests and single-process use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from podspool.daemon.ratelimit.backend import PauseMark, resized


class _MemoryState(PauseMark):
    def __init__(self, capacity: int) -> None:
        self.slots = [0.0] * capacity
        self.head = 0
        self._paused_until = 0.0

    @property
    def capacity(self) -> int:
        return len(self.slots)

    def oldest(self) -> float:
        return self.slots[self.head] if self.slots else 0.0

    def push(self, started: float) -> None:
        if self.slots:
            self.slots[self.head] = started
            self.head = (self.head + 1) % len(self.slots)

    def resize(self, capacity: int) -> None:
        self.slots = resized(self.slots, capacity)
        self.head = 0


class MemoryBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _MemoryState] = {}

    @contextmanager
    def transaction(self, api: str, capacity: int) -> Iterator[_MemoryState]:
        with self._lock:
            state = self._states.setdefault(api, _MemoryState(capacity))
            if state.capacity != capacity:
                state.resize(capacity)
            yield state
