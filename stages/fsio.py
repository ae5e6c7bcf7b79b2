"""Durable file writes: temp file in the same folder, fsync, rename, fsync the folder. A reader or a
crash sees the old file or the new one, never half of one.

This is the lowest layer of podspool: the stages write their artifacts with it, the daemon its state.
A caller that renames many files together (after one sync of their file system) may have a thread's
writes held at their temp names and take the renames over (`hold_renames`); this module does not know
who that is.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic_core import to_json

TEMP_PREFIX = ".tmp-"


class _CrashPoints:
    """TEST HOOK (SQLite-style crash-point sweep); a no-op in production beyond one counter increment.

    Every durable operation (a write's rename, a folder move, the intake's commit rename) calls
    `crashpoint()` just before it takes effect, and so does a write whose rename is held (a kill point
    with nothing durable: its file waits for the caller's rename). With
    `PODSPOOL_CRASH_AT=k` in the environment, the k-th such operation of *this* process kills the process
    with SIGKILL, so tests can prove that a crash at any instant loses nothing. Optional companions:
      PODSPOOL_CRASH_ROLE=<role>             only count in processes of that role (set_role: the daemon
                                             names its supervisor and its workers, "worker-<stage>");
      PODSPOOL_CRASH_ONCE=<path>             crash only if <path> can still be created (one crash per
                                             run, even though every spawned worker has its own counter);
      PODSPOOL_CRASH_ERRNO=ENOSPC            raise OSError(errno) at op k instead of dying (disk trouble
                                             where a real full file system cannot be mounted);
      PODSPOOL_CRASH_COUNT=<path>            append "<role> <pid> <op> <what>" per op (to measure a run).
    The environment is read at import, so spawned workers inherit it; `set_role` is called by workers.
    """

    def __init__(self) -> None:
        self.ops = 0
        self.role = "main"  # the daemon names its processes (set_role)
        env = os.environ
        self.at = int(env.get("PODSPOOL_CRASH_AT") or 0)
        self.only_role = env.get("PODSPOOL_CRASH_ROLE") or None
        self.once = env.get("PODSPOOL_CRASH_ONCE") or None
        self.errno = getattr(errno, env.get("PODSPOOL_CRASH_ERRNO") or "", None)
        self.count_file = env.get("PODSPOOL_CRASH_COUNT") or None
        self.armed = bool(self.at or self.count_file)  # else a hit only counts, and nothing reads the count
        self.lock = threading.Lock()

    def counts(self) -> bool:
        return self.only_role is None or self.only_role in (self.role, self.role.split("-", 1)[0])

    def hit(self, what: str) -> None:
        if self.counts():
            with self.lock:  # held into the kill: no other thread of a dying worker passes its own crash point
                self._hit(what)

    def _hit(self, what: str) -> None:
        self.ops += 1
        if self.count_file is not None:
            append_line(Path(self.count_file), f"{self.role} {os.getpid()} {self.ops} {what}")
        if self.ops != self.at:
            return
        if self.once is not None:
            try:
                os.close(os.open(self.once, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                return  # this run already crashed once
        if isinstance(self.errno, int):
            raise OSError(self.errno, os.strerror(self.errno), what)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # SIGKILL is on its way; found by the crash sweep: a worker's other thread logged
        # and renamed its next file between the kill and the death


_crash = _CrashPoints()  # module-level on purpose: a test hook must reach every writer without plumbing


def crashpoint(what: str) -> None:
    """TEST HOOK: mark one durable operation (see _CrashPoints); costs one counter increment."""
    _crash.hit(what)


def crash_hook_armed() -> bool:
    """Whether the crash hook does anything in this process (a hot loop may skip naming its steps)."""
    return _crash.armed


@contextmanager
def durable_step(what: str) -> Iterator[None]:
    """TEST HOOK: crashpoint(what), then the step itself, under the hook's lock. A worker runs two tasks
    at once: without it, one thread's kill could land between another's logged step and its rename,
    and the crash sweep would count a write that never happened (seen: quality.json "written twice")."""
    if not _crash.counts():
        yield
        return
    with _crash.lock:
        _crash._hit(what)
        yield


def set_role(role: str) -> None:
    """TEST HOOK: name this process's kind for PODSPOOL_CRASH_ROLE (workers call it at start)."""
    _crash.role = role


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_whole(path: str) -> bytes:
    """A file's bytes, read with os.read (a buffered file object cost as much as the read: 7 -> 3 us)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def fsync_file(path: Path | str) -> None:
    """Make a file's contents durable."""
    _fsync(path, os.O_RDONLY | os.O_CLOEXEC)


def fsync_dir(folder: Path | str) -> None:
    """Make a rename or a new entry in `folder` durable."""
    _fsync(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _fsync(path: Path | str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name_for(path: Path) -> Path:
    """A temp name beside `path` that carries the writer's pid, so recovery can tell a live owner."""
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


# Held renames, per thread (a caller may run several tasks at once): while a thread holds them, its
# writes and links stop at their temp names, contents written but not synced, and the (temp, final) pairs
# are handed to the caller, who syncs and renames them itself, in order (the daemon's group commit, one
# sync for many files).
_held = threading.local()


def hold_renames() -> None:
    """From now on this thread's writes and links wait at their temp names."""
    _held.files = []


def take_held_renames() -> list[tuple[str, str]]:
    """The (temp, final) pairs this thread left since hold_renames(), in order; ends holding."""
    files, _held.files = _holding() or [], None
    return files


def _holding() -> list[tuple[str, str]] | None:
    return getattr(_held, "files", None)


def _put(tmp: Path, path: Path, what: str, hold: bool = True) -> None:
    """`tmp`, whole, becomes `path`: left for the caller while this thread holds its renames, else renamed
    in now and the folder fsynced (a failed rename removes `tmp`)."""
    files = _holding() if hold else None
    if files is not None:
        crashpoint(f"{what} {path.parent.name}/{path.name} (left)")  # a kill point only: nothing is durable yet
        files.append((str(tmp), str(path)))
        return
    try:
        with durable_step(f"{what} {path.parent.name}/{path.name}"):
            os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write `data` to `path` whole: temp file, fsync, rename, fsync the folder (or held, above)."""
    _write_whole(path, mode, lambda fd: write_all(fd, data))


def write_lines(path: Path, lines: Iterable[str], mode: int = 0o640) -> None:
    """Write `lines`, each ending in a newline, to `path` whole (as write_bytes), without ever holding
    the whole text: a 10,000-episode batch's timeline is tens of MB as one string."""

    def fill(fd: int) -> None:
        with open(fd, "w", encoding="utf-8", closefd=False) as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")

    _write_whole(path, mode, fill)


def write_chunks(path: Path, chunks: Iterable[bytes], mode: int = 0o640) -> None:
    """Write `chunks`, one after another, to `path` whole (as write_bytes), without ever joining them."""

    def fill(fd: int) -> None:
        for chunk in chunks:
            write_all(fd, chunk)

    _write_whole(path, mode, fill)


def write_bytes_now(path: Path, data: bytes, mode: int = 0o640) -> None:
    """As write_bytes, but durable before it returns even while this thread holds its renames: work in
    progress that a killed worker's next attempt must find (each paid speech request's audio)."""
    _write_whole(path, mode, lambda fd: write_all(fd, data), hold=False)


def _write_whole(path: Path, mode: int, fill: Callable[[int], None], hold: bool = True) -> None:
    tmp = temp_name_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    holding = hold and _holding() is not None
    try:
        fill(fd)
        if not holding:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    _put(tmp, path, "write", hold)


def link(src: Path, dst: Path) -> None:
    """`dst` becomes another name of `src` (which this thread may have left at its temp name), atomically."""
    real = next((Path(t) for t, f in reversed(_holding() or []) if f == str(src)), src)
    tmp = temp_name_for(dst)
    os.link(real, tmp)
    _put(tmp, dst, "link")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """The one JSON file format: indented by 2, UTF-8, a final newline, no NaN or Infinity.

    pydantic-core's encoder (a dependency already) writes the same text as json.dumps(indent=2,
    ensure_ascii=False) at a tenth of the cost: json's indenting encoder is pure Python. It writes a
    non-finite float as NaN or Infinity, which JSON lacks; json.dumps then raises ValueError as before.
    """
    data = to_json(obj, indent=2)
    if b"NaN" in data or b"Infinity" in data:  # or only inside a string: json.dumps tells
        return (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    return data + b"\n"


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json_bytes(obj))


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single O_APPEND write (logs only: they grow, they are never rewritten)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def unlink_quietly(path: Path | str) -> None:
    """Remove a file that may already be gone (a temp file after a failed write)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
