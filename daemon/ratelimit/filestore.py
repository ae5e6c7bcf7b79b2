"""A file backend: one small fixed-layout file per API, shared by every process through `flock`.

Layout (little-endian): a 32-byte header `magic, capacity:u32, head:u32, paused_until:f64, 0:f64`,
then `capacity` float64 start times (`time.time()`, so they keep their meaning across a restart).
A transaction reads the header and one slot and writes back at most one slot and the header, with
`pread`/`pwrite` rather than mmap, so a reload that resizes the ring can never leave another process
holding a stale mapping (SIGBUS).

Durability: the file lives in the page cache, so it survives any process crash or daemon restart;
it is not fsynced per request, so a power cut may lose the last few starts.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podspool.daemon.ratelimit.backend import PauseMark, resized

MAGIC = b"PSRLWIN1"
HEADER = struct.Struct("<8sIIdd")
SLOT = struct.Struct("<d")
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def path_for(state_dir: Path, api: str) -> Path:
    return state_dir / f"{SAFE_NAME.sub('_', api) or '_'}.window"


class _FileState(PauseMark):
    """One API's window, valid while its file is flock'ed by the current transaction."""

    def __init__(self, fd: int, capacity: int) -> None:
        self._fd = fd
        self.capacity = capacity
        self.head = 0
        self._paused_until = 0.0
        self._dirty = False
        self._load()

    def _load(self) -> None:
        raw = os.pread(self._fd, HEADER.size, 0)
        if not raw:  # a new file: nothing has started yet
            self._rewrite([0.0] * self.capacity, paused_until=0.0)
            return
        size = os.fstat(self._fd).st_size
        if len(raw) < HEADER.size or raw[:8] != MAGIC:
            self._rewrite_corrupt()
            return
        _, capacity, head, paused_until, _ = HEADER.unpack(raw)
        if size != HEADER.size + SLOT.size * capacity or (capacity and head >= capacity):
            self._rewrite_corrupt()
            return
        self.head, self._paused_until = head, paused_until
        if capacity != self.capacity:  # the configured N changed (reload): keep the newest starts
            old = os.pread(self._fd, SLOT.size * capacity, HEADER.size)
            starts = [v for (v,) in SLOT.iter_unpack(old)]
            self._rewrite(resized(starts, self.capacity), paused_until=paused_until)

    def _rewrite_corrupt(self) -> None:
        # We cannot know what started recently, so act as if a full window just did: the API waits
        # one window rather than risking a burst over the limit.
        self._rewrite([time.time()] * self.capacity, paused_until=0.0)

    def _rewrite(self, slots: list[float], paused_until: float) -> None:
        body = b"".join(SLOT.pack(v) for v in slots)
        os.ftruncate(self._fd, HEADER.size + len(body))
        os.pwrite(self._fd, body, HEADER.size)
        self.head, self._paused_until = 0, paused_until
        self._write_header()

    def _write_header(self) -> None:
        os.pwrite(self._fd, HEADER.pack(MAGIC, self.capacity, self.head, self._paused_until, 0.0), 0)
        self._dirty = False

    def oldest(self) -> float:
        if not self.capacity:
            return 0.0
        return float(SLOT.unpack(os.pread(self._fd, SLOT.size, HEADER.size + SLOT.size * self.head))[0])

    def push(self, started: float) -> None:
        if not self.capacity:
            return
        # The slot first, the head after: a crash in between leaves the new (later) time in the
        # oldest slot, which can only make the limiter wait longer, never let more through.
        os.pwrite(self._fd, SLOT.pack(started), HEADER.size + SLOT.size * self.head)
        self.head = (self.head + 1) % self.capacity
        self._dirty = True

    def commit(self) -> None:
        if self._dirty:
            self._write_header()


class FileBackend:
    """Files under `state_dir`; picklable (only the path travels; descriptors reopen per process)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()
        # flock belongs to the open file description, so threads of one process sharing a
        # descriptor would all "hold" it; this lock serialises them first.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["state_dir"])  # type: ignore[misc]

    def _fd(self, api: str) -> int:
        if self._pid != os.getpid():
            # Inherited by fork: the descriptors share the parent's lock, so open our own.
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(api)
        if fd is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path_for(self.state_dir, api), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[api] = fd
        return fd

    @contextmanager
    def transaction(self, api: str, capacity: int) -> Iterator[_FileState]:
        with self._lock:
            fd = self._fd(api)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                state = _FileState(fd, capacity)
                yield state
                state.commit()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}

    def __del__(self) -> None:
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:
            pass
