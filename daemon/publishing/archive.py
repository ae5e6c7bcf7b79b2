"""Archiving finished batches: their episode folders and batch folder move under <spool>/archive/<batch_id>/.

Layout (one definition, here):
    archive/<batch_id>/episodes/<episode_id>/   each episode folder, from done/ or failed/
    archive/<batch_id>/batch/                   the batch folder, from batches/<batch_id>/

Every move is one rename on the spool's file system, so nothing is ever copied or half-moved. The batch
folder moves last: it is the commit point. Until it has moved, the batch is still a batch of batches/
whose finished episodes sit partly in done/ or failed/ and partly in the archive, and running
`archive_batch` again (after a kill -9 at any instant) moves the rest. Readers (status, feed) look in
both places and count an episode once.

Only the spool's owner may archive: `podspool archive` takes the spool lock, or hands a running daemon a
control request (`{"archive": {"batch": ID or null, "older_than_days": N or null}}`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.core.batch_views import parse_time
from podspool.daemon.models import BatchManifest, episode_id
from podspool.daemon.spool import DIR_MODE, FINAL, LOCATIONS, MANIFEST, Spool, read_manifest
from podspool.stages import fsio
from pydantic import ValidationError

ARCHIVE = "archive"
BATCH = "batch"
EPISODES = "episodes"
DAY_S = 86400.0


class NotArchivable(Exception):
    """The batch is unknown or not finished; the message says why."""


@dataclass(frozen=True)
class ArchivedEpisode:
    batch_id: str
    episode_id: str
    folder: Path


def archive_dir(root: Path, bid: str) -> Path:
    return Spool(root).archive / bid


def archived_batch_dir(root: Path, bid: str) -> Path:
    return archive_dir(root, bid) / BATCH


def archived_episode_dir(root: Path, bid: str, eid: str) -> Path:
    return archive_dir(root, bid) / EPISODES / eid


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def archived_batch_ids(root: Path) -> list[str]:
    """Batches whose archiving has committed (their batch folder is in the archive)."""
    return [b for b in _listdir(root / ARCHIVE) if (archived_batch_dir(root, b) / "batch.json").exists()]


def archived_episodes(root: Path) -> Iterator[ArchivedEpisode]:
    """Every episode folder in the archive, committed batches and half-archived ones alike."""
    for bid in _listdir(root / ARCHIVE):
        for eid in _listdir(archive_dir(root, bid) / EPISODES):
            folder = archived_episode_dir(root, bid, eid)
            if folder.is_dir() and not folder.is_symlink():
                yield ArchivedEpisode(bid, eid, folder)


def read_archived_session(root: Path, bid: str) -> dict[str, Any]:
    try:
        data = fsio.read_json(archived_batch_dir(root, bid) / "session.json")
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def _episode_ids(batch_folder: Path, bid: str) -> list[str]:
    try:
        manifest = BatchManifest.model_validate(fsio.read_json(batch_folder / "batch.json"))
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        raise NotArchivable(f"batch {bid}: cannot read its batch.json ({exc})") from None
    return [episode_id(e.number, bid) for e in manifest.all_episodes(check=False)]


def _where(root: Path, bid: str, eid: str) -> tuple[str, Path] | None:
    """(location, folder) of an episode of `bid`: a stage folder, done/failed, or the archive."""
    for loc in LOCATIONS:
        if (root / loc / eid).is_dir():
            return loc, root / loc / eid
    folder = archived_episode_dir(root, bid, eid)
    return (ARCHIVE, folder) if folder.is_dir() else None


def unfinished(root: Path, bid: str) -> list[str]:
    """Why `bid` cannot be archived now (empty when it can): episodes still queued, an intake half done."""
    batch_folder = root / "batches" / bid
    if not batch_folder.is_dir():
        return [] if archived_batch_dir(root, bid).is_dir() else [f"no batch {bid!r}"]
    if (batch_folder / EPISODES).is_dir():
        return [f"batch {bid} is still being taken in"]
    try:
        eids = _episode_ids(batch_folder, bid)
    except NotArchivable as exc:  # a reason, not an exception: the daemon asks this between its moves
        return [str(exc)]
    out = []
    for eid in eids:
        found = _where(root, bid, eid)
        if found is not None and found[0] not in (*FINAL, ARCHIVE):
            out.append(f"{eid} is still in {found[0]}/")
    return out


def archive_batch(root: Path, bid: str) -> list[str]:
    """Move a finished batch under archive/<bid>/; returns the episodes moved by this call.

    Resumable: after a crash at any point, calling it again moves what is left; on an archived batch it
    does nothing. Raises NotArchivable when the batch is unknown or has episodes still queued.
    """
    source = root / "batches" / bid
    target = archived_batch_dir(root, bid)
    if not source.is_dir():
        if target.is_dir():
            return []  # committed earlier
        raise NotArchivable(f"no batch {bid!r} in {root}")
    problems = unfinished(root, bid)
    if problems:
        raise NotArchivable(f"batch {bid} is not finished: " + "; ".join(problems[:5]))
    episodes_dir = archive_dir(root, bid) / EPISODES
    for d in (root / ARCHIVE, archive_dir(root, bid), episodes_dir):
        if not d.is_dir():
            d.mkdir(mode=DIR_MODE)
            fsio.fsync_dir(d.parent)
    moved = []
    for eid in _episode_ids(source, bid):
        found = _where(root, bid, eid)
        if found is None or found[0] == ARCHIVE:
            continue  # moved before a crash (or removed by hand): nothing left to do for it
        loc, folder = found
        fsio.crashpoint(f"archive {eid} {loc}->archive")  # test hook: the crash sweep stops here
        os.rename(folder, episodes_dir / eid)
        fsio.fsync_dir(episodes_dir)
        fsio.fsync_dir(folder.parent)
        moved.append(eid)
    fsio.crashpoint(f"archive batch {bid}")  # test hook; the commit point
    os.rename(source, target)
    fsio.fsync_dir(target.parent)
    fsio.fsync_dir(source.parent)
    logger.bind(batch=bid).info("archived batch {} ({} episodes moved now)", bid, len(moved))
    return moved


def finished_at(root: Path, bid: str) -> float | None:
    """When the batch's last episode finished (from the episode manifests), or None if unknown."""
    latest: float | None = None
    for eid in _episode_ids(root / "batches" / bid, bid):
        found = _where(root, bid, eid)
        if found is None:
            continue
        try:
            m = read_manifest(found[1])
        except (FileNotFoundError, ValueError, ValidationError):
            continue
        t = parse_time(m.finished_at) or (found[1] / MANIFEST).stat().st_mtime
        latest = t if latest is None else max(latest, t)
    return latest


def archivable(root: Path, older_than_days: float | None, now: float | None = None) -> list[str]:
    """Finished batches of batches/ (and half-archived ones), finished at least `older_than_days` ago."""
    now = time.time() if now is None else now
    out = []
    for bid in _listdir(root / "batches"):
        if not (root / "batches" / bid / "batch.json").exists():
            continue
        try:
            if unfinished(root, bid):
                continue
            if older_than_days is not None:
                done_at = finished_at(root, bid)
                if done_at is None or now - done_at < older_than_days * DAY_S:
                    continue
        except NotArchivable:
            continue
        out.append(bid)
    return out
