"""Guards the supervisor runs every loop turn: memory (psutil) and per-stage time limits.

They only decide and signal: a worker over its memory limit is marked for recycling after its task,
a worker past its stage's time limit gets SIGTERM and then SIGKILL. The supervisor's sentinel watch
turns a stopped worker into a failed attempt, like any other death.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import psutil
from loguru import logger
from podspool.daemon.config import Config, Limits
from podspool.daemon.executors.local.workers import Worker
from podspool.stages.base import StageName
from podspool.stages.settings import scaled_time_limit

KILL_AFTER_TERM_S = 5.0
MEMORY_CHECK_EVERY_S = 2.0
MB = 1024 * 1024


class MemoryGuard:
    """RSS of the supervisor plus its workers against `memory_soft_mb` (admission pauses above it),
    and each worker's RSS against `memory_hard_mb` (recycled after its task)."""

    def __init__(self, every_s: float = MEMORY_CHECK_EVERY_S) -> None:
        self.every_s = every_s
        self.rss = 0
        self.paused = False
        self._last = float("-inf")

    def check(self, workers: Iterable[Worker], limits: Limits, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last < self.every_s:
            return
        self._last = now
        total = _rss(None)
        for w in workers:
            pid = w.process.pid if w.process is not None else None
            if pid is None:
                continue
            rss = _rss(pid)
            total += rss
            if rss > limits.memory_hard_mb * MB and not w.recycle:
                w.recycle = True
                w.meta["recycle_why"] = f"{rss // MB} MB over memory_hard_mb"
                logger.warning("{} worker {} uses {} MB (hard limit {} MB): recycled after its task",
                               w.stage, pid, rss // MB, limits.memory_hard_mb)
        self.rss = total
        paused = total > limits.memory_soft_mb * MB
        if paused != self.paused:
            self.paused = paused
            logger.warning("memory {} MB {} the soft limit of {} MB: admission {}", total // MB,
                           "over" if paused else "back under", limits.memory_soft_mb,
                           "paused" if paused else "resumed")


def _rss(pid: int | None) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def enforce_time_limits(pools: Mapping[StageName, list[Worker]], cfg: Config, now: float | None = None) -> None:
    """SIGTERM a worker whose oldest task is past its stage's time limit; SIGKILL it 5 s later."""
    now = time.monotonic() if now is None else now
    for stage, ws in pools.items():
        for w in ws:
            if not w.tasks or w.process is None:
                continue
            oldest = min(w.tasks.values(), key=lambda t: t.started)
            limit = scaled_time_limit(float(getattr(cfg, stage).time_limit_s), oldest.episode.show.minutes)
            if w.term_sent_at is None and now - oldest.started > limit:
                w.term_sent_at = now
                logger.bind(batch=oldest.episode.batch_id, episode=oldest.episode_id, stage=stage).error(
                    "{} exceeded its time limit of {}s: stopping its worker", stage, limit)
                w.process.terminate()
            elif w.term_sent_at is not None and now - w.term_sent_at > KILL_AFTER_TERM_S:
                w.process.kill()
