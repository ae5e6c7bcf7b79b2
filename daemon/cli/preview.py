"""What the daemon will do with the manifests waiting in the inbox, for `podspool status`.

Each one is checked exactly as intake will check it (the daemon's source roots, the configured
providers), so a fresh spool shows its queued batches, and their problems, before a daemon has run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podspool.daemon.cli.plan import plan_batch
from podspool.daemon.config import Config
from podspool.daemon.intake.validate import ManifestProblem, check_file, daemon_roots
from podspool.daemon.spool import Spool


def inbox_preview(root: Path, cfg: Config) -> list[dict[str, Any]]:
    sp = Spool(root)
    roots = daemon_roots(cfg.research.source_roots, root)
    out: list[dict[str, Any]] = []
    for path in sp.inbox_candidates():
        entry: dict[str, Any] = {"file": path.name}
        try:
            if not path.name.endswith(".json"):
                raise ManifestProblem([f"only *.json batch manifests are read from the inbox, not {path.name!r}"])
            m = check_file(path, cfg.limits.max_manifest_bytes, roots, research=cfg.research,
                           settings=cfg.stage_settings()).manifest
            if m.batch_id and sp.known_batch(m.batch_id):
                raise ManifestProblem([f"batch_id: {m.batch_id!r} is already known"])
        except ManifestProblem as exc:
            out.append({**entry, "valid": False, "problems": exc.problems,
                        "will": f"be rejected to rejected/{path.name}, with {path.name}.error.txt"})
            continue
        plan = plan_batch(m, cfg)
        n = plan["episodes"]
        bid = m.batch_id or "batch_<time of intake>"
        out.append({**entry, "valid": True, "batch_id": m.batch_id, "episodes": n, "strategy": plan["strategy"],
                    "priority": m.priority, "will": f"be accepted as batch {bid} with {n} episodes",
                    "plan": {k: plan[k] for k in ("calls", "cost_usd", "duration_s", "bound_by")}})
    return out


def render_queued(queued: list[dict[str, Any]]) -> str:
    if not queued:
        return ""
    lines = [f"INBOX  {len(queued)} manifest(s) waiting for the daemon"]
    for q in queued:
        lines.append(f"  {q['file']}: will {q['will']}")
        if q["valid"]:
            p = q["plan"]
            lines.append(f"    plan: about {p['duration_s']:.0f} s, ${p['cost_usd']['total']:.4f}, "
                         f"bound by {p['bound_by']} (`podspool plan` for the detail)")
        else:
            lines += [f"    - {problem}" for problem in q["problems"]]
    return "\n".join(lines) + "\n"
