"""Group commit: the transitions of one loop tick are made durable together, in one fsync wave.

A tick may finish dozens of stage results. Written one by one, each manifest costs a file fsync and
a folder fsync, and each move two more. Here every new file is first written to its temp name, then
ONE `syncfs` makes all their contents durable, then the renames and folder moves run in order, then a
second `syncfs` makes those durable. The guarantee is unchanged (a reader or a crash sees the old
file or the new one, whole; a move happens after the manifest it depends on), at two syncs per tick
instead of several per episode.

It relies on the file system journaling metadata in order (ext4, xfs, btrfs do): a rename that
survived a power cut implies the renames issued before it did. Where `syncfs` is missing, it falls
back to fsyncing each file and folder.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from podspool.stages import fsio

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(anchor: Path) -> bool:
    """Flush the whole file system holding `anchor`; False where the call does not exist."""
    if _syncfs is None:
        return False
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(anchor))
    finally:
        os.close(fd)
    return True


@dataclass
class _Write:
    tmp: Path
    path: Path
    owner: object


@dataclass
class _Move:
    src: Path
    dst: Path
    what: str
    owner: object


class GroupFailed(Exception):
    """Part of a group did not take effect. `failed` holds the owners whose changes are not (all) on disk."""

    def __init__(self, failed: set[object], cause: OSError) -> None:
        super().__init__(str(cause))
        self.failed = failed
        self.cause = cause


class CommitGroup:
    """Collects writes and moves, each tagged with an owner (an episode id, say), then commits them."""

    def __init__(self, anchor: Path) -> None:
        self.anchor = anchor
        self.items: list[_Write | _Move] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def write(self, path: Path, data: bytes, owner: object) -> None:
        """Write the temp file now (contents not yet durable); raises OSError with nothing left behind."""
        tmp = fsio.temp_name_for(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            fsio.unlink_quietly(tmp)
            raise
        os.close(fd)
        self.items.append(_Write(tmp, path, owner))

    def move(self, src: Path, dst: Path, what: str, owner: object) -> None:
        self.items.append(_Move(src, dst, what, owner))

    def commit(self) -> None:
        """Make everything durable, in order. On failure, undo what did not happen and raise GroupFailed."""
        if not self.items:
            return
        items, self.items = self.items, []
        fallback = False
        try:
            fallback = not syncfs(self.anchor)
            if fallback:
                for it in items:
                    if isinstance(it, _Write):
                        _fsync_file(it.tmp)
        except OSError as exc:
            self._undo(items)
            raise GroupFailed({it.owner for it in items}, exc) from exc
        dirs: set[Path] = set()
        for i, it in enumerate(items):
            try:
                if isinstance(it, _Write):
                    fsio.crashpoint(f"write {it.path.parent.name}/{it.path.name}")
                    os.replace(it.tmp, it.path)
                    dirs.add(it.path.parent)
                else:
                    # rename() onto an existing empty folder succeeds silently: never let two share a name
                    if it.dst.exists():
                        raise FileExistsError(errno.EEXIST, f"{it.dst} already exists", str(it.dst))
                    fsio.crashpoint(it.what)
                    os.rename(it.src, it.dst)
                    dirs.update((it.src.parent, it.dst.parent))
            except OSError as exc:
                rest = items[i:]
                self._undo(rest)
                raise GroupFailed({r.owner for r in rest}, exc) from exc
        try:
            if fallback or not syncfs(self.anchor):
                for d in dirs:
                    if d.exists():
                        fsio.fsync_dir(d)
        except OSError as exc:
            raise GroupFailed(set(), exc) from exc

    def _undo(self, items: list[_Write | _Move]) -> None:
        for it in items:
            if isinstance(it, _Write):
                fsio.unlink_quietly(it.tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
