"""The supervisor: a small arbiter, in the manner of gunicorn's. It wakes, reaps, dispatches and saves.

It is the one process that writes the spool's state. Everything else lives in a module of its own:
the episode indexes (episodes.py), the lifecycle rules (lifecycle.py), batch bookkeeping
(batchbook.py), the executor that runs stage work (pool.py, or a remote one), recovery (recovery.py),
intake (accept.py) and group commit (commit.py). Signal handlers only enqueue; the loop does the work.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import time
from collections import Counter
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon import accept, control, lifecycle, recovery, retention, retry
from podspool.daemon import archive as archiving
from podspool.daemon.batchbook import BatchBook
from podspool.daemon.commit import CommitGroup, GroupFailed
from podspool.daemon.config import Config
from podspool.daemon.episodes import Episode, EpisodeBook
from podspool.daemon.executor import StageTask, TaskOutcome
from podspool.daemon.hooks import Hook
from podspool.daemon.inbox import Inbox
from podspool.daemon.models import EpisodeManifest, utcnow
from podspool.daemon.notify import Notifier
from podspool.daemon.pool import LocalExecutor
from podspool.daemon.scheduler import batch_stage_cap, retry_delay
from podspool.daemon.snapshot import counts_line, snapshot
from podspool.daemon.spool import MANIFEST, Spool, manifest_bytes
from podspool.stages.base import STAGE_NAMES, EpisodeInput, StageName

SESSION_WRITE_EVERY_S = 1.0
TICK_S = 0.5


class Supervisor:
    def __init__(self, spool: Spool, cfg: Config, *, once: bool = False, secrets: dict[str, str] | None = None,
                 reload_config: Any = None, executor: Any = None) -> None:
        self.spool = spool
        self.cfg = cfg
        self.once = once
        self.secrets = dict(secrets or {})
        self.reload_config = reload_config  # () -> Config, for SIGHUP
        self.episodes = EpisodeBook()
        self.batches = BatchBook(spool, cfg.limits.checkpoint_every)
        self.executor = executor or LocalExecutor(cfg, str(spool.state), self.secrets, spool.clean_temps)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.unsaved: list[TaskOutcome] = []  # results a full disk could not record yet
        self.disk_paused_until = 0.0
        self.task_seq = 0
        self.notifier = Notifier()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.inbox = Inbox(spool.inbox, cfg.limits.inbox_settle_s, cfg.limits.inbox_rescan_s, self._wake)
        self._last_session_write = 0.0
        self._last_status = 0.0
        self._next_sweep = 0.0
        self.hooks: list[Hook] = []
        self.api_calls: Counter[str] = Counter()  # "api:outcome" -> attempts, since this daemon started

    # ---- life ---------------------------------------------------------------------------------

    def recover(self) -> None:
        recovery.recover(self.spool, self.episodes, self.batches)
        for bid in list(self.batches.by_id):
            self._after_change(bid)
        logger.info("recovery: {} episodes in {} batches ({})", len(self.episodes), len(self.batches.by_id),
                    counts_line(self))

    def run(self) -> int:
        self._install_signals()
        self.recover()
        self.inbox.start_watching()
        self._take_inbox(force=True)
        first = {ep.location for ep in self.episodes if ep.location in STAGE_NAMES}
        self.executor.start(first, once=self.once, queued=len(self.episodes))
        self.notifier.send(READY=1, STATUS=counts_line(self))
        logger.info("podspool ready: spool {} (pid {})", self.spool.root, os.getpid())
        try:
            while True:
                self._handle_signals()
                if self.stopping and self._drained():
                    break
                if not self.once and not self.stopping:
                    self._take_inbox()
                    self._take_requests()
                    self._sweep()
                self._reap()
                self._dispatch()
                self._write_sessions()
                self._notify()
                self._emit("on_tick", lambda: snapshot(self))
                if self.once and self._nothing_left():
                    logger.info("--once: nothing left to run ({})", counts_line(self))
                    break
                self._wait(TICK_S)
        finally:
            self._shutdown()
        return 0

    def _drained(self) -> bool:
        if not self.executor.in_flight():
            return True
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            for task in self.executor.abandon():
                logger.bind(batch=task.episode.batch_id, episode=task.episode.episode_id, stage=task.stage).warning(
                    "shutdown grace over: stopping {}; it runs again from the start of {} next time",
                    task.episode.episode_id, task.stage)
                ep = self.episodes.get(task.episode.episode_id)
                if ep is not None:
                    self.episodes.stopped(ep, task.stage)
            return True
        return False

    def _nothing_left(self) -> bool:
        """--once: nothing runs, and nothing waits that is not held by its budget."""
        if self.executor.in_flight() or self.unsaved:
            return False
        return all(self.batches[bid].over_budget() for bid in self.episodes.waiting_batches()
                   if bid in self.batches)

    def _wake(self) -> None:
        """Wake the main loop from another thread (the inbox observer)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full, so the loop is awake already (or shutting down)

    def _wait(self, timeout: float) -> None:
        ready = wait_for([self._wake_r, *self.inbox.handles(), *self.executor.handles()], timeout)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                pass

    # ---- signals ----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.signals.put_nowait(signum)  # only enqueue: no logging, locking or I/O here

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _handle_signals(self) -> None:
        while True:
            try:
                sig = self.signals.get_nowait()
            except queue.Empty:
                return
            if sig == signal.SIGHUP:
                self._reload()
            elif self.stopping:
                logger.warning("second stop signal: stopping now")
                self.stop_deadline = 0.0
            else:
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.cfg.limits.shutdown_grace_s
                self.notifier.send(STOPPING=1, STATUS="draining")
                logger.info("{}: admitting nothing new; in-flight work has {}s to finish",
                            signal.Signals(sig).name, self.cfg.limits.shutdown_grace_s)

    def _reload(self) -> None:
        if self.reload_config is None:
            return
        try:
            cfg = self.reload_config()
        except Exception as exc:  # a bad config file must not take the daemon down
            logger.error("SIGHUP: configuration not reloaded: {}", exc)
            return
        self.cfg = cfg
        self.executor.reconfigure(cfg)
        logger.info("SIGHUP: configuration reloaded; workers restart as they finish their tasks")

    # ---- inbox and control requests ---------------------------------------------------------

    def _take_inbox(self, force: bool = False) -> None:
        if time.monotonic() < self.disk_paused_until:
            return
        paths = self.spool.inbox_candidates() if force else self.inbox.due()
        if force and self.once:
            paths = self.inbox.settle(paths)
        for path in sorted(paths):
            try:
                taken = accept.take(self.spool, self.cfg, path)
            except OSError as exc:
                self._disk_trouble("taking " + path.name, exc)
                continue
            finally:
                self.inbox.forget(path.name)
            if taken is not None:
                self._admit_batch(path, *taken)

    def _admit_batch(self, path: Path, bid: str, made: list[EpisodeManifest]) -> None:
        b = self.batches.load(bid)
        for m in made:
            b.tally.total += 1
            b.tally.numbers.append(m.episode_number)
            self.episodes.add(Episode(manifest=m, location=STAGE_NAMES[0]))
        logger.bind(batch=bid).info("inbox: accepted {} as batch {} ({} episodes, strategy {}, priority {})",
                                    path.name, bid, len(made), b.meta.get("strategy"), b.meta.get("priority"))

    def _take_requests(self) -> None:
        for req in control.pending(self.spool):
            try:
                self.apply_request(req.body)
            finally:
                control.done(req)

    def apply_request(self, body: dict[str, Any]) -> list[str]:
        if isinstance(body.get("archive"), dict):  # `podspool archive` while this daemon runs
            req = body["archive"]
            return self.archive(req.get("batch"), req.get("older_than_days"))
        return retry.apply(self, body)

    def archive(self, batch: str | None, older_than_days: float | None) -> list[str]:
        """Move finished batches under archive/ (only those with nothing of theirs in memory)."""
        wanted = [batch] if batch else archiving.archivable(self.spool.root, older_than_days or 0.0)
        done = []
        for bid in wanted:
            if bid in self.episodes.by_batch or archiving.unfinished(self.spool.root, bid):
                continue
            try:
                archiving.archive_batch(self.spool.root, bid)
            except OSError as exc:
                self._disk_trouble(f"archiving {bid}", exc)
                break
            self.batches.forget(bid)
            done.append(bid)
            logger.bind(batch=bid).info("archived batch {}", bid)
        return done

    # ---- dispatch ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.stopping or time.monotonic() < self.disk_paused_until:
            return
        now = time.time()
        starts: list[tuple[Episode, StageName, EpisodeManifest]] = []
        group = CommitGroup(self.spool.root)
        admitted = len(self.episodes.in_progress)
        cap = self.cfg.limits.max_sessions_in_memory
        paused = getattr(getattr(self.executor, "memory", None), "paused", False)
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
                limit = batch_stage_cap(b.meta.get("strategy"), stage, size, self.cfg.concurrency_explicit)
                # Below the pool's size a strategy's cap counts the batch's running tasks; at the pool's
                # size the free slots already bound it (and a worker past its call may overlap the next).
                capped = limit < size
                while free > 0 and (not capped or self.episodes.running(stage, bid) + sum(
                        1 for e, s, _ in starts if s == stage and e.batch_id == bid) < limit):
                    ep = self.episodes.pop_ready(stage, bid, now)
                    if ep is None:
                        break
                    m = ep.manifest.model_copy(deep=True)
                    if m.status != "in_progress":
                        if paused or admitted >= cap:
                            self.episodes.push_back(ep)
                            break
                        admitted += 1
                    lifecycle.begin(m, stage, utcnow(), time.monotonic())
                    try:
                        self._write_manifest(group, stage, m)
                    except OSError as exc:
                        self.episodes.push_back(ep)
                        self._disk_trouble(f"starting {m.session_id}", exc)
                        break
                    starts.append((ep, stage, m))
                    free -= 1
        if not starts:
            return
        failed = self._commit(group, "starting episodes")
        for ep, stage, m in starts:
            if ep.episode_id in failed:  # not started after all: a full disk must not use up its attempts
                self.episodes.push_back(ep)
                continue
            ep.manifest = m
            self._hand_over(ep, stage)

    def _hand_over(self, ep: Episode, stage: StageName) -> None:
        m = ep.manifest
        b = self.batches[m.batch_id]
        b.meta.setdefault("start_time", utcnow())
        b.dirty = True
        self.task_seq += 1
        episode = EpisodeInput(episode_id=m.session_id, batch_id=m.batch_id, number=m.episode_number,
                               topic=m.topic, title=m.title, notes=m.notes, sources=tuple(m.sources),
                               attempt=m.attempts)
        task = StageTask(self.task_seq, stage, episode, str(self.spool.folder(stage, m.session_id)))
        self.episodes.started(ep)
        if not self.executor.submit(task):
            self.episodes.stopped(ep, stage)
            self.episodes.settled(ep)  # in progress on disk, waiting in memory: the next start counts nothing
            return
        logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage).info("{} started (attempt {})", stage,
                                                                              m.attempts)

    def _log_held(self, bid: str) -> None:
        b = self.batches[bid]
        if not b.held_logged:
            b.held_logged = b.dirty = True
            logger.bind(batch=bid).warning(
                "batch {} reached its budget of ${:.2f}: its waiting episodes are held "
                "(raise it with: podspool retry --batch {} --budget USD)", bid, float(b.meta["budget_usd"]), bid)

    # ---- results ----------------------------------------------------------------------------

    def _reap(self) -> None:
        outcomes = self.unsaved + self.executor.poll() if time.monotonic() >= self.disk_paused_until \
            else self.executor.poll()
        if time.monotonic() < self.disk_paused_until:
            self.unsaved += outcomes
            return
        self.unsaved = []
        if outcomes:
            self._record(outcomes)

    def _record(self, outcomes: list[TaskOutcome]) -> None:
        """Apply results to copies of their manifests, make them durable together, then publish them."""
        group = CommitGroup(self.spool.root)
        planned: list[tuple[TaskOutcome, Episode, EpisodeManifest, lifecycle.Transition]] = []
        for out in outcomes:
            self.api_calls.update(out.result.api_calls)
            ep = self.episodes.get(out.episode_id)
            if ep is None or not ep.running or ep.location != out.stage:
                logger.warning("dropping a result for {} ({}): it is no longer running there", out.episode_id,
                               out.stage)
                continue
            m = ep.manifest.model_copy(deep=True)
            delay = retry_delay(m.attempts, self.cfg.limits.retry_backoff_s, self.cfg.limits.retry_backoff_max_s)
            t = lifecycle.settle(m, out.stage, out.result, max_retries=self.cfg.limits.max_retries, now_iso=utcnow(),
                                 now_mono=time.monotonic(), now_unix=time.time(), retry_delay_s=delay)
            try:
                self._write_manifest(group, out.stage, m)
            except OSError as exc:
                self.unsaved.append(out)
                self._disk_trouble(f"saving the result of {out.episode_id}", exc)
                continue
            if t.moves:
                group.move(self.spool.folder(out.stage, ep.episode_id), self.spool.folder(t.target, ep.episode_id),
                           f"move {ep.episode_id} {out.stage}->{t.target}", ep.episode_id)
            planned.append((out, ep, m, t))
        failed = self._commit(group, "saving results")
        for out, ep, m, t in planned:
            if ep.episode_id in failed:
                self.unsaved.append(out)  # nothing of it is in memory yet: applied afresh once the disk recovers
                continue
            self._publish(out, ep, m, t)

    def _publish(self, out: TaskOutcome, ep: Episode, m: EpisodeManifest, t: lifecycle.Transition) -> None:
        stage, result = out.stage, out.result
        ep.manifest = m
        b = self.batches[m.batch_id]
        b.tally.add_cost(stage, result.cost_usd)
        b.dirty = True
        self.episodes.stopped(ep, stage)
        ep.location = t.target
        log = logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage)
        if t.outcome in ("advanced", "done"):
            secs = m.timings[stage].seconds
            log.info("{} done in {}s{} (${:.4f}){}", stage, secs, " (reused)" if result.reused else "",
                     result.cost_usd, " -> done" if t.outcome == "done" else "")
            if t.outcome == "done":
                self._retire_wav(m.session_id)
                self._emit("on_episode_done", m)
        elif t.outcome == "disk":
            log.warning("{} could not save its work ({}); it runs again once the disk recovers", stage, result.error)
            code = result.disk_errno or errno.ENOSPC
            self._disk_trouble(f"{stage} of {m.session_id}", OSError(code, os.strerror(code)))
        elif t.outcome == "failed":
            log.error("{} failed for good after {} attempt(s): {}", stage, m.attempts, result.error)
            self._emit("on_episode_failed", m)
        else:
            log.warning("{} attempt {} failed: {}; retrying in {:.1f}s, after the rest of the batch",
                        stage, m.attempts, result.error, t.retry_in or 0.0)
        if t.outcome in ("done", "failed"):  # after its last log line, which goes to its episode.log
            self.episodes.remove(ep)
            b.tally.finish(t.target, m)
            b.finished_since_checkpoint.append((t.target, m))
            b.finished.append((t.target, m))
        else:
            self.episodes.settled(ep)
        try:
            self._after_change(m.batch_id)
        except OSError as exc:
            self._disk_trouble(f"writing the batch files of {m.batch_id}", exc)

    def _retire_wav(self, eid: str) -> None:
        if self.cfg.retention.keep_wav_days == 0:  # default: a finished episode keeps its mp3, not the wav
            try:
                retention.drop_wav(self.spool.folder("done", eid), 0)
            except OSError as exc:
                logger.warning("retention: could not remove the wav of {}: {}", eid, exc)

    def _sweep(self) -> None:
        """Hourly (by default): wavs kept some days, and finished batches due for the archive."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cfg.retention.sweep_every_s
        if self.cfg.retention.archive_after_days is not None:
            self.archive(None, self.cfg.retention.archive_after_days)
        if self.cfg.retention.keep_wav_days > 0:
            freed = retention.sweep(self.spool.where("done"), self.cfg.retention)
            if freed:
                logger.info("retention: removed {:.1f} MB of wav past {} days", freed / 2**20,
                            self.cfg.retention.keep_wav_days)

    # ---- saving -----------------------------------------------------------------------------

    def _write_manifest(self, group: CommitGroup, location: str, m: EpisodeManifest) -> None:
        m.updated_at = utcnow()
        group.write(self.spool.folder(location, m.session_id) / MANIFEST, manifest_bytes(m), m.session_id)

    def _commit(self, group: CommitGroup, what: str) -> set[object]:
        try:
            group.commit()
        except GroupFailed as exc:
            self._disk_trouble(what, exc.cause)
            return exc.failed
        return set()

    def _after_change(self, bid: str) -> None:
        if bid not in self.batches:
            return
        self.batches.after_change(bid, lambda: self._session(bid), self._on_batch_complete)

    def _on_batch_complete(self, session: dict[str, Any], manifests: list[EpisodeManifest]) -> None:
        self._emit("on_batch_complete", session, manifests)
        bid = session["batch_id"]
        if bid not in self.episodes.by_batch:
            self.batches.forget(bid)  # a finished batch needs no per-episode state in memory at all

    def _session(self, bid: str) -> dict[str, Any]:
        eps = self.episodes.of_batch(bid)
        return self.batches.session(bid, [(ep.location, ep.manifest) for ep in eps],
                                    {ep.episode_id for ep in eps if ep.running})

    def batches_session(self, bid: str) -> dict[str, Any]:
        """session.json of an open batch, with rows for its finished episodes too (dashboards, metrics)."""
        eps = self.episodes.of_batch(bid)
        rows = [(ep.location, ep.manifest) for ep in eps] + self.batches[bid].finished
        return self.batches.session(bid, rows, {ep.episode_id for ep in eps if ep.running})

    def _write_sessions(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_session_write < SESSION_WRITE_EVERY_S:
            return
        self._last_session_write = now
        for bid, b in list(self.batches.by_id.items()):
            if (b.dirty or force) and self.spool.batch_dir(bid).is_dir():
                try:
                    self.batches.write_session(bid, self._session(bid))
                except OSError as exc:
                    self._disk_trouble(f"writing the session of {bid}", exc)
                    return

    def _disk_trouble(self, what: str, exc: OSError) -> None:
        self.disk_paused_until = time.monotonic() + self.cfg.limits.disk_retry_s
        kind = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system",
                errno.EDQUOT: "quota exceeded"}.get(exc.errno or 0, exc.strerror or str(exc))
        logger.error("{} failed ({}); admission paused, retrying in {}s", what, kind, self.cfg.limits.disk_retry_s)

    # ---- status -----------------------------------------------------------------------------

    def _notify(self) -> None:
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if now - self._last_status >= 1.0:
            self._last_status = now
            self.notifier.send(WATCHDOG=1, STATUS=counts_line(self))

    def _emit(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception as exc:  # an observer must never take the pipeline down
                logger.opt(exception=exc).error("hook {}.{} failed: {}", type(hook).__name__, method, exc)

    # ---- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.inbox.stop()
        for task in self.executor.abandon():
            ep = self.episodes.get(task.episode.episode_id)
            if ep is not None:
                self.episodes.stopped(ep, task.stage)
        self.executor.stop()
        if self.unsaved and time.monotonic() >= self.disk_paused_until:
            pending, self.unsaved = self.unsaved, []
            self._record(pending)
        try:
            self._write_sessions(force=True)
        except OSError:
            pass
        signal.set_wakeup_fd(-1)
        for hook in self.hooks:
            try:
                hook.close()
            except Exception as exc:
                logger.error("hook {} did not close cleanly: {}", type(hook).__name__, exc)
        logger.info("podspool stopped ({})", counts_line(self))

