"""Read-only view of a spool for `podspool status`: derived from the folders, like the daemon's own.

The batches come from the episode folders, archived ones included (daemon/publishing/archive.py); the `runtime` section (queues, busy workers, memory,
rate-limit headroom) comes from `state/runtime.json`, which only a running daemon keeps fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podspool.daemon.cli import diskuse
from podspool.daemon.cli.plan import eta
from podspool.daemon.cli.preview import inbox_preview, render_queued
from podspool.daemon.config import Config
from podspool.daemon.core.batch_views import Tally, derive
from podspool.daemon.core.dashboard import render_runtime, render_text
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.observers.logs import escape_controls
from podspool.daemon.observers.runtime import read_runtime
from podspool.daemon.publishing import archive
from podspool.daemon.spool import Spool


def collect(root: Path, only: str | None = None, cfg: Config | None = None) -> dict[str, Any]:
    """Every batch of the spool (none is fine: a fresh spool), and with `cfg` the inbox's waiting
    manifests and an ETA from the plan's model refined by what each batch has measured."""
    sp = Spool(root)
    # keyed by episode id: an episode archived while we read is seen in done/ and in the archive, once
    by_batch: dict[str, dict[str, tuple[str, EpisodeManifest]]] = {}
    found: list[tuple[str, Path]] = [(loc.location, loc.folder) for loc in sp.scan()]
    # an archived episode counts where it finished: done, or failed
    found += [("archive", a.folder) for a in archive.archived_episodes(root)]
    for location, folder in found:
        try:
            m = sp.read_manifest(folder)
        except (FileNotFoundError, ValueError):
            continue
        if only and m.batch_id != only:
            continue
        if location == "archive":
            location = "done" if m.status == "done" else "failed"
        by_batch.setdefault(m.batch_id, {}).setdefault(m.session_id, (location, m))
    runtime = read_runtime(root)
    batches = []
    live = sp.batch_ids()
    archived = [b for b in archive.archived_batch_ids(root) if b not in live]
    for bid in live + archived:
        if only and bid != only:
            continue
        # a batch archived while we read has moved: its session is then in the archive
        meta = (sp.read_session(bid) if bid in live else {}) or archive.read_archived_session(root, bid)
        episodes = list(by_batch.get(bid, {}).values())
        # session.json knows which episodes a live daemon is running; the manifests alone do not
        running = {r["episode_id"] for r in meta.get("episodes", []) if r.get("running")} if runtime else set()
        # session.json is up to a second old: a folder already in done/ or failed/ is not running
        running -= {m.session_id for loc, m in episodes if loc in ("done", "failed")}
        session = derive(meta, Tally.of(episodes), episodes, running=running,
                         checkpoints=meta.get("checkpoints", []))
        session["archived"] = bid in archived
        if cfg is not None and session["state"] == "running":
            session.update(eta(episodes, meta.get("strategy"), cfg) or {})
        batches.append(session)
    batches.sort(key=lambda s: (-(s.get("priority") or 0), s.get("seq") or 0))
    out = {"spool": str(root), "batches": batches, "runtime": runtime, "disk": diskuse.usage(root)}
    if cfg is not None:
        out["queued"] = [q for q in inbox_preview(root, cfg) if not only or q.get("batch_id") == only]
    return out


def render(data: dict[str, Any]) -> str:
    """The terminal view. Every text in it came from the spool (inbox names, manifests' fields): control
    characters are escaped first, so none can forge a line or drive the terminal."""
    data = _escaped(data)
    parts = [render_text(s) for s in data["batches"]]
    if data.get("queued"):
        parts.append(render_queued(data["queued"]))
    if not parts:
        parts = [f"no batches in {data['spool']}, and nothing waiting in its inbox "
                 "(`podspool submit FILE` places one)\n"]
    parts.append(render_runtime(data.get("runtime")))
    if data.get("disk"):
        parts.append(diskuse.render(data["disk"]))
    return "\n".join(parts)


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    return value
