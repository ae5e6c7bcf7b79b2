"""Results: each outcome is applied to a copy of its manifest, and the tick's copies and moves are made
durable together (group commit). Once renamed into place, a result becomes what the supervisor holds
(`advance`: its next stage may start); once durable, it is reported (`report`: log lines, hooks,
finished episodes, batch files).

A result the disk could not record is kept and applied afresh once the disk recovers, so nothing of
it is counted twice.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core import lifecycle
from podspool.daemon.core.batches import CHECKPOINTS, BatchBook
from podspool.daemon.core.commit import CommitGroup, GroupFailed, SparePool
from podspool.daemon.core.disk import DiskPause
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.core.review import predicted_speech_usd
from podspool.daemon.executors.protocol import Executor, TaskOutcome
from podspool.daemon.models import EpisodeManifest, ReviewRecord, utcnow
from podspool.daemon.observers.hooks import Observers
from podspool.daemon.observers.logs import episode_finished
from podspool.daemon.spool import MANIFEST, Spool, manifest_bytes
from podspool.stages import artifacts, fsio
from podspool.stages.base import StageResult
from podspool.stages.show import resolve

# a result applied to a copy of its manifest, waiting for the group commit
Planned = tuple[TaskOutcome, Episode, EpisodeManifest, lifecycle.Transition]


def write_manifest(group: CommitGroup, spool: Spool, location: str, m: EpisodeManifest) -> None:
    """Add an episode's manifest, as it is now, to `group`."""
    m.updated_at = utcnow()
    group.write(spool.folder(location, m.session_id) / MANIFEST, manifest_bytes(m), m.session_id, replaces=True)


def made(details: dict[str, object]) -> str:
    """What a phase made, for its "done" line: the script's words, the audio's length. (The audio stage
    logged them on a line of their own: one record more per episode, in its worker and again in the
    supervisor, which copies a worker's lines into the log files.)"""
    seconds, words = details.get("audio_seconds"), details.get("words")
    return (f", {seconds:.1f} s of audio" if isinstance(seconds, (int, float)) else "") + \
        (f", {words} words" if isinstance(words, int) else "")


class Recorder:
    """Owns the results on their way to disk: those held through disk trouble, the last tick's group
    until it is settled, and the next group commit (checkpoints join it)."""

    def __init__(self, spool: Spool, config: Callable[[], Config], episodes: EpisodeBook, batches: BatchBook,
                 executor: Executor, disk: DiskPause, observers: Observers, *,
                 result_came: Callable[[str], None], retire: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.spool, self.config, self.episodes, self.batches = spool, config, episodes, batches
        self.executor, self.disk, self.observers = executor, disk, observers
        self.result_came = result_came  # the dispatcher's: a result says more than a running mark
        self.retire = retire  # what a finished episode gives up (retention's)
        self.clock, self.wall = clock, wall
        self.held: list[TaskOutcome] = []  # results a full disk could not record yet
        self.replayed: set[int] = set()  # task ids of held results, in this tick's take
        # the last tick's group, renamed but not yet durable, and its results, reported once it is
        self.unsettled: tuple[CommitGroup, list[Planned]] | None = None
        self.spares = SparePool(spool.state / "spares")  # manifests rewritten without an inode's churn
        self.next_group = self.new_group()  # the next commit: checkpoints that fell due join it
        self.api_calls: Counter[str] = Counter()  # "api:outcome" -> attempts, since this daemon started

    def new_group(self) -> CommitGroup:
        return CommitGroup(self.spool.root, self.spares)

    @property
    def busy(self) -> bool:
        """Results held or not yet reported: a --once run is not finished."""
        return bool(self.held or self.unsettled)

    def take(self) -> list[TaskOutcome]:
        """The outcomes that arrived, with those a full disk held back; none while the disk is paused."""
        if self.disk.active():  # read once: a pause ending between two reads lost results
            self.held += self.executor.poll()
            return []
        outcomes = self.held + self.executor.poll()
        self.replayed = {o.task_id for o in self.held}
        self.held = []
        return outcomes

    def record(self, outcomes: list[TaskOutcome]) -> None:
        """Apply results to copies of their manifests, make them durable together, then publish them."""
        group = self.new_group()
        planned = self.plan(outcomes, group)
        self.publish(planned, self.commit(group, "saving results"))

    def begin_tick(self) -> CommitGroup:
        """This tick's group (with the checkpoints that fell due since the last); the next starts empty."""
        group, self.next_group = self.next_group, self.new_group()
        return group

    def commit(self, group: CommitGroup, what: str) -> set[object]:
        """A whole commit; returns the owners whose changes did not happen (empty: all did)."""
        try:
            group.commit()
        except GroupFailed as exc:
            return self.saving_failed(what, exc)
        return set()

    def commit_next(self) -> None:
        """Stopping: the checkpoints that fell due since the last tick."""
        self.commit(self.next_group, "saving checkpoints")

    def saving_failed(self, what: str, exc: GroupFailed) -> set[object]:
        """A commit failed: the disk's trouble is logged; returns the owners whose changes did not happen."""
        self.disk.trouble(what, exc.cause)
        for owner in exc.failed:
            if isinstance(owner, tuple) and owner[0] == CHECKPOINTS:
                self.batches.checkpoints_lost(owner[1])
        return exc.failed

    def plan(self, outcomes: list[TaskOutcome], group: CommitGroup) -> list[Planned]:
        """Each result applied to a copy of its manifest, its writes and moves added to `group`."""
        planned: list[Planned] = []
        for out in outcomes:
            self.api_calls.update(out.result.api_calls)
            ep = self.episodes.get(out.episode_id)
            if ep is None or not ep.running or ep.location != out.stage:
                logger.warning("dropping a result for {} ({}): it is no longer running there", out.episode_id,
                               out.stage)
                for tmp, _final in out.files:
                    fsio.unlink_quietly(tmp)
                continue
            self.result_came(out.episode_id)
            if out.task_id in self.replayed and not all(os.path.exists(tmp) for tmp, _final in out.files):
                # kept through disk trouble, and its files went meanwhile: what it made is lost, so run it again
                out = replace(out, files=(), result=StageResult(
                    ok=False, error="its files were lost before they could be saved", cost_usd=out.result.cost_usd))
            m = ep.manifest.fork()
            limits = self.config().limits
            delay = lifecycle.retry_delay(m.attempts, limits.retry_backoff_s, limits.retry_backoff_max_s)
            t = lifecycle.conclude(m, out.stage, out.result, max_retries=limits.max_retries, now_iso=utcnow(),
                                   now_mono=self.clock(), now_unix=self.wall(), retry_delay_s=delay,
                                   review=self._review_of(out, m))
            group.adopt(out.files, ep.episode_id)  # renamed before the manifest that says they exist
            try:
                write_manifest(group, self.spool, out.stage, m)
            except OSError as exc:
                group.retract(ep.episode_id)
                self.held.append(out)
                self.disk.trouble(f"saving the result of {out.episode_id}", exc)
                continue
            b = self.batches.by_id.get(m.batch_id)
            if b is not None:
                b.pending_usd += out.result.cost_usd  # a dispatch before the commit must see it spent
            if t.moves:
                group.move(self.spool.folder(out.stage, ep.episode_id), self.spool.folder(t.target, ep.episode_id),
                           f"move {ep.episode_id} {out.stage}->{t.target}", ep.episode_id)
            planned.append((out, ep, m, t))
        return planned

    def _review_of(self, out: TaskOutcome, m: EpisodeManifest) -> ReviewRecord | None:
        """A written script whose show asks for review waits for a person: its hash and speech price."""
        cfg = self.config()
        if out.stage != "production" or not out.result.ok:
            return None
        if not resolve(cfg.production.show_defaults(), m.show, hosts=cfg.production.hosts).review:
            return None
        final = str(self.spool.folder(out.stage, out.episode_id) / artifacts.SCRIPT_MD)
        path = next((tmp for tmp, f in out.files if f == final), final)  # a local worker's, at its temp name
        try:
            data = fsio.read_whole(path)
        except OSError:
            data = b""
        notes = m.review.notes if m.review is not None else []
        return ReviewRecord(script_sha256=hashlib.sha256(data).hexdigest(), notes=list(notes),
                            predicted_audio_usd=predicted_speech_usd(data.decode("utf-8", "replace"), cfg))

    def save(self, planned: list[Planned], group: CommitGroup) -> list[Planned]:
        """The tick's group commit (commit.py), its renames settled by the next tick's sync.

        One syncfs makes this tick's new files durable and, with them, the last tick's renames. Then this
        tick's renames run, and what they make true is applied at once (`advance`), so the dispatcher
        hands the next stages out while the renames wait for the next sync. That is safe: a next stage's
        result is saved in a later tick, after that sync, so it can never be durable before the move it
        follows. Returns the last tick's results, durable now, for the caller to `report` (their "done"
        lines, hooks, finished episodes, batch files) once it has handed the next stages out: nothing is
        reported before it is durable, and no worker waits for a report.
        """
        last, self.unsettled = self.unsettled, None
        failed: set[object] = set()
        try:
            if group:
                group.sync()
            elif last is not None:
                last[0].settle()
        except GroupFailed as exc:  # this group is undone; the last one's renames happened all the same
            failed = self.saving_failed("saving results", exc)
        try:
            group.apply()
        except GroupFailed as exc:
            failed = self.saving_failed("saving results", exc)
        applied = self.advance(planned, failed)
        if applied or group.applied:
            if group.settled_by_any_sync:
                self.unsettled = (group, applied)
            else:  # files fsynced one by one: no later sync covers these renames, so they settle now
                self._settle(group)
                self.report(applied)
        return last[1] if last is not None else []

    def settle_last(self) -> None:
        """Settle the last tick's renames now and report its results (the loop goes idle, or stops)."""
        if self.unsettled is not None:
            (group, applied), self.unsettled = self.unsettled, None
            self._settle(group)
            self.report(applied)

    def _settle(self, group: CommitGroup) -> None:
        try:
            group.settle()
        except GroupFailed as exc:
            self.saving_failed("saving results", exc)

    def publish(self, planned: list[Planned], failed: set[object]) -> None:
        """After a whole commit: what is on disk becomes what the supervisor holds, and is reported."""
        self.report(self.advance(planned, failed))

    def advance(self, planned: list[Planned], failed: set[object]) -> list[Planned]:
        """Once renamed: each result's manifest and place become the episode's, so its next stage may
        start. Returns those applied; a result the disk did not take is kept, to be applied afresh."""
        for _out, _ep, m, _t in planned:
            b = self.batches.by_id.get(m.batch_id)
            if b is not None:
                b.pending_usd = 0.0
        applied = []
        for p in planned:
            out, ep, m, t = p
            if ep.episode_id in failed:
                self.held.append(out)  # nothing of it is in memory yet: applied afresh once the disk recovers
                continue
            self._apply(out, ep, m, t)
            applied.append(p)
        return applied

    def _apply(self, out: TaskOutcome, ep: Episode, m: EpisodeManifest, t: lifecycle.Transition) -> None:
        stage, result = out.stage, out.result
        ep.manifest = m
        b = self.batches[m.batch_id]
        b.tally.add_cost(stage, result.cost_usd)
        b.dirty = True
        self.episodes.stopped(ep, stage)
        ep.location = t.target
        if t.outcome == "disk":  # admission pauses before the episode can be handed out again
            logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage).warning(
                "{} could not save its work ({}); it runs again once the disk recovers", stage, result.error)
            code = result.disk_errno or errno.ENOSPC
            self.disk.trouble(f"{stage} of {m.session_id}", OSError(code, os.strerror(code)))
        # requeued where it now waits; a finished one is no longer in progress in a stage folder, so its
        # session is free (it stays in the book, for its report, until the next tick)
        self.episodes.requeue(ep)

    def report(self, applied: list[Planned]) -> None:
        """Once durable: the results' log lines and hooks; finished episodes leave; batch bookkeeping."""
        for out, ep, m, t in applied:
            self._report(out, ep, m, t)

    def _report(self, out: TaskOutcome, ep: Episode, m: EpisodeManifest, t: lifecycle.Transition) -> None:
        stage, result = out.stage, out.result
        log = logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage)
        if t.outcome == "review":
            r = m.review
            log.info("{} done in {}s (attempt {}, ${:.4f}{}) -> review: waiting for approval (speech about ${:.2f})",
                     stage, m.timings[stage].seconds, m.attempts, result.cost_usd, made(result.details),
                     r.predicted_audio_usd or 0.0 if r else 0.0)
            if not result.reused:
                self.observers.emit("on_phase_done", m, stage, result.usage)
        elif t.outcome in ("advanced", "done"):
            secs = m.timings[stage].seconds
            log.info("{} done in {}s{}{} (attempt {}, ${:.4f}{}){}", stage, secs, " (reused)" if result.reused else "",
                     f" on {out.worker}" if out.worker else "", m.attempts, result.cost_usd, made(result.details),
                     " -> done" if t.outcome == "done" else "")
            if not result.reused:  # a reused phase's usage is its first run's: the artifact has it
                self.observers.emit("on_phase_done", m, stage, result.usage)
            if t.outcome == "done":
                self.retire(m.session_id)
                self.observers.emit("on_episode_done", m)
        elif t.outcome == "failed":
            log.error("{} failed for good after {} attempt(s): {}", stage, m.attempts, result.error)
            self.observers.emit("on_episode_failed", m)
        elif t.outcome == "retry":
            log.warning("{} attempt {} failed: {}; retrying in {:.1f}s, after the rest of the batch",
                        stage, m.attempts, result.error, t.retry_in or 0.0)
        if t.outcome in ("done", "failed"):  # after its last log line, which goes to its episode.log
            episode_finished(ep.episode_id)
            self.episodes.remove(ep)
            self.batches.finish(t.target, m)
        try:
            self.batches.after_change(m.batch_id, self.next_group)
        except OSError as exc:
            self.disk.trouble(f"writing the batch files of {m.batch_id}", exc)
