"""Group commit: the transitions of one loop tick are made durable together, in one fsync wave.

A tick may finish dozens of stage results. Written one by one, each manifest costs a file fsync and
a folder fsync, and each move two more. Here every new file is first written to its temp name (a file
that exists: to a spare, see SparePool; a stage's artifacts: by its worker, see `adopt`), then ONE
`syncfs` makes all their contents durable (`sync`), then the renames (exchanges) and folder moves run
in order (`apply`: an episode's artifacts before its manifest, its manifest before its move), then a
second `syncfs` makes those durable (`settle`). The guarantee is unchanged (a reader or a crash sees
the old file or the new one, whole; a move happens after the manifest it depends on), at two syncs per
tick instead of several per episode. The main loop's groups share syncs further: a tick's renames are
settled by the next tick's `sync` (results.py), so a busy loop pays one `syncfs` a tick.

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


_anchors: dict[Path, int] = {}  # anchor folder -> an fd kept open for syncfs (a commit per tick)


def syncfs(anchor: Path) -> bool:
    """Flush the whole file system holding `anchor`; False where the call does not exist."""
    if _syncfs is None:
        return False
    fd = _anchors.get(anchor)
    if fd is None:
        fd = _anchors[anchor] = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(anchor))
    return True


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100
_renameat2 = getattr(_libc, "renameat2", None)


def exchange(a: Path | str, b: Path | str) -> None:
    """Swap two names in one atomic step (renameat2 RENAME_EXCHANGE): each now names the other's file."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(b))
    if _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))


RENAME_NOREPLACE = 1  # linux/fs.h


def rename_new(src: Path | str, dst: Path | str) -> None:
    """Rename `src` to `dst`, which must not exist (FileExistsError if it does). rename() onto an existing
    empty folder succeeds silently, so two episodes could share a name: renameat2 RENAME_NOREPLACE
    refuses in the same atomic step, without a separate look first; elsewhere, a look, then rename()."""
    if _renameat2 is not None:
        if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a file system without the flag
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, f"{dst} already exists", str(dst))
    os.rename(src, dst)


# exchange() is not supported here (another OS, or a file system without it): replace the file instead
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT})


class SparePool:
    """Spare files (state/spares/) that rewrite an existing file without creating or freeing an inode.

    A rewrite by temp file and rename creates an inode and frees the old one. On ext4 without a
    journal, every later file creation for a minute or more scans past the freed inodes
    (find_inode_bit -> recently_deleted), so a daemon rewriting manifests all day would pay more for
    each new file the busier it is. Instead the new content is written into a spare (not a file anyone
    reads), made durable with the group, and swapped with the live file by exchange(): readers see the
    old file or the new one, whole, as with rename, and the old file becomes the next spare.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.works = _renameat2 is not None
        try:
            self.free = sorted(p for p in folder.iterdir() if p.name.startswith("spare-"))  # a previous life's
        except FileNotFoundError:
            self.free = []
        self.made = len(self.free)

    def take(self) -> Path:
        if self.free:
            return self.free.pop()
        if not self.made:
            self.folder.mkdir(mode=0o750, exist_ok=True)
        while True:
            self.made += 1
            path = self.folder / f"spare-{self.made}"
            if not path.exists():
                return path

    def give_back(self, path: Path | str) -> None:
        self.free.append(path if isinstance(path, Path) else Path(path))


@dataclass
class _Write:
    tmp: Path | str  # str: adopted from a worker's message (a Path per file cost more than its rename)
    path: Path | str
    owner: object
    spare: bool = False  # tmp is a spare file, to be exchanged with path
    adopted: bool = False  # tmp was written by a worker (adopt): an undo leaves it for the result's next try


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

    def __init__(self, anchor: Path, spares: SparePool | None = None) -> None:
        self.anchor = anchor
        self.spares = spares
        self.items: list[_Write | _Move] = []  # to sync, then apply
        self._applied: list[_Write | _Move] = []  # applied, to settle
        self._fallback = False  # no syncfs here: files and folders are fsynced one by one

    def __bool__(self) -> bool:
        return bool(self.items)

    def write(self, path: Path, data: bytes, owner: object, replaces: bool | None = None) -> None:
        """Write the temp file (or a spare, for a file that exists) now, contents not yet durable; raises
        OSError with nothing left behind. `replaces`: whether `path` exists, when the caller knows (an
        episode's manifest always does), saving a look; a wrong True costs the spare, nothing else."""
        if replaces is None:
            replaces = path.exists()
        spares = self.spares if self.spares is not None and self.spares.works and replaces else None
        spare = spares is not None
        tmp = spares.take() if spares is not None else fsio.temp_name_for(path)
        # a spare is overwritten, then cut to length: O_TRUNC would free its blocks only to allocate them again
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if spare else os.O_EXCL)
        try:
            fd = os.open(tmp, flags, 0o640)
        except BaseException:
            self._release(_Write(tmp, path, owner, spare), unlink=False)
            raise
        try:
            fsio.write_all(fd, data)
            if spare and os.fstat(fd).st_size > len(data):
                os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            self._release(_Write(tmp, path, owner, spare))
            raise
        os.close(fd)
        self.items.append(_Write(tmp, path, owner, spare))

    def adopt(self, files: tuple[tuple[str, str], ...], owner: object) -> None:
        """Rename files a stage worker left at their temp names (fsio.hold_renames), synced with the rest."""
        for tmp, path in files:
            self.items.append(_Write(tmp, path, owner, adopted=True))

    def retract(self, owner: object) -> None:
        """Take back what `owner` adopted (its result cannot be saved now), leaving the temp files."""
        self.items = [it for it in self.items if not (isinstance(it, _Write) and it.adopted and it.owner == owner)]

    def move(self, src: Path, dst: Path, what: str, owner: object) -> None:
        self.items.append(_Move(src, dst, what, owner))

    def commit(self) -> None:
        """Make everything durable, in order. On failure, undo what did not happen and raise GroupFailed."""
        self.sync()
        self.apply()
        self.settle()

    def sync(self) -> None:
        """Step one: the new files' contents durable (and, in the same syncfs, whatever any group renamed
        before). On failure the group is undone: GroupFailed names every owner."""
        if not self.items:
            return
        try:
            self._fallback = not syncfs(self.anchor)
            if self._fallback:
                for it in self.items:
                    if isinstance(it, _Write):
                        fsio.fsync_file(it.tmp)
        except OSError as exc:
            items, self.items = self.items, []
            self._undo(items)
            raise GroupFailed({it.owner for it in items}, exc) from exc

    def apply(self) -> None:
        """Step two, after `sync`: the renames and moves, in order. What did not happen is undone, and
        GroupFailed names its owners."""
        items, self.items = self.items, []
        hook = fsio.crash_hook_armed()
        for i, it in enumerate(items):
            try:
                if isinstance(it, _Write):
                    if hook:
                        folder, name = os.path.split(it.path)
                        fsio.crashpoint(f"write {os.path.basename(folder)}/{name}")
                    self._put(it)
                else:
                    if hook:
                        fsio.crashpoint(it.what)
                    rename_new(it.src, it.dst)
            except OSError as exc:
                self._applied = items[:i]
                rest = items[i:]
                self._undo(rest)
                raise GroupFailed({r.owner for r in rest}, exc) from exc
        self._applied = items

    def settle(self) -> None:
        """Step three: the renames durable. A failure here undoes nothing (GroupFailed names no owner)."""
        items, self._applied = self._applied, []
        if not items:
            return
        try:
            if self._fallback or not syncfs(self.anchor):
                for d in self._folders(items):
                    if os.path.isdir(d):
                        fsio.fsync_dir(d)
        except OSError as exc:
            raise GroupFailed(set(), exc) from exc

    @property
    def applied(self) -> bool:
        """Something was renamed and is not settled yet."""
        return bool(self._applied)

    @property
    def settled_by_any_sync(self) -> bool:
        """Whether the next `sync` of any group settles this one too (syncfs flushes the whole file
        system); where each file is fsynced instead, only `settle` does."""
        return not self._fallback

    def _folders(self, items: list[_Write | _Move]) -> set[str]:
        """The folders whose entries `items` changed (fsynced one by one where syncfs is missing)."""
        dirs: set[str] = set()
        for it in items:
            if isinstance(it, _Write):
                dirs.add(os.path.dirname(it.path))
                if it.spare and self.spares is not None:
                    dirs.add(str(self.spares.folder))  # a spare renamed in (its target was gone) left it
            else:
                dirs.update((str(it.src.parent), str(it.dst.parent)))
        return dirs

    def _put(self, it: _Write) -> None:
        if it.spare and self.spares is not None:
            try:
                exchange(it.tmp, it.path)
                self.spares.give_back(it.tmp)  # it now holds the old file: the next spare
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                if exc.errno != errno.ENOENT:
                    self.spares.works = False
        os.replace(it.tmp, it.path)

    def _release(self, it: _Write, unlink: bool = True) -> None:
        if it.adopted:
            return  # the worker's file: its result is kept and tried again (results.py)
        if it.spare and self.spares is not None:
            self.spares.give_back(it.tmp)  # what it holds is nobody's
        elif unlink:
            fsio.unlink_quietly(it.tmp)

    def _undo(self, items: list[_Write | _Move]) -> None:
        for it in items:
            if isinstance(it, _Write):
                self._release(it)
