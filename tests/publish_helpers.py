"""A spool with a finished batch (sim providers, real daemon), for the feed and archive tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from podspool_helpers import cli, episodes_in, make_spool, write_manifest

BATCH = "pub"
TOPICS = ["alpha", "beta"]
EIDS = [f"ep_{i:03d}_{BATCH}" for i in range(1, len(TOPICS) + 1)]


def finished_spool(root: Path) -> Path:
    spool = make_spool(root, latency_ms=0, publish=True)
    write_manifest(spool / "inbox" / f"{BATCH}.json", {"batch_id": BATCH, "topics": TOPICS})
    r = cli("run", "--once", "--spool", str(spool))
    assert r.returncode == 0, r.stderr[-2000:]
    assert episodes_in(spool, "done") == EIDS
    return spool


def copy_spool(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".tmp-*"))
