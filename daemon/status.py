"""Read-only view of a spool for `podspool status`: derived from the folders, like the daemon's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.dashboard import render_text
from daemon.models import EpisodeManifest
from daemon.session import derive
from daemon.spool import Spool


def collect(root: Path, only: str | None = None) -> dict[str, Any]:
    sp = Spool(root)
    by_batch: dict[str, list[tuple[str, EpisodeManifest]]] = {}
    for loc in sp.scan():
        try:
            m = sp.read_manifest(loc.folder)
        except (FileNotFoundError, ValueError):
            continue
        if only and m.batch_id != only:
            continue
        by_batch.setdefault(m.batch_id, []).append((loc.location, m))
    batches = []
    for bid in sp.batch_ids():
        if only and bid != only:
            continue
        meta = sp.read_session(bid)
        session = derive(meta, by_batch.get(bid, []), checkpoints=meta.get("checkpoints", []))
        batches.append(session)
    batches.sort(key=lambda s: (-(s.get("priority") or 0), s.get("seq") or 0))
    return {"spool": str(root), "batches": batches}


def render(data: dict[str, Any]) -> str:
    if not data["batches"]:
        return f"no batches in {data['spool']}\n"
    return "\n".join(render_text(s) for s in data["batches"])
