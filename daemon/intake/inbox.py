"""The inbox watcher: inotify events through watchdog, plus a periodic rescan.

The event handler only puts a path on a queue. It reacts to close-after-write and moved-in, never to
created (a created file may still be empty), and the rescan catches whatever inotify dropped: a file
unchanged for `quiet_s` (quiet) is taken as complete.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from podspool.daemon.spool import is_inbox_name
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

BYTES_PER_CALL = 8 * 1024 * 1024  # manifests handed out per tick: the default limits.max_manifest_bytes


class _Handler(FileSystemEventHandler):
    def __init__(self, ready: queue.SimpleQueue[str], wake: Callable[[], None]) -> None:
        self.ready = ready
        self.wake = wake

    def on_closed(self, event: FileClosedEvent) -> None:
        self.ready.put(str(event.src_path))
        self.wake()  # a file closed after writing is complete: take it now, not at the next tick

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        self.ready.put(str(event.dest_path))
        self.wake()  # a file renamed in is complete by definition

    def on_any_event(self, event: FileSystemEvent) -> None:
        return None


class _KernelWatch:
    """Raw inotify on Linux (inotify_simple): IN_MOVED_TO and IN_CLOSE_WRITE, read from a descriptor
    the main loop waits on. watchdog reports a file renamed in from outside the inbox as "created", the
    same as a file still being written, so through it such a file waited for the rescan (seconds); the
    kernel's own event says it is complete."""

    def __init__(self, folder: Path) -> None:
        from inotify_simple import INotify
        from inotify_simple import flags as f

        self.inotify = INotify(nonblocking=True)
        self.moved, self.closed = f.MOVED_TO, f.CLOSE_WRITE
        self.overflow = f.Q_OVERFLOW
        self.inotify.add_watch(str(folder), f.MOVED_TO | f.CLOSE_WRITE)

    def fileno(self) -> int:
        return int(self.inotify.fileno())

    def names(self) -> tuple[list[str], bool]:
        """Names complete now, and whether the kernel dropped events (then rescan at once)."""
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return [], False
        overflow = any(e.mask & self.overflow for e in events)
        return [e.name for e in events if e.name and e.mask & (self.moved | self.closed)], overflow

    def close(self) -> None:
        self.inotify.close()


class Inbox:
    def __init__(self, folder: Path, quiet_s: float, rescan_s: float,
                 wake: Callable[[], None] = lambda: None, bytes_per_call: int = BYTES_PER_CALL) -> None:
        self.folder = folder
        self.bytes_per_call = bytes_per_call
        self._pending: dict[str, Path] = {}  # complete, not handed out yet: past the last call's budget
        self.wake = wake  # wakes the main loop (called from the observer's thread)
        self.quiet_s = quiet_s
        self.rescan_s = rescan_s
        self.ready: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._kernel: _KernelWatch | None = None
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first seen unchanged)
        self._next_scan = 0.0

    def start_watching(self) -> None:
        if sys.platform.startswith("linux"):
            try:
                self._kernel = _KernelWatch(self.folder)
                return
            except (OSError, ImportError) as exc:  # e.g. out of inotify watches
                logger.warning("inbox: inotify unavailable ({}); trying watchdog", exc)
        try:
            obs = Observer()
            obs.schedule(_Handler(self.ready, self.wake), str(self.folder), recursive=False)
            obs.daemon = True
            obs.start()
            self._observer = obs
        except OSError as exc:  # e.g. out of inotify watches: polling alone still works
            logger.warning("inbox: inotify unavailable ({}); polling every {}s", exc, self.rescan_s)

    def handles(self) -> list[int]:
        """Descriptors the main loop waits on (the kernel watch), so a new file wakes it at once."""
        return [self._kernel.fileno()] if self._kernel is not None else []

    def stop(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None

    def due(self, now: float | None = None) -> list[Path]:
        """Paths that are complete now: from events, or unchanged since the last rescan."""
        now = time.monotonic() if now is None else now
        out: dict[str, Path] = {}
        if self._kernel is not None:
            names, overflow = self._kernel.names()
            for name in names:
                p = self.folder / name
                if is_inbox_name(name) and p.exists():
                    out[name] = p
            if overflow:
                self._next_scan = now  # the kernel dropped events: rescan now
        while True:
            try:
                p = Path(self.ready.get_nowait())
            except queue.Empty:
                break
            if p.parent == self.folder and is_inbox_name(p.name) and p.exists():
                out[p.name] = p
        if now >= self._next_scan:
            self._next_scan = now + self.rescan_s
            out.update({p.name: p for p in self.quiet(now)})
        return self._budgeted({**self._pending, **out})

    def _budgeted(self, ready: dict[str, Path]) -> list[Path]:
        """As many of `ready` (by name) as fit in `bytes_per_call`, at least one; the rest wait for the next
        call, which comes at once (wake): one tick never validates more than about one largest manifest,
        so the main loop turns (and pings the watchdog) between big ones."""
        taken: list[Path] = []
        total = 0
        self._pending = {}
        for name in sorted(ready):
            path = ready[name]
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue  # gone already
            if taken and total + size > self.bytes_per_call:
                self._pending[name] = path
                continue
            taken.append(path)
            total += size
        if self._pending:
            self.wake()
        return taken

    def quiet(self, now: float) -> list[Path]:
        found = []
        names = set()
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        for e in entries:
            if not is_inbox_name(e.name):
                continue
            names.add(e.name)
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            prev = self._seen.get(e.name)
            if prev is None or prev[:2] != key:
                self._seen[e.name] = (*key, now)
                if time.time() - st.st_mtime < self.quiet_s:
                    continue  # written moments ago: wait until it has stood still for quiet_s
            elif now - prev[2] < self.quiet_s and time.time() - st.st_mtime < self.quiet_s:
                continue
            found.append(Path(e.path))
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return found

    def wait_quiet(self, paths: list[Path]) -> list[Path]:
        """--once at start-up: a file written moments ago gets quiet_s to stand still before it is read."""
        deadline = time.monotonic() + self.quiet_s * 3
        while time.monotonic() < deadline:
            young = [p for p in paths if p.exists() and time.time() - p.stat().st_mtime < self.quiet_s]
            if not young:
                break
            time.sleep(0.1)
        return [p for p in paths if os.path.lexists(p)]

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)
