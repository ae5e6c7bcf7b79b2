"""Results: each outcome is applied to a copy of its manifest, and the tick's copies and moves are made
durable together (group commit). Once renamed into place, a result becomes what the supervisor holds
(`advance`: its next stage may start); once durable, it is reported (`report`: log lines, hooks,
finished episodes, batch files).

A result the disk could not record is kept and applied afresh once the disk recovers, so nothing of
it is counted twice.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from loguru import logger
from podspool.daemon.core import lifecycle
from podspool.daemon.core.commit import CommitGroup, GroupFailed
from podspool.daemon.core.episodes import Episode
from podspool.daemon.core.scheduling import retry_delay
from podspool.daemon.executors.protocol import TaskOutcome
from podspool.daemon.models import EpisodeManifest, utcnow
from podspool.daemon.observers.logs import episode_finished
from podspool.stages import fsio
from podspool.stages.base import StageResult

if TYPE_CHECKING:
    from podspool.daemon.core.supervisor import Supervisor

# a result applied to a copy of its manifest, waiting for the group commit
Planned = tuple[TaskOutcome, Episode, EpisodeManifest, lifecycle.Transition]


def made(details: dict[str, object]) -> str:
    """What a phase made, for its "done" line: the script's words, the audio's length. (The audio stage
    logged them on a line of their own: one record more per episode, in its worker and again in the
    supervisor, which copies a worker's lines into the log files.)"""
    seconds, words = details.get("audio_seconds"), details.get("words")
    return (f", {seconds:.1f} s of audio" if isinstance(seconds, (int, float)) else "") + \
        (f", {words} words" if isinstance(words, int) else "")


class Recorder:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.replayed: set[int] = set()  # task ids of results kept through disk trouble, in this tick's take
        # the last tick's group, renamed but not yet durable, and its results, reported once it is
        self.unsettled: tuple[CommitGroup, list[Planned]] | None = None

    def take(self) -> list[TaskOutcome]:
        """The outcomes that arrived, with those a full disk held back; none while the disk is paused."""
        if time.monotonic() < self.sup.disk_paused_until:  # read once: a pause ending between two reads lost results
            self.sup.unsaved += self.sup.executor.poll()
            return []
        outcomes = self.sup.unsaved + self.sup.executor.poll()
        self.replayed = {o.task_id for o in self.sup.unsaved}
        self.sup.unsaved = []
        return outcomes

    def record(self, outcomes: list[TaskOutcome]) -> None:
        """Apply results to copies of their manifests, make them durable together, then publish them."""
        group = CommitGroup(self.sup.spool.root, self.sup.spares)
        planned = self.plan(outcomes, group)
        self.publish(planned, self.sup.commit(group, "saving results"))

    def plan(self, outcomes: list[TaskOutcome], group: CommitGroup) -> list[Planned]:
        """Each result applied to a copy of its manifest, its writes and moves added to `group`."""
        planned: list[Planned] = []
        for out in outcomes:
            self.sup.api_calls.update(out.result.api_calls)
            ep = self.sup.episodes.get(out.episode_id)
            if ep is None or not ep.running or ep.location != out.stage:
                logger.warning("dropping a result for {} ({}): it is no longer running there", out.episode_id,
                               out.stage)
                for tmp, _final in out.files:
                    fsio.unlink_quietly(tmp)
                continue
            self.sup.dispatcher.result_came(out.episode_id)
            if out.task_id in self.replayed and not all(os.path.exists(tmp) for tmp, _final in out.files):
                # kept through disk trouble, and its files went meanwhile: what it made is lost, so run it again
                out = replace(out, files=(), result=StageResult(
                    ok=False, error="its files were lost before they could be saved", cost_usd=out.result.cost_usd))
            m = ep.manifest.fork()
            delay = retry_delay(m.attempts, self.sup.cfg.limits.retry_backoff_s, self.sup.cfg.limits.retry_backoff_max_s)
            t = lifecycle.settle(m, out.stage, out.result, max_retries=self.sup.cfg.limits.max_retries, now_iso=utcnow(),
                                 now_mono=time.monotonic(), now_unix=time.time(), retry_delay_s=delay)
            group.adopt(out.files, ep.episode_id)  # renamed before the manifest that says they exist
            try:
                self.sup.write_manifest(group, out.stage, m)
            except OSError as exc:
                group.retract(ep.episode_id)
                self.sup.unsaved.append(out)
                self.sup.disk_trouble(f"saving the result of {out.episode_id}", exc)
                continue
            b = self.sup.batches.by_id.get(m.batch_id)
            if b is not None:
                b.pending_usd += out.result.cost_usd  # a dispatch before the commit must see it spent
            if t.moves:
                group.move(self.sup.spool.folder(out.stage, ep.episode_id), self.sup.spool.folder(t.target, ep.episode_id),
                           f"move {ep.episode_id} {out.stage}->{t.target}", ep.episode_id)
            planned.append((out, ep, m, t))
        return planned

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
            failed = self.sup.saving_failed("saving results", exc)
        try:
            group.apply()
        except GroupFailed as exc:
            failed = self.sup.saving_failed("saving results", exc)
        applied = self.advance(planned, failed)
        if applied or group.applied:
            if group.settled_by_any_sync:
                self.unsettled = (group, applied)
            else:  # files fsynced one by one: no later sync covers these renames, so they settle now
                self._settle(group)
                self.report(applied)
        return last[1] if last is not None else []

    def settle(self) -> None:
        """Settle the last tick's renames now and report its results (the loop goes idle, or stops)."""
        if self.unsettled is not None:
            (group, applied), self.unsettled = self.unsettled, None
            self._settle(group)
            self.report(applied)

    def _settle(self, group: CommitGroup) -> None:
        try:
            group.settle()
        except GroupFailed as exc:
            self.sup.saving_failed("saving results", exc)

    def publish(self, planned: list[Planned], failed: set[object]) -> None:
        """After a whole commit: what is on disk becomes what the supervisor holds, and is reported."""
        self.report(self.advance(planned, failed))

    def advance(self, planned: list[Planned], failed: set[object]) -> list[Planned]:
        """Once renamed: each result's manifest and place become the episode's, so its next stage may
        start. Returns those applied; a result the disk did not take is kept, to be applied afresh."""
        for _out, _ep, m, _t in planned:
            b = self.sup.batches.by_id.get(m.batch_id)
            if b is not None:
                b.pending_usd = 0.0
        applied = []
        for p in planned:
            out, ep, m, t = p
            if ep.episode_id in failed:
                self.sup.unsaved.append(out)  # nothing of it is in memory yet: applied afresh once the disk recovers
                continue
            self._apply(out, ep, m, t)
            applied.append(p)
        return applied

    def _apply(self, out: TaskOutcome, ep: Episode, m: EpisodeManifest, t: lifecycle.Transition) -> None:
        stage, result = out.stage, out.result
        ep.manifest = m
        b = self.sup.batches[m.batch_id]
        b.tally.add_cost(stage, result.cost_usd)
        b.dirty = True
        self.sup.episodes.stopped(ep, stage)
        ep.location = t.target
        if t.outcome == "disk":  # admission pauses before the episode can be handed out again
            logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage).warning(
                "{} could not save its work ({}); it runs again once the disk recovers", stage, result.error)
            code = result.disk_errno or errno.ENOSPC
            self.sup.disk_trouble(f"{stage} of {m.session_id}", OSError(code, os.strerror(code)))
        # requeued where it now waits; a finished one is no longer in progress in a stage folder, so its
        # session is free (it stays in the book, for its report, until the next tick)
        self.sup.episodes.settled(ep)

    def report(self, applied: list[Planned]) -> None:
        """Once durable: the results' log lines and hooks; finished episodes leave; batch bookkeeping."""
        for out, ep, m, t in applied:
            self._report(out, ep, m, t)

    def _report(self, out: TaskOutcome, ep: Episode, m: EpisodeManifest, t: lifecycle.Transition) -> None:
        stage, result = out.stage, out.result
        b = self.sup.batches[m.batch_id]
        log = logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage)
        if t.outcome in ("advanced", "done"):
            secs = m.timings[stage].seconds
            log.info("{} done in {}s{}{} (attempt {}, ${:.4f}{}){}", stage, secs, " (reused)" if result.reused else "",
                     f" on {out.worker}" if out.worker else "", m.attempts, result.cost_usd, made(result.details),
                     " -> done" if t.outcome == "done" else "")
            if not result.reused:  # a reused phase's usage is its first run's: the artifact has it
                self.sup.emit("on_phase_done", m, stage, result.usage)
            if t.outcome == "done":
                self.sup.upkeep.retire_wav(m.session_id)
                self.sup.emit("on_episode_done", m)
        elif t.outcome == "failed":
            log.error("{} failed for good after {} attempt(s): {}", stage, m.attempts, result.error)
            self.sup.emit("on_episode_failed", m)
        elif t.outcome == "retry":
            log.warning("{} attempt {} failed: {}; retrying in {:.1f}s, after the rest of the batch",
                        stage, m.attempts, result.error, t.retry_in or 0.0)
        if t.outcome in ("done", "failed"):  # after its last log line, which goes to its episode.log
            episode_finished(ep.episode_id)
            self.sup.episodes.remove(ep)
            b.tally.finish(t.target, m)
            self.sup.finished[t.target] = self.sup.finished.get(t.target, 0) + 1
            b.finished_since_checkpoint.append((t.target, m))
        try:
            self.sup.after_change(m.batch_id)
        except OSError as exc:
            self.sup.disk_trouble(f"writing the batch files of {m.batch_id}", exc)
