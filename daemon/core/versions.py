"""The versions a redo keeps: what the redone stages made moves to <episode>/versions/<n>/, so the
published files it replaces stay beside the new ones until the batch is archived."""

from __future__ import annotations

import os
from pathlib import Path

from podspool.daemon.models import EpisodeManifest
from podspool.daemon.spool import MANIFEST
from podspool.stages import artifacts, fsio
from podspool.stages.base import STAGE_NAMES

VERSIONS = "versions"
# what a redo from a stage keeps: the artifacts of the stages before it (the rest moves to the version)
KEPT_BEFORE: dict[str, frozenset[str]] = {
    "research": frozenset(),
    "production": frozenset({artifacts.RESEARCH_JSON}),
    "audio": frozenset({artifacts.RESEARCH_JSON, artifacts.SCRIPT_MD, artifacts.QUALITY_JSON}),
}
ALWAYS_KEPT = frozenset({MANIFEST, "episode.log", VERSIONS})


def finish_redo(folder: Path, m: EpisodeManifest) -> None:
    """Move what the stages from the redone one on made into versions/<redo_rounds>/; again after a crash
    (each move is a rename, and what moved already is not there to move)."""
    stage = m.current_stage() or STAGE_NAMES[-1]
    keep = ALWAYS_KEPT | KEPT_BEFORE[stage]
    version = folder / VERSIONS / str(m.redo_rounds)
    moved = False
    for entry in sorted(os.listdir(folder)):
        if entry in keep or entry.startswith(fsio.TEMP_PREFIX):
            continue
        version.mkdir(parents=True, exist_ok=True)
        os.replace(folder / entry, version / entry)
        moved = True
    if moved:
        fsio.fsync_dir(version)
        fsio.fsync_dir(folder)
