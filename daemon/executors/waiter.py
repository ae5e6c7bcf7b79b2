"""Waiting on many descriptors that rarely change: one poll object, re-registered only when the set does.

`multiprocessing.connection.wait` builds a selector and registers every handle on each call; the
supervisor waits twice a tick on some twenty (each worker's pipe and exit sentinel, the wake pipe, the
inbox watch), which was 135,000 registrations for 3,000 episodes.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Any


class Waiter:
    def __init__(self) -> None:
        self._poll = select.poll()
        self._by_fd: dict[int, Any] = {}

    def wait(self, handles: Iterable[Any], timeout: float | None) -> list[Any]:
        """The handles (descriptors, or objects with fileno(): a Connection, a sentinel) ready to read or
        closed at the other end, within `timeout` seconds (None: no limit), as connection.wait gives them."""
        by_fd = {h if isinstance(h, int) else h.fileno(): h for h in handles}
        if by_fd.keys() != self._by_fd.keys():
            for fd in self._by_fd.keys() - by_fd.keys():
                self._poll.unregister(fd)
            for fd in by_fd.keys() - self._by_fd.keys():
                self._poll.register(fd, select.POLLIN)
        self._by_fd = by_fd
        ready = self._poll.poll(None if timeout is None else max(0, round(timeout * 1000)))
        return [by_fd[fd] for fd, _events in ready if fd in by_fd]
