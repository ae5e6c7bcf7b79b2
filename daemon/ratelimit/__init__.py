"""One request budget per external API, shared by every worker process of every stage.

Guarantee: for an API limited to N requests per W seconds, no window of W seconds (measured where
the daemon grants requests, widened by a safety margin (3% of the window, at least 45 ms, at most 100 ms) for the gap between the
grant and the bytes on the wire) ever holds more than N grants, whatever the number of processes
or threads, and across daemon restarts, because the last N start times live in a file under
`<spool>/state/ratelimit/` (one per API, `flock`-protected) and are wall-clock times.
A saturated API is kept busy: a waiting process sleeps exactly until the next slot frees.
`pause(api, s)` (a server's Retry-After) holds every process off that API for `s` seconds.

Limits: one host only (flock on a local file system; not NFS). A power cut may lose the last few
start times (the file is not fsynced per request). A backward step of the wall clock delays
requests by at most one window; a forward step lets the window end early by that much.
Grants are not FIFO: when several processes wait, whichever wakes first after a slot frees wins.
An API with no configured rate is not limited (it can still be paused by Retry-After).

Why not the `ratelimit` package alone: its decorator counts calls in one process's memory, so P
worker processes would each get the whole budget (P times the limit), and a restart would forget
the window and allow a fresh burst; it also uses fixed windows, which let 2N through across a
window boundary. This limiter keeps the same sliding-window idea in a small shared file instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from podspool.daemon.ratelimit import window
from podspool.daemon.ratelimit.backend import Backend
from podspool.daemon.ratelimit.filestore import FileBackend
from podspool.daemon.ratelimit.memory import MemoryBackend
from podspool.daemon.ratelimit.window import Rate

__all__ = ["Backend", "FileBackend", "MAX_PAUSE_S", "MemoryBackend", "Rate", "RateLimiter", "SharedLimiter"]

MAX_PAUSE_S = 3600.0  # a Retry-After beyond an hour is more likely a bug than a plan
MAX_SLEEP_S = 5.0  # re-read the shared state at least this often, e.g. after a clock step


class RateLimiter:
    """The sliding-window strategy over any `Backend`. Implements `stages.base.Limiter`."""

    def __init__(self, backend: Backend, rates: Mapping[str, tuple[int, float]], *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend = backend
        self.rates = {api: (int(n), float(w)) for api, (n, w) in rates.items()}
        self._windows = {api: Rate.of(n, w) for api, (n, w) in self.rates.items()}
        self._clock = clock
        self._sleep = sleep

    def try_acquire(self, api: str) -> float:
        """Take a slot now and return 0.0, or return the seconds until one may be free."""
        rate = self._windows.get(api)
        with self.backend.transaction(api, rate.limit if rate else 0) as state:
            return window.try_acquire(state, rate, self._clock())

    def acquire(self, api: str) -> None:
        """Block until a request to `api` may start."""
        self.acquire_within(api, None)

    def acquire_within(self, api: str, timeout: float | None) -> bool:
        """Block until a request to `api` may start (True), or until `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.try_acquire(api)
            if wait <= 0:
                return True
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            self._sleep(min(wait, MAX_SLEEP_S))

    def pause(self, api: str, seconds: float) -> None:
        seconds = min(float(seconds), MAX_PAUSE_S)
        rate = self._windows.get(api)
        with self.backend.transaction(api, rate.limit if rate else 0) as state:
            window.pause(state, self._clock(), seconds)


class SharedLimiter(RateLimiter):
    """The daemon's limiter: a `RateLimiter` over files in `state_dir` (`<spool>/state/ratelimit`).

    Picklable, and cheap to build again in each worker from `(state_dir, rates)`: it holds no
    descriptor until first use, and each process opens its own.
    """

    def __init__(self, state_dir: Path, rates: Mapping[str, tuple[int, float]]) -> None:
        self.state_dir = Path(state_dir)
        super().__init__(FileBackend(self.state_dir), rates)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedLimiter, (self.state_dir, dict(self.rates)))


def memory_limiter(rates: Mapping[str, tuple[int, float]], **kwargs: Any) -> RateLimiter:
    """An in-process limiter (tests, or a single process that needs no persistence)."""
    return RateLimiter(MemoryBackend(), rates, **kwargs)


