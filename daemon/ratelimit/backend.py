"""What a rate-limit storage backend offers the strategy: one locked transaction per API."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from podspool.daemon.ratelimit.window import WindowState


class Backend(Protocol):
    def transaction(self, api: str, capacity: int) -> AbstractContextManager[WindowState]:
        """Exclusive access to `api`'s window of `capacity` slots (resized when it differs)."""
        ...


def resized(starts: list[float], capacity: int) -> list[float]:
    """The most recent `capacity` starts, oldest first, padded with 0.0 ("long ago") in front.

    Used when a reload changes N: keeping the newest starts means a smaller N cannot burst.
    """
    recent = sorted(starts)[-capacity:] if capacity else []
    return [0.0] * (capacity - len(recent)) + recent


class PauseMark:
    """A window state's `paused_until` (a server's Retry-After), in one place for every backend: read
    freely; setting it marks the state to be written back."""

    _paused_until: float = 0.0
    _dirty: bool = False

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def set_paused_until(self, t: float) -> None:
        self._paused_until = t
        self._dirty = True
