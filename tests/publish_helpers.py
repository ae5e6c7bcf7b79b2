"""A spool with a finished batch (sim providers, real daemon), for the feed and archive tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from podspool_helpers import cli, episodes_in, make_spool, write_manifest

BATCH = "pub"
TOPICS = ["alpha", "beta"]
EIDS = [f"ep_{i:03d}_{BATCH}" for i in range(1, len(TOPICS) + 1)]
BASE = "https://pod.example.org/show"
# a show that passes `podspool feed --check`: an owner to verify by, a listed category, a public URL
SHOW = f"""
[publish]
title = "Deep Questions"
author = "Ada Host"
description = "Two hosts, one question."
language = "en-gb"
explicit = false
category = "Science"
owner_email = "ada@example.org"
base_url = "{BASE}"
"""


def finished_spool(root: Path) -> Path:
    spool = make_spool(root, SHOW, latency_ms=0, publish=True)
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
