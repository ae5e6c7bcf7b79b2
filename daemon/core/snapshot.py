"""A plain view of a running supervisor, for dashboards, metrics and systemd's STATUS line.

Built on demand (hooks call it at most every second or so), from the indexes: what is queued and in
flight, and the open batches with the episodes they finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from podspool.daemon.ratelimit.view import headroom
from podspool.daemon.spool import FINAL
from podspool.stages.base import STAGE_NAMES

if TYPE_CHECKING:
    from podspool.daemon.core.supervisor import Supervisor


def finished_counts(sup: Supervisor) -> dict[str, int]:
    """Episode folders in done/ and failed/, counted once (start-up, after archiving); the supervisor
    keeps the counts from there, so the once-a-second STATUS line does not list months of work."""
    return {loc: sum(1 for _ in sup.spool.scan_location(loc)) for loc in FINAL}


def locations(sup: Supervisor) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STAGE_NAMES, 0)
    for ep in sup.episodes:
        counts[ep.location] = counts.get(ep.location, 0) + 1
    counts.update(sup.finished)
    return counts


def counts_line(sup: Supervisor) -> str:
    c = locations(sup)
    busy = sum(1 for _ in sup.executor.in_flight())
    return (f"done {c.get('done', 0)}, failed {c.get('failed', 0)}, research {c.get('research', 0)}, "
            f"production {c.get('production', 0)}, audio {c.get('audio', 0)}, busy workers {busy}")


def snapshot(sup: Supervisor) -> dict[str, Any]:
    stages = {}
    for stage in STAGE_NAMES:
        view = sup.executor.stage_view(stage)
        stages[stage] = {"queue": max(0, sup.episodes.waiting_by_stage[stage]), **view}
    memory = sup.executor.memory
    # the episodes that have spent or run something; finished ones reach the metrics through their hooks
    started = [ep for ep in sup.episodes if ep.loaded and ep.manifest.attempts > 0]
    episodes = [ep.manifest for ep in started]
    rates = sup.cfg.rate_limits.parsed()
    now = time.time()
    return {
        "time": now,
        "pid": os.getpid(),
        "spool": str(sup.spool.root),
        "stopping": sup.stopping,
        "admitted": len(sup.episodes.in_progress),
        "max_sessions_in_memory": sup.cfg.limits.max_sessions_in_memory,
        "memory": {"rss_bytes": memory.rss, "soft_mb": sup.cfg.limits.memory_soft_mb,
                   "hard_mb": sup.cfg.limits.memory_hard_mb, "paused": memory.paused},
        "rate_limits": rates,
        # the executor's own view where its windows are not the spool's files (Dramatiq: Redis)
        "rate_headroom": headroom(sup.spool.state / "ratelimit", rates, now, getattr(sup.executor, "rate_usage", None)),
        "api_calls": dict(sup.api_calls),
        "stages": stages,
        "executor": sup.cfg.executor.kind,
        "workers": [asdict(w) for w in sup.executor.workers()],  # remote ones: from their heartbeats
        "locations": locations(sup),
        "batches": [sup.batches_session(bid) for bid in sup.batches.order],
        "episodes": episodes,
        "where": {ep.episode_id: ep.location for ep in started},
    }
