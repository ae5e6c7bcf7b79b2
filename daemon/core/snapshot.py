"""A plain view of the running loop, for dashboards, metrics and systemd's STATUS line.

Built on demand (hooks call it at most every second or so), from the indexes: what is queued and in
flight, and the open batches with the episodes they finished.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from podspool.daemon.config import Config
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.executors.protocol import Executor
from podspool.daemon.ratelimit.view import headroom
from podspool.daemon.spool import Spool
from podspool.stages.base import STAGE_NAMES


@dataclass
class LoopView:
    """What a view of the running loop reads: the owners of its state, never the loop itself."""

    spool: Spool
    episodes: EpisodeBook
    batches: BatchBook
    executor: Executor
    api_calls: Counter[str]


def locations(v: LoopView) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STAGE_NAMES, 0)
    for ep in v.episodes:
        counts[ep.location] = counts.get(ep.location, 0) + 1
    counts.update(v.batches.finished)
    return counts


def counts_line(v: LoopView) -> str:
    c = locations(v)
    busy = sum(1 for _ in v.executor.in_flight())
    return (f"done {c.get('done', 0)}, failed {c.get('failed', 0)}, research {c.get('research', 0)}, "
            f"production {c.get('production', 0)}, audio {c.get('audio', 0)}, review {c.get('review', 0)}, "
            f"busy workers {busy}")


def snapshot(v: LoopView, cfg: Config, stopping: bool) -> dict[str, Any]:
    stages = {}
    for stage in STAGE_NAMES:
        view = v.executor.stage_view(stage)
        stages[stage] = {"queue": max(0, v.episodes.waiting_by_stage[stage]), **view}
    memory = v.executor.memory
    # the episodes that have spent or run something; finished ones reach the metrics through their hooks
    started = [ep for ep in v.episodes if ep.loaded and ep.manifest.attempts > 0]
    episodes = [ep.manifest for ep in started]
    rates = cfg.rate_limits.parsed()
    now = time.time()
    return {
        "time": now,
        "pid": os.getpid(),
        "spool": str(v.spool.root),
        "stopping": stopping,
        "admitted": len(v.episodes.admitted),
        "max_sessions_in_memory": cfg.limits.max_sessions_in_memory,
        "memory": {"rss_bytes": memory.rss, "soft_mb": cfg.limits.memory_soft_mb,
                   "hard_mb": cfg.limits.memory_hard_mb, "paused": memory.paused},
        "rate_limits": rates,
        # the executor's own view where its windows are not the spool's files (Dramatiq: Redis)
        "rate_headroom": headroom(v.spool.state / "ratelimit", rates, now, v.executor.rate_usage),
        "api_calls": dict(v.api_calls),
        "stages": stages,
        "executor": cfg.executor.kind,
        "workers": [asdict(w) for w in v.executor.workers()],  # remote ones: from their heartbeats
        "locations": locations(v),
        "batches": [v.batches.session(bid) for bid in v.batches.order],
        "episodes": episodes,
        "where": {ep.episode_id: ep.location for ep in started},
    }
