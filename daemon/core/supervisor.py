"""The supervisor: a small arbiter, in the manner of gunicorn's. It wakes, reaps, dispatches and saves.

It is the one process that writes the spool's state; each concern it drives lives in a module of its
own: results.py (reap and record), dispatch.py (what starts now), episodes.py (the indexes),
lifecycle.py (the rules), batchbook.py (batch files), commit.py (group commit), pool.py or remote/
(the executor), recovery.py, accept.py, retry.py and upkeep.py. Signal handlers only enqueue.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core import control, recovery, retry
from podspool.daemon.core.batches import CHECKPOINTS, BatchBook
from podspool.daemon.core.commit import CommitGroup, GroupFailed, SparePool
from podspool.daemon.core.dispatcher import Dispatcher
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.core.recorder import Recorder
from podspool.daemon.core.snapshot import counts_line, finished_counts, snapshot
from podspool.daemon.core.upkeep import Upkeep
from podspool.daemon.core.waiter import Waiter
from podspool.daemon.executors.local.pool import LocalExecutor
from podspool.daemon.executors.protocol import TaskOutcome
from podspool.daemon.intake import accept
from podspool.daemon.intake.inbox import Inbox
from podspool.daemon.models import EpisodeManifest, episode_id, utcnow
from podspool.daemon.observers.hooks import Hook
from podspool.daemon.observers.notify import Notifier
from podspool.daemon.spool import MANIFEST, Spool, manifest_bytes
from podspool.stages.base import STAGE_NAMES

SESSION_WRITE_EVERY_S = 1.0
TICK_S = 0.5


class Supervisor:
    def __init__(self, spool: Spool, cfg: Config, *, once: bool = False, secrets: dict[str, str] | None = None,
                 reload_config: Any = None, executor: Any = None,
                 source_roots: Callable[[], list[str] | None] | None = None) -> None:
        self.spool = spool
        self.cfg = cfg
        self.once = once
        self.secrets = dict(secrets or {})
        self.reload_config = reload_config  # () -> Config, for SIGHUP
        # () -> the allowed source roots now, folders granted by `podspool submit` included; None when the
        # configuration names them (grants do not apply)
        self.source_roots = source_roots
        self.batches = BatchBook(spool, cfg.limits.checkpoint_every)
        self.episodes = EpisodeBook(loader=recovery.manifest_loader(spool, self.batches))
        self.executor = executor or LocalExecutor(cfg, str(spool.state), self.secrets, spool.clean_temps)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.unsaved: list[TaskOutcome] = []  # results a full disk could not record yet
        self.disk_paused_until = 0.0
        self.task_seq = 0
        self.notifier = Notifier()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._waiter = Waiter()
        self.inbox = Inbox(spool.inbox, cfg.limits.inbox_settle_s, cfg.limits.inbox_rescan_s, self._wake)
        self._last_session_write = 0.0
        self._last_status = 0.0
        self.upkeep = Upkeep(self)
        self.spares = SparePool(spool.state / "spares")  # manifests rewritten without an inode's churn
        self.group = CommitGroup(spool.root, self.spares)  # the next commit: the tick's results, checkpoints due
        self.recorder = Recorder(self)
        self.dispatcher = Dispatcher(self)
        self.hooks: list[Hook] = []
        self.finished: dict[str, int] = {}  # episode folders in done/ and failed/
        self.api_calls: Counter[str] = Counter()  # "api:outcome" -> attempts, since this daemon started

    # ---- life ---------------------------------------------------------------------------------

    def recover(self) -> None:
        recovery.recover(self.spool, self.episodes, self.batches)
        self.finished = finished_counts(self)
        for bid in list(self.batches.by_id):
            self.after_change(bid)
        logger.info("recovery: {} episodes in {} batches ({})", len(self.episodes), len(self.batches.by_id),
                    counts_line(self))

    def run(self) -> int:
        self._install_signals()
        self.executor.boot()
        self.recover()
        if not self.once:  # --once takes the inbox as it is at the start, and nothing after
            self.inbox.start_watching()
        # the workers boot while the inbox's episode folders are built
        self.executor.prepare(len(self.episodes) + accept.episodes_waiting(self.spool, self.cfg) if self.once else None)
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
                    self.upkeep.sweep()
                self._reap_and_dispatch()
                self._write_sessions()
                self._notify()
                self.emit("on_tick", lambda: snapshot(self))
                self._take_news()
                if self.once and self._nothing_left():
                    logger.info("--once: nothing left to run ({})", counts_line(self))
                    break
                self._wait(TICK_S)
        finally:
            self._shutdown()
        return 0

    def _reap_and_dispatch(self) -> None:
        """The tick's results, and the marks of long-running phases, saved in ONE group commit. A start
        writes nothing (dispatch.py), so the workers those results freed get their next episodes before
        the commit and work while it syncs; what the results made ready starts once renamed; then the
        last tick's results, durable now, are reported (Recorder.save). Pending costs count against their
        batch's budget meanwhile; checkpoints that reporting makes due join the next group (`self.group`)."""
        group, self.group = self.group, CommitGroup(self.spool.root, self.spares)
        results = self.recorder.plan(self.recorder.take(), group)
        self.dispatcher.mark_running(group)
        self.dispatcher.run()
        durable = self.recorder.save(results, group)
        self.dispatcher.run()
        self.recorder.report(durable)
        self._take_news()  # a busy tick (a batch completing) must not hold up a new manifest

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
        if self.executor.in_flight() or self.unsaved or self.recorder.unsettled:
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
        mark_in = self.dispatcher.next_mark_in()
        if mark_in is not None:
            timeout = min(timeout, mark_in)
        if self.recorder.unsettled:
            timeout = 0.0  # the next tick settles the last one's renames: with its own sync, or alone
        ready = self._waiter.wait([self._wake_r, *self.inbox.handles(), *self.executor.handles()], timeout)
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

    def _take_news(self) -> None:
        """Between the loop's steps: a manifest that arrived meanwhile (one non-blocking read when none did)."""
        if not self.once and not self.stopping:
            self._take_inbox()

    def _take_inbox(self, force: bool = False) -> None:
        if time.monotonic() < self.disk_paused_until:
            return
        paths = self.spool.inbox_candidates() if force else self.inbox.due()
        if force and self.once:
            paths = self.inbox.settle(paths)
        if paths:
            self._learn_granted_roots()
        for path in sorted(paths):
            try:
                taken = accept.take(self.spool, self.cfg, path)
            except OSError as exc:
                self.disk_trouble("taking " + path.name, exc)
                continue
            finally:
                self.inbox.forget(path.name)
            if taken is not None:
                self._admit_batch(path, *taken)

    def _learn_granted_roots(self) -> None:
        """`podspool submit` grants a manifest's folder before it places the manifest: read the grants
        before reading a manifest, so a running daemon needs no reload for them."""
        try:
            roots = self.source_roots() if self.source_roots is not None else None
        except OSError as exc:
            logger.warning("could not read the granted source folders: {}", exc)
            return
        if roots is None:
            return
        now = list(roots)
        known = list(self.cfg.research.source_roots)
        if now == known:
            return
        self.cfg = self.cfg.model_copy(update={"research": self.cfg.research.model_copy(update={"source_roots": now})})
        self.executor.reconfigure(self.cfg)
        logger.info("sources may now also come from {} (granted by podspool submit); workers restart as they "
                    "finish their tasks", ", ".join(r for r in now if r not in known) or "fewer folders")

    def _admit_batch(self, path: Path, bid: str, numbers: list[int]) -> None:
        b = self.batches.load(bid)
        for n in numbers:
            b.tally.total += 1
            b.tally.numbers.append(n)
            self.episodes.add(Episode.queued(episode_id(n, bid), bid, n, STAGE_NAMES[0], self.episodes.loader))
        logger.bind(batch=bid).info("inbox: accepted {} as batch {} ({} episodes, strategy {}, priority {})",
                                    path.name, bid, len(numbers), b.meta.get("strategy"), b.meta.get("priority"))

    def _take_requests(self) -> None:
        for req in control.pending(self.spool):
            try:
                self.apply_request(req.body)
            finally:
                control.done(req)

    def apply_request(self, body: dict[str, Any]) -> list[str]:
        if isinstance(body.get("archive"), dict):  # `podspool archive` while this daemon runs
            req = body["archive"]
            return self.upkeep.archive(req.get("batch"), req.get("older_than_days"))
        return retry.apply(self, body)

    # ---- saving -----------------------------------------------------------------------------

    def write_manifest(self, group: CommitGroup, location: str, m: EpisodeManifest) -> None:
        m.updated_at = utcnow()
        group.write(self.spool.folder(location, m.session_id) / MANIFEST, manifest_bytes(m), m.session_id,
                    replaces=True)

    def commit(self, group: CommitGroup, what: str) -> set[object]:
        try:
            group.commit()
        except GroupFailed as exc:
            return self.saving_failed(what, exc)
        return set()

    def saving_failed(self, what: str, exc: GroupFailed) -> set[object]:
        """A commit failed: the disk's trouble is logged; returns the owners whose changes did not happen."""
        self.disk_trouble(what, exc.cause)
        for owner in exc.failed:
            if isinstance(owner, tuple) and owner[0] == CHECKPOINTS:
                self.batches.checkpoints_lost(owner[1])
        return exc.failed

    def after_change(self, bid: str) -> None:
        if bid not in self.batches:
            return
        self.batches.after_change(bid, lambda: self.batches_session(bid), self._on_batch_complete, self.group)

    def _on_batch_complete(self, session: dict[str, Any], manifests: Iterable[EpisodeManifest]) -> None:
        self.emit("on_batch_complete", session, manifests)
        bid = session["batch_id"]
        if bid not in self.episodes.by_batch:
            self.batches.forget(bid)  # a finished batch needs no per-episode state in memory at all

    def batches_session(self, bid: str) -> dict[str, Any]:
        return self.batches.session(bid, self.episodes)

    def _write_sessions(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_session_write < SESSION_WRITE_EVERY_S:
            return
        self._last_session_write = now
        for bid, b in list(self.batches.by_id.items()):
            if (b.dirty or force) and self.spool.batch_dir(bid).is_dir():
                try:
                    self.batches.write_session(bid, self.batches_session(bid))
                except OSError as exc:
                    self.disk_trouble(f"writing the session of {bid}", exc)
                    return

    def _keep_artifacts(self, outcomes: list[TaskOutcome]) -> None:
        """Stopping with results the disk could not record: their artifacts, at their workers' temp names,
        need no space to be renamed in, so the next start's stages reuse them instead of paying again."""
        group = CommitGroup(self.spool.root, self.spares)
        for out in outcomes:
            group.adopt(out.files, out.episode_id)
        try:
            group.commit()
        except GroupFailed as exc:
            logger.warning("stopping: {} result(s) could not be kept for reuse ({}); they run again", len(outcomes),
                           exc.cause)

    def disk_trouble(self, what: str, exc: OSError) -> None:
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

    def emit(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception as exc:  # an observer must never take the pipeline down
                logger.opt(exception=exc).error("hook {}.{} failed: {}", type(hook).__name__, method, exc)

    # ---- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.recorder.settle()
        self.inbox.stop()
        for task in self.executor.abandon():
            ep = self.episodes.get(task.episode.episode_id)
            if ep is not None:
                self.episodes.stopped(ep, task.stage)
        self.executor.stop()
        if self.unsaved and time.monotonic() >= self.disk_paused_until:
            pending, self.unsaved = self.unsaved, []
            self.recorder.record(pending)
        elif self.unsaved:
            self._keep_artifacts(self.unsaved)
        self.commit(self.group, "saving checkpoints")
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

