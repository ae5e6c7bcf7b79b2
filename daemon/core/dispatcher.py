"""Dispatch: which waiting episodes start now, handed to the executor; long-running phases marked on disk.

Every decision is O(1) or O(log n): batches are walked in admission order (few), each stage's ready
heap of a batch is popped, and budgets, admission and running counts are kept incrementally.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core import lifecycle
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.commit import CommitGroup
from podspool.daemon.core.disk import DiskPause
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.core.recorder import write_manifest
from podspool.daemon.executors.protocol import Executor, StageTask
from podspool.daemon.models import State, utcnow
from podspool.daemon.spool import Spool
from podspool.stages.base import STAGE_NAMES, EpisodeInput, StageName
from podspool.stages.show import resolve

MARK_RUNNING_AFTER_S = 0.5  # a phase running this long is marked in_progress in its manifest


class Dispatcher:
    """Owns what starts: the task sequence, and the running phases not yet marked in their manifests."""

    def __init__(self, spool: Spool, config: Callable[[], Config], episodes: EpisodeBook, batches: BatchBook,
                 executor: Executor, disk: DiskPause, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.spool, self.config, self.episodes, self.batches = spool, config, episodes, batches
        self.executor, self.disk = executor, disk
        self.clock = clock
        self.task_seq = 0
        # running phases whose manifest does not say so yet: episode id -> (started, stage), oldest first
        self.unmarked: dict[str, tuple[float, StageName]] = {}

    def run(self) -> None:
        """Start what may start now, later stages first, batches in admission order.

        A start writes nothing: the attempt it counts is written with the phase's result (a crash
        meanwhile does not count one either, lifecycle.begin). A phase still running after
        MARK_RUNNING_AFTER_S is marked in_progress in its manifest by `mark_running`, so an operator
        reading the folder sees it; one that finishes sooner costs one manifest write, not two.
        """
        if self.disk.active():
            return
        now = self.clock()
        cfg = self.config()
        admitted = len(self.episodes.admitted)
        cap = cfg.limits.max_sessions_in_memory
        paused = self.executor.memory.paused
        for stage in reversed(STAGE_NAMES):  # later stages first: finish episodes before starting new ones
            free = self.executor.free_slots(stage)
            for bid in list(self.batches.order):
                if free <= 0:
                    break
                b = self.batches[bid]
                if not self.episodes.has_waiting(stage, bid):
                    continue
                if b.over_budget():
                    self._log_held(bid)
                    continue
                size = self.executor.size(stage)
                limit = lifecycle.batch_stage_cap(b.meta.get("strategy"), stage, size, cfg.concurrency_explicit)
                # Below the pool's size a strategy's cap counts the batch's running tasks; at the pool's
                # size the free slots already bound it (and a worker past its call may overlap the next).
                capped = limit < size
                while free > 0 and (not capped or self.episodes.running(stage, bid) < limit):
                    ep = self.episodes.pop_ready(stage, bid, now)
                    if ep is None:
                        break
                    try:
                        # changed in place: a start is not committed (a result is, on a fork: results.py)
                        m = ep.manifest
                    except OSError as exc:  # its folder was damaged behind our back: leave it to recovery
                        logger.bind(batch=bid, episode=ep.episode_id, stage=stage).error(
                            "cannot start {}: {}; it stays in {} for the next start's recovery",
                            ep.episode_id, exc, stage)
                        continue
                    if m.status != State.IN_PROGRESS:
                        if paused or admitted >= cap:
                            self.episodes.push_back(ep)
                            break
                        admitted += 1
                    lifecycle.begin(m, stage, utcnow(), self.clock())
                    self._submit(ep, stage, cfg)
                    free -= 1

    def mark_running(self, group: CommitGroup) -> None:
        """Add to `group` the manifests of phases running longer than MARK_RUNNING_AFTER_S (oldest first,
        so this stops at the first younger one: O(marks), not O(running)), and log their start: a phase
        that ends sooner is told by its one "done" or "failed" line (with its attempt and duration)."""
        deadline = self.clock() - MARK_RUNNING_AFTER_S
        while self.unmarked:
            eid, (started, stage) = next(iter(self.unmarked.items()))
            if started > deadline:
                return
            del self.unmarked[eid]
            ep = self.episodes.get(eid)
            if ep is None or not ep.running or ep.location != stage:
                continue
            logger.bind(batch=ep.manifest.batch_id, episode=eid, stage=stage).info(
                "{} started {:.1f}s ago (attempt {})", stage, self.clock() - started, ep.manifest.attempts)
            try:
                write_manifest(group, self.spool, stage, ep.manifest)
            except OSError as exc:  # only a view for operators: the phase runs on
                self.disk.trouble(f"marking {eid} in progress", exc)
                return

    def result_came(self, eid: str) -> None:
        """Its result says more than a mark would: it needs none."""
        self.unmarked.pop(eid, None)

    def next_mark_in(self) -> float | None:
        """Seconds until `mark_running` has something to do (None: nothing running unmarked)."""
        if not self.unmarked:
            return None
        started, _ = next(iter(self.unmarked.values()))
        return max(0.0, started + MARK_RUNNING_AFTER_S - self.clock())

    def _submit(self, ep: Episode, stage: StageName, cfg: Config) -> None:
        m = ep.manifest
        b = self.batches[m.batch_id]
        b.meta.setdefault("start_time", utcnow())
        b.dirty = True
        self.task_seq += 1
        episode = EpisodeInput(episode_id=m.session_id, batch_id=m.batch_id, number=m.episode_number,
                               topic=m.topic, title=m.title, notes=m.notes, sources=tuple(m.sources),
                               attempt=m.attempts, feedback=tuple(m.review.notes) if m.review else (),
                               show=resolve(cfg.production.show_defaults(), m.show,
                                                                hosts=cfg.production.hosts))
        task = StageTask(self.task_seq, stage, episode, str(self.spool.folder(stage, m.session_id)))
        self.episodes.started(ep)
        if not self.executor.submit(task):
            self.episodes.stopped(ep, stage)
            self.episodes.requeue(ep)  # begun in memory, waiting again: the next start counts nothing
            return
        self.unmarked.pop(m.session_id, None)
        self.unmarked[m.session_id] = (self.clock(), stage)

    def _log_held(self, bid: str) -> None:
        b = self.batches[bid]
        if not b.held_logged:
            b.held_logged = b.dirty = True
            logger.bind(batch=bid).warning(
                "batch {} reached its budget of ${:.2f}: its waiting episodes are held "
                "(raise it with: podspool retry --batch {} --budget USD)", bid, float(b.meta["budget_usd"]), bid)
