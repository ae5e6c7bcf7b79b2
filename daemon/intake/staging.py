"""Intake staging: a valid batch built under state/staging/<id>/, made durable, then released.

`accept` runs the steps: `stage_batch` builds the folder (batch.json,
session.json, one folder per episode with its manifest.json) and makes it durable; the rename of that
folder into batches/ is the commit point; `release_episodes` then moves each episode folder into
research/. A crash before the rename leaves a staging folder that `recover_intake` discards; a
crash after it leaves batches/<id>/episodes/, which `release_episodes` finishes.

Paths are strings here: a batch of 3,000 episodes joins some 20,000 of them, and a Path join parses its
parts every time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from podspool.daemon.core.commit import syncfs
from podspool.daemon.models import BatchManifest, EpisodeManifest, default_batch_id, episode_id, utcnow
from podspool.daemon.spool import DIR_MODE, LOCATIONS, MANIFEST, Spool, manifest_bytes
from podspool.stages import fsio

FILE_MODE = 0o640
LIST_RATIO = 8  # listing a folder costs about an eighth of a lookup per entry


def accept(spool: Spool, inbox_file: Path, manifest: BatchManifest, raw: bytes,
           priority_seq: float) -> tuple[str, list[int]]:
    """Turn a valid manifest into batches/<id>/ and one folder per episode in research/. Returns the
    batch id and its episode numbers, in the manifest's order.

    Crash-safe: everything is built in state/staging/<id>, and the rename of that folder into
    batches/ is the commit point. `recover_intake` finishes or discards a half-done intake.
    """
    bid = manifest.batch_id or _fresh_default_id(spool)
    manifest = manifest.model_copy(update={"batch_id": bid})
    stage_dir = spool.staging / bid
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    try:
        numbers = stage_batch(stage_dir, spool.staging, inbox_file, manifest, raw, priority_seq)
    except BaseException:
        # A half-built intake (disk full, read-only) must not survive: it holds space the retry needs,
        # and known_batch() took it for an accepted batch, so the retry rejected the operator's
        # manifest as "already known" (found by the disk-full test).
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    target = spool.batch_dir(bid)
    if target.exists():
        shutil.rmtree(stage_dir)
        raise FileExistsError(errno.EEXIST, f"batch {bid} already exists", str(target))
    fsio.crashpoint(f"commit batch {bid}")  # test hook
    os.rename(stage_dir, target)  # the commit point
    fsio.fsync_dir(spool.batches)
    spool.remove_inbox_file(inbox_file)
    release_episodes(spool.root, target)
    return bid, numbers


def _fresh_default_id(spool: Spool) -> str:
    bid = default_batch_id()
    n = 1
    candidate = bid
    while spool.batch_dir(candidate).exists() or (spool.staging / candidate).exists():
        n += 1
        candidate = f"{bid}_{n}"
    return candidate


def recover_intake(spool: Spool) -> list[str]:
    """Discard uncommitted intakes and finish committed ones. Returns the batches finished."""
    for name in os.listdir(spool.staging):
        shutil.rmtree(spool.staging / name, ignore_errors=True)
    finished = []
    for bid in sorted(os.listdir(spool.batches)):
        if (spool.batch_dir(bid) / "episodes").is_dir():
            release_episodes(spool.root, spool.batch_dir(bid))
            finished.append(bid)
    return finished


def stage_batch(stage_dir: Path, anchor: Path, inbox_file: Path, manifest: BatchManifest, raw: bytes,
                priority_seq: float) -> list[int]:
    """Build batch.json, session.json and every episode folder in `stage_dir` (which must not exist), and
    make them all durable with one sync of the file system holding `anchor` (a folder that stays put).

    Files are written in place, not to a temp name and renamed: nobody sees the staging folder until its
    rename into batches/, and the sync at the end covers every file and folder in it before that rename
    publishes them, so they become visible whole and durable all the same. A failure leaves `stage_dir`
    half-built: the caller removes it.
    """
    bid = str(manifest.batch_id)
    stage = str(stage_dir)
    episodes_dir = os.path.join(stage, "episodes")
    os.mkdir(stage, DIR_MODE)
    os.mkdir(episodes_dir, DIR_MODE)
    st = inbox_file.stat()
    _write_new(os.path.join(stage, "batch.json"), fsio.json_bytes(manifest.model_dump(mode="json", exclude_none=True)))
    session = {
        "batch_id": bid,
        "accepted_at": utcnow(),
        "seq": priority_seq,
        "priority": manifest.priority,
        "budget_usd": manifest.budget_usd,
        "strategy": manifest.effective_strategy(),
        "source": {"name": inbox_file.name, "inode": st.st_ino, "sha256": hashlib.sha256(raw).hexdigest()},
    }
    _write_new(os.path.join(stage, "session.json"), fsio.json_bytes(session))
    numbers = []
    episodes = _open_dir(episodes_dir)  # names below are looked up from here, not from /
    try:
        for ep in manifest.all_episodes():
            eid = episode_id(ep.number, bid)
            os.mkdir(eid, DIR_MODE, dir_fd=episodes)
            now = utcnow()
            m = EpisodeManifest(episode_number=ep.number, session_id=eid, batch_id=bid, topic=ep.topic,
                                title=ep.title, notes=ep.notes, sources=list(ep.sources),
                                show=manifest.show_of(ep), priority=manifest.priority, created_at=now, updated_at=now)
            _write_new(f"{eid}/{MANIFEST}", manifest_bytes(m), episodes)
            numbers.append(ep.number)  # not the manifest: 10,000 of them held at once were ~30 MB
    finally:
        os.close(episodes)
    fsio.crashpoint(f"sync staging {bid}")  # test hook: a kill with everything written and nothing durable
    if not syncfs(anchor):  # no syncfs here: each file, then each folder (their entries)
        folders = [os.path.join(episodes_dir, episode_id(n, bid)) for n in numbers]
        for path in [os.path.join(stage, "batch.json"), os.path.join(stage, "session.json"),
                     *(os.path.join(f, MANIFEST) for f in folders)]:
            fsio.fsync_file(path)
        for folder in [*folders, episodes_dir, stage]:
            fsio.fsync_dir(folder)
    return numbers


def release_episodes(root: Path, batch_dir: Path) -> None:
    """Move every episode folder of a committed batch from <batch_dir>/episodes/ into research/.

    One left behind by a crash after its release is already elsewhere: the stray copy is removed.
    """
    episodes_dir = os.path.join(batch_dir, "episodes")
    if not os.path.isdir(episodes_dir):
        return
    names = sorted(os.listdir(episodes_dir))
    elsewhere = _present(root, names)
    research = _open_dir(os.path.join(root, "research"))
    source = _open_dir(episodes_dir)
    try:
        for name in names:
            if name in elsewhere:
                shutil.rmtree(os.path.join(episodes_dir, name))
                continue
            fsio.crashpoint(f"release {name}")  # test hook
            os.rename(name, name, src_dir_fd=source, dst_dir_fd=research)
        os.fsync(research)
    finally:
        os.close(source)
        os.close(research)
    os.rmdir(episodes_dir)
    fsio.fsync_dir(batch_dir)


def _present(root: Path, names: list[str]) -> set[str]:
    """Those of `names` that exist in some location of the spool.

    A location with few entries for the names asked is listed once; a big one (done/ before archiving)
    is asked name by name, relative to the open folder (a lookup of one part, not the whole path).
    """
    found: set[str] = set()
    wanted = set(names)
    for loc in LOCATIONS:
        path = os.path.join(root, loc)
        fd = _open_dir(path)
        try:
            links = os.fstat(fd).st_nlink  # 2 + its subfolders, where the file system counts them
            if 2 <= links <= 2 + LIST_RATIO * len(names):
                # a name listed may be a dangling link, which does not count (as for Path.exists)
                found.update(n for n in wanted.intersection(os.listdir(fd)) if os.access(n, os.F_OK, dir_fd=fd))
            else:
                found.update(n for n in names if os.access(n, os.F_OK, dir_fd=fd))
        finally:
            os.close(fd)
    return found


def _write_new(path: str, data: bytes, dir_fd: int | None = None) -> None:
    """Create `path` (it must not exist) holding `data`; not synced (stage_batch syncs them all)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                 dir_fd=dir_fd)
    try:
        fsio.write_all(fd, data)
    finally:
        os.close(fd)


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
