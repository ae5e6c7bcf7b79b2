"""Taking a manifest from the inbox: accepted as a batch (its episode folders made in research/), or
moved to rejected/ with the reasons. Never raises for bad input; a disk error is the caller's to pause on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.intake import staging
from podspool.daemon.intake.validate import ManifestProblem, check_file, daemon_roots, episode_count_hint
from podspool.daemon.spool import Spool


def take(spool: Spool, cfg: Config, path: Path) -> tuple[str, list[int]] | None:
    """Accept or reject one inbox file. Returns (batch_id, its episode numbers) when accepted."""
    if not os.path.lexists(path):
        return None
    roots = daemon_roots(cfg.research.source_roots, spool.root)
    try:
        if not path.name.endswith(".json"):
            raise ManifestProblem([f"only *.json batch manifests are read from the inbox, not {path.name!r}"])
        # research=: a batch the configured research cannot ground is refused now, not failed after the run
        checked = check_file(path, cfg.limits.max_manifest_bytes, roots, research=cfg.research)
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
        target = spool.reject(path, exc.problems)
        logger.warning("inbox: rejected {} -> {}: {}", path.name, target.name, "; ".join(exc.problems))
        return None


def episodes_waiting(spool: Spool, cfg: Config) -> int:
    """About how many episodes the inbox's manifests hold (for sizing worker pools before `take`)."""
    return sum(episode_count_hint(p, cfg.limits.max_manifest_bytes) for p in spool.inbox_candidates())
