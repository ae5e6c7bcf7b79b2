"""Taking a manifest from the inbox: accepted as a batch (its episode folders made in research/), or
moved to rejected/ with the reasons. Never raises for bad input, nor for any error of one file: only a
full disk, a read-only file system or an exhausted quota (DISK_ERRNOS) is the caller's to pause on; any
other error (a name too long for rejected/, a file it may not read) rejects that one file with its reason."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core.lifecycle import DISK_ERRNOS  # trouble for every file: pause admission
from podspool.daemon.intake import apart, staging
from podspool.daemon.intake.limits import capped
from podspool.daemon.intake.validate import (
    Checked,
    ManifestProblem,
    check_manifest,
    episode_count_hint,
    manifest_roots,
    read_untrusted,
)
from podspool.daemon.spool import Spool

SHORT_NAME = 100  # characters of a too-long name kept when its file is moved to rejected/
_unmovable: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) of a file that could not be moved


def take(spool: Spool, cfg: Config, path: Path) -> tuple[str, list[int]] | None:
    """Accept or reject one inbox file. Returns (batch_id, its episode numbers) when accepted."""
    if not os.path.lexists(path) or _still_unmovable(path):
        return None
    try:
        return _take(spool, cfg, path)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise
        _reject(spool, path, [f"could not be taken: {exc.strerror or exc}"])
        return None


def _take(spool: Spool, cfg: Config, path: Path) -> tuple[str, list[int]] | None:
    try:
        if not path.name.endswith(".json"):
            raise ManifestProblem([f"only *.json batch manifests are read from the inbox, not {path.name!r}"])
        # research=: a batch the configured research cannot ground is refused now, not failed after the run
        # read once: the grants that apply are those made for these very bytes (validate.py)
        raw = read_untrusted(path, cfg.limits.max_manifest_bytes)
        roots = manifest_roots(cfg.research.source_roots, spool.root, raw)
        checked = _checked(raw, roots, research=cfg.research,
                           settings=cfg.stage_settings())
        manifest = checked.manifest
        if manifest.batch_id and spool.known_batch(manifest.batch_id):
            if spool.is_leftover_of_accepted(path, checked.raw, manifest.batch_id):
                logger.info("inbox: {} was already accepted as {}; removing it", path.name, manifest.batch_id)
                spool.remove_inbox_file(path)
                return None
            raise ManifestProblem([f"batch_id: {manifest.batch_id!r} is already known"])
        if manifest.batch_id is None and spool.is_leftover_of_accepted(path, checked.raw, None):
            spool.remove_inbox_file(path)
            return None
        return staging.accept(spool, path, manifest, checked.raw, time.time())
    except ManifestProblem as exc:
        _reject(spool, path, exc.problems)
        return None


def _checked(raw: bytes, roots: list[Path], **checks: Any) -> Checked:
    """Checked here, or apart in a child process when it may cite a document, whose parse has no bound
    of its own (apart.py)."""
    check = apart.check_apart if apart.names_documents(raw) else check_manifest
    return Checked(manifest=check(raw, roots, **checks), raw=raw)


def _reject(spool: Spool, path: Path, problems: list[str]) -> None:
    """Move `path` to rejected/ with its (capped) problems; a name rejected/ cannot hold (ENAMETOOLONG:
    its error file's temp name is longer than the file system allows) goes there under a short one."""
    problems = capped(problems)
    try:
        try:
            target = spool.reject(path, problems)
        except OSError as exc:
            if exc.errno in DISK_ERRNOS or not os.path.lexists(path):
                raise
            digest = hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
            short = path.with_name(f"{path.name[:SHORT_NAME]}...{digest}.json")
            os.rename(path, short)
            target = spool.reject(short, [*problems, f"its name ({len(path.name)} characters) was too long to "
                                                     f"keep: {exc.strerror or exc}; it was {path.name!r}"])
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise
        st = os.lstat(path) if os.path.lexists(path) else None
        if st is not None:
            _unmovable[path.name] = (st.st_size, st.st_mtime_ns)
        logger.error("inbox: could not reject {!r} ({}); it stays in the inbox and is not read again until "
                     "it changes: {}", path.name, exc.strerror or exc, "; ".join(problems))
        return
    logger.warning("inbox: rejected {!r} -> {!r}: {}", path.name, target.name, "; ".join(problems))


def _still_unmovable(path: Path) -> bool:
    seen = _unmovable.get(path.name)
    if seen is None:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == seen


def episodes_waiting(spool: Spool, cfg: Config) -> int:
    """About how many episodes the inbox's manifests hold (for sizing worker pools before `take`)."""
    return sum(episode_count_hint(p, cfg.limits.max_manifest_bytes) for p in spool.inbox_candidates())
