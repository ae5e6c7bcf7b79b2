"""The spool on disk: folder layout, atomic moves, episode manifests, batch intake and recovery.

The folder an episode sits in is its state. Only the supervisor calls the writing methods here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil
from podspool.daemon.core.commit import rename_new
from podspool.daemon.models import BatchManifest, EpisodeManifest, utcnow
from podspool.stages import fsio
from pydantic import ValidationError


class Location(StrEnum):
    """The folder an episode sits in, which is its state: a stage's queue, or where it ended."""

    RESEARCH = "research"
    PRODUCTION = "production"
    AUDIO = "audio"
    REVIEW = "review"  # a script waiting for a person's approval: nothing runs here
    DONE = "done"
    FAILED = "failed"


QUEUES = (Location.RESEARCH, Location.PRODUCTION, Location.AUDIO)  # the stages' folders, in order
FINAL = (Location.DONE, Location.FAILED)
LOCATIONS = (*QUEUES, Location.REVIEW, *FINAL)
DIR_MODE = 0o750
MANIFEST = "manifest.json"


class SpoolLocked(Exception):
    """Another daemon owns this spool."""


@dataclass
class Located:
    location: str
    episode_id: str
    folder: Path


@lru_cache(maxsize=256)  # more than the episodes in flight: memory stays flat
def _child(parent: Path, name: str) -> Path:
    """parent / name, remembered: the supervisor asks for an episode's folder a score of times while it
    runs (a Path join parses its parts every time: 5 µs)."""
    return parent / name


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.rejected = root / "rejected"
        self.batches = root / "batches"
        self.archive = root / "archive"  # the layout inside is daemon/publishing/archive.py's
        self.logs = root / "logs"
        self.state = root / "state"
        self.staging = self.state / "staging"
        self.requests = self.state / "requests"
        self._lock_fd: int | None = None

    # ---- layout -----------------------------------------------------------------------------

    def ensure(self) -> None:
        for d in (self.root, self.inbox, *(self.root / q for q in LOCATIONS), self.rejected, self.batches,
                  self.logs, self.state, self.staging, self.requests):
            d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # Files move between these folders by rename, which cannot cross file systems (EXDEV): a state/ or a
        # queue mounted elsewhere would fail every move, forever, so it is refused at start.
        device = self.root.stat().st_dev
        for d in (self.state, self.inbox, *(self.root / q for q in LOCATIONS), self.rejected, self.batches):
            if d.stat().st_dev != device:
                raise OSError(errno.EXDEV, f"{d.name}/ is on another file system than the spool (files move "
                                           "between them by rename, which cannot cross file systems)", str(d))

    def where(self, location: str) -> Path:
        return _child(self.root, location)

    def folder(self, location: str, eid: str) -> Path:
        return _child(self.where(location), eid)

    def batch_dir(self, batch_id: str) -> Path:
        return self.batches / batch_id

    # ---- one daemon per spool ---------------------------------------------------------------

    def lock(self) -> None:
        """Take the spool's exclusive lock or raise SpoolLocked. Held until the process exits."""
        self.state.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.state / "podspool.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(str(self.root)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def wait_for_old_workers(self, timeout: float = 10.0) -> bool:
        """Wait until no worker of an earlier daemon holds the workers lock (they exit when orphaned)."""
        fd = os.open(self.state / "workers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return True
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.1)
        finally:
            os.close(fd)

    # ---- episodes ---------------------------------------------------------------------------

    def read_manifest(self, folder: Path) -> EpisodeManifest:
        return read_manifest(folder)

    def write_manifest(self, folder: Path, m: EpisodeManifest) -> None:
        m.updated_at = utcnow()
        fsio.write_bytes(folder / MANIFEST, manifest_bytes(m))

    def move(self, eid: str, src: str, dst: str) -> Path:
        """Atomically move an episode folder from one location to another."""
        source, target = self.folder(src, eid), self.folder(dst, eid)
        fsio.crashpoint(f"move {eid} {src}->{dst}")  # test hook: a crash sweep stops here
        rename_new(source, target)  # never onto an existing (empty) folder: two episodes sharing a name
        fsio.fsync_dir(target.parent)
        fsio.fsync_dir(source.parent)
        return target

    def scan(self) -> Iterator[Located]:
        """Every episode folder in every location (the recovery scan)."""
        for loc in LOCATIONS:
            yield from self.scan_location(loc)

    def scan_location(self, loc: str) -> Iterator[Located]:
        try:
            entries = sorted(os.scandir(self.where(loc)), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(".") or e.is_symlink() or not e.is_dir():
                continue
            yield Located(loc, e.name, Path(e.path))

    # ---- temp files -------------------------------------------------------------------------

    def clean_temps(self, folder: Path) -> int:
        """Remove temp files left by writers that are gone; a live writer's temp file is kept."""
        removed = 0
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.startswith(fsio.TEMP_PREFIX):
                continue
            pid_text = entry.name[len(fsio.TEMP_PREFIX):].split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and _writer_alive(int(pid_text), entry):
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass  # gone already, or a read-only disk: a stray temp file is not worth stopping for
        return removed

    # ---- intake (daemon/intake/staging.py builds and commits a batch) ----------------------------------

    def remove_inbox_file(self, path: Path) -> None:
        fsio.crashpoint(f"unlink inbox {path.name}")  # test hook
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fsio.fsync_dir(path.parent)

    def is_leftover_of_accepted(self, path: Path, raw: bytes, batch_id: str | None) -> bool:
        """True when `path` is the very inbox file of an accepted batch (a crash came before its unlink)."""
        sha = hashlib.sha256(raw).hexdigest()
        try:
            ino = path.stat().st_ino
        except FileNotFoundError:
            return False
        candidates = [batch_id] if batch_id else sorted(os.listdir(self.batches))[-50:]
        for bid in candidates:
            session = self.read_session(bid)
            src = session.get("source", {}) if session else {}
            if src.get("sha256") == sha and src.get("inode") == ino and src.get("name") == path.name:
                return True
        return False

    def reject(self, path: Path, problems: list[str]) -> Path:
        """Move an invalid inbox file to rejected/ beside <name>.error.txt naming each problem."""
        name = path.name
        target = self.rejected / name
        if target.exists() or (self.rejected / f"{name}.error.txt").exists():
            name = f"{path.name}.{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
            target = self.rejected / name
        text = f"{path.name} was rejected at {utcnow()}:\n" + "".join(f"- {p}\n" for p in problems)
        fsio.write_text(self.rejected / f"{name}.error.txt", text)
        fsio.crashpoint(f"reject {path.name}")  # test hook
        try:
            os.rename(path, target)
        except FileNotFoundError:
            pass
        fsio.fsync_dir(self.rejected)
        fsio.fsync_dir(path.parent)
        return target

    # ---- batches ----------------------------------------------------------------------------

    def known_batch(self, bid: str) -> bool:
        """Accepted, being accepted, or archived: an id is never used twice (archiving would collide)."""
        return self.batch_dir(bid).exists() or (self.staging / bid).exists() or (self.archive / bid).exists()

    def read_batch(self, bid: str) -> BatchManifest | None:
        try:
            return BatchManifest.model_validate(fsio.read_json(self.batch_dir(bid) / "batch.json"))
        except (FileNotFoundError, ValueError, ValidationError):
            return None

    def read_session(self, bid: str) -> dict[str, Any]:
        try:
            data = fsio.read_json(self.batch_dir(bid) / "session.json")
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def batch_ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.batches) if (self.batches / n / "batch.json").exists())
        except FileNotFoundError:
            return []

    def inbox_candidates(self) -> list[Path]:
        """Inbox entries to look at: everything but dot-files and .tmp/.part names (still being written)."""
        try:
            names = sorted(os.listdir(self.inbox))
        except FileNotFoundError:
            return []
        return [self.inbox / n for n in names if is_inbox_name(n)]


def _writer_alive(pid: int, entry: os.DirEntry[str]) -> bool:
    """Whether the process that named a temp file may still be writing it.

    A killed worker stays a zombie until whoever adopted it reaps it (the sweep found a temp file kept
    for a dead worker that way), and a pid can be reused: neither counts as the live writer.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= entry.stat(follow_symlinks=False).st_mtime + 1.0
    except (psutil.Error, OSError):
        return False


def read_manifest(folder: Path | str) -> EpisodeManifest:
    """The manifest in `folder`; OSError, or ValueError when it is not a valid one. Parsed and validated
    by pydantic-core in one pass: half the time of json.load and then validating the dict."""
    return EpisodeManifest.model_validate_json(fsio.read_whole(os.path.join(folder, MANIFEST)))


def manifest_bytes(m: EpisodeManifest) -> bytes:
    """manifest.json's bytes: the one format, whoever writes it (pydantic's encoder: json's indenting
    one is pure Python, and a busy tick writes dozens)."""
    return m.model_dump_json(indent=2).encode("utf-8") + b"\n"


def error_free(data: bytes) -> bool:
    """True when manifest bytes in `manifest_bytes`' format hold an empty top-level errors list, told
    without parsing them (13 -> 4 us). Indented by 2, a key at 2 spaces is a top-level one, and a JSON
    string cannot hold a raw newline. False for anything else: parse it to know."""
    return data.startswith(b'{\n  "') and b'\n  "errors": []' in data


def is_inbox_name(name: str) -> bool:
    return not name.startswith(".") and not name.endswith((".tmp", ".part"))
