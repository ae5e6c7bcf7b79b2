"""The supervisor: the loop and its wiring, in the manner of gunicorn's arbiter and huey's consumer.

It is the one process that writes the spool's state, and each piece of that state has one owner, which
it builds and wires here: the episode book (episodes.py), the batch book (batches.py, with the finished
counts and the batch files), the recorder (recorder.py, with the results held through disk trouble and
the group commits), the dispatcher (dispatcher.py, with its task sequence), the disk pause (disk.py),
upkeep (retention and the archive). `run()` reads as the loop: wake, take news, reap and record,
dispatch, save, report. Signal handlers only enqueue.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core import control, recovery, retry, review
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.disk import DiskPause
from podspool.daemon.core.dispatcher import Dispatcher
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.core.recorder import Recorder
from podspool.daemon.core.snapshot import LoopView, counts_line, snapshot
from podspool.daemon.core.upkeep import Upkeep
from podspool.daemon.executors.local.pool import LocalExecutor
from podspool.daemon.executors.protocol import Executor, TaskOutcome
from podspool.daemon.executors.waiter import Waiter
from podspool.daemon.intake import accept
from podspool.daemon.intake.inbox import Inbox
from podspool.daemon.models import episode_id
from podspool.daemon.observers.hooks import Observers
from podspool.daemon.observers.notify import Notifier
from podspool.daemon.spool import Spool
from podspool.stages import fsio
from podspool.stages.base import STAGE_NAMES

TICK_S = 0.5


class Supervisor:
    def __init__(self, spool: Spool, cfg: Config, *, once: bool = False, secrets: dict[str, str] | None = None,
                 reload_config: Callable[[], Config] | None = None, executor: Executor | None = None,
                 source_roots: Callable[[], list[str] | None] | None = None) -> None:
        fsio.set_role("supervisor")  # test hook: PODSPOOL_CRASH_ROLE tells its crash points from its workers'
        self.spool = spool
        self.cfg = cfg
        self.once = once
        self.reload_config = reload_config  # for SIGHUP
        # () -> the allowed source roots now, folders granted by `podspool submit` included; None when the
        # configuration names them (grants do not apply)
        self.source_roots = source_roots
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.notifier = Notifier()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._waiter = Waiter()
        self._last_status = 0.0
        # the owners of the state, each given only what it works with
        config = self.config
        self.observers = Observers()
        self.executor: Executor = executor or LocalExecutor(cfg, str(spool.state), dict(secrets or {}),
                                                            spool.clean_temps)
        self.disk = DiskPause(lambda: self.cfg.limits.disk_retry_s)
        self.episodes = EpisodeBook(loader=recovery.manifest_loader(spool))
        self.batches = BatchBook(spool, cfg.limits.checkpoint_every, self.episodes, self.observers)
        self.upkeep = Upkeep(spool, config, self.episodes, self.batches, self.disk)
        self.dispatcher = Dispatcher(spool, config, self.episodes, self.batches, self.executor, self.disk)
        self.recorder = Recorder(spool, config, self.episodes, self.batches, self.executor, self.disk,
                                 self.observers, result_came=self.dispatcher.result_came,
                                 retire=self.upkeep.retire_wav)
        self.view = LoopView(spool, self.episodes, self.batches, self.executor, self.recorder.api_calls)
        self.inbox = Inbox(spool.inbox, cfg.limits.inbox_settle_s, cfg.limits.inbox_rescan_s, self._wake)

    def config(self) -> Config:
        """The configuration now (SIGHUP and granted folders replace it): the owners read it through this."""
        return self.cfg

    # ---- life ---------------------------------------------------------------------------------

    def recover(self) -> None:
        recovery.recover(self.spool, self.episodes, self.batches)
        for bid in list(self.batches.by_id):
            self._after_change(bid)
        logger.info("recovery: {} episodes in {} batches ({})", len(self.episodes), len(self.batches.by_id),
                    counts_line(self.view))

    def run(self) -> int:
        self._install_signals()
        self._start()
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
                self.observers.emit("on_tick", lambda: snapshot(self.view, self.cfg, self.stopping))
                self._take_news()
                if self.once and self._nothing_left():
                    logger.info("--once: nothing left to run ({})", counts_line(self.view))
                    break
                self._wait(TICK_S)
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        """Recover, take the inbox and start the workers, the workers booting meanwhile."""
        self.executor.boot()
        self.recover()
        if not self.once:  # --once takes the inbox as it is at the start, and nothing after
            self.inbox.start_watching()
        queued = len(self.episodes) + accept.episodes_waiting(self.spool, self.cfg) if self.once else None
        self.executor.prepare(queued)
        self._take_inbox(force=True)
        first = {ep.location for ep in self.episodes if ep.location in STAGE_NAMES}
        self.executor.start(first, once=self.once, queued=len(self.episodes))
        self.notifier.send(READY=1, STATUS=counts_line(self.view))
        logger.info("podspool ready: spool {} (pid {})", self.spool.root, os.getpid())

    def _reap_and_dispatch(self) -> None:
        """The tick's results, and the marks of long-running phases, saved in ONE group commit. A start
        writes nothing (dispatcher.py), so the workers those results freed get their next episodes before
        the commit and work while it syncs; what the results made ready starts once renamed; then the
        last tick's results, durable now, are reported (Recorder.save). Pending costs count against their
        batch's budget meanwhile; checkpoints that reporting makes due join the next group."""
        group = self.recorder.begin_tick()
        results = self.recorder.plan(self.recorder.take(), group)
        self.dispatcher.mark_running(group)
        self._dispatch()
        durable = self.recorder.save(results, group)
        self._dispatch()
        self.recorder.report(durable)
        self._take_news()  # a busy tick (a batch completing) must not hold up a new manifest

    def _dispatch(self) -> None:
        if not self.stopping:
            self.dispatcher.run()

    def _drained(self) -> bool:
        if not self.executor.in_flight():
            return True
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            for task in self.executor.abandon():
                logger.bind(batch=task.episode.batch_id, episode=task.episode.episode_id, stage=task.stage).warning(
                    "shutdown grace over: stopping {}; it runs again from the start of {} next time",
                    task.episode.episode_id, task.stage)
                self._stopped(task.episode.episode_id, task.stage)
            return True
        return False

    def _stopped(self, eid: str, stage: str) -> None:
        ep = self.episodes.get(eid)
        if ep is not None:
            self.episodes.stopped(ep, stage)

    def _nothing_left(self) -> bool:
        """--once: nothing runs, and nothing waits that is not held by its budget."""
        if self.executor.in_flight() or self.recorder.busy:
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
        def handler(signum: int, frame: FrameType | None) -> None:
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
        self._set_config(cfg)
        logger.info("SIGHUP: configuration reloaded; workers restart as they finish their tasks")

    def _set_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self.executor.reconfigure(cfg)

    # ---- inbox and control requests ---------------------------------------------------------

    def _take_news(self) -> None:
        """Between the loop's steps: a manifest that arrived meanwhile (one non-blocking read when none did)."""
        if not self.once and not self.stopping:
            self._take_inbox()

    def _take_inbox(self, force: bool = False) -> None:
        if self.disk.active():
            return
        paths = self.spool.inbox_candidates() if force else self.inbox.due()
        if force and self.once:
            paths = self.inbox.wait_quiet(paths)
        if paths:
            self._learn_granted_roots()
        for path in sorted(paths):
            try:
                taken = accept.take(self.spool, self.cfg, path)
            except OSError as exc:
                self.disk.trouble("taking " + path.name, exc)
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
        self._set_config(self.cfg.model_copy(
            update={"research": self.cfg.research.model_copy(update={"source_roots": now})}))
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

    def apply_request(self, body: dict[str, object]) -> list[str]:
        archive = body.get("archive")
        if isinstance(archive, dict):  # `podspool archive` while this daemon runs
            return self.upkeep.archive(archive.get("batch"), archive.get("older_than_days"))
        if isinstance(body.get("review"), dict):  # approve, reject, redo
            moved = review.apply(body, self.spool, self.cfg, self.episodes, self.batches)
            for bid in list(self.batches.by_id):  # a rejection to failed/ may complete its batch
                self._after_change(bid)
            return [eid for eid, _ in moved]
        return retry.apply(body, self.spool, self.episodes, self.batches)

    # ---- saving -----------------------------------------------------------------------------

    def _after_change(self, bid: str) -> None:
        try:
            self.batches.after_change(bid, self.recorder.next_group)
        except OSError as exc:
            self.disk.trouble(f"writing the batch files of {bid}", exc)

    def _write_sessions(self, force: bool = False) -> None:
        try:
            self.batches.write_sessions(force)
        except OSError as exc:
            self.disk.trouble("writing a batch's session", exc)

    def _keep_artifacts(self, outcomes: list[TaskOutcome]) -> None:
        """Stopping with results the disk could not record: their artifacts, at their workers' temp names,
        need no space to be renamed in, so the next start's stages reuse them instead of paying again."""
        group = self.recorder.new_group()
        for out in outcomes:
            group.adopt(out.files, out.episode_id)
        if self.recorder.commit(group, "keeping the artifacts of unsaved results"):
            logger.warning("stopping: {} result(s) could not be kept for reuse; they run again", len(outcomes))

    # ---- status -----------------------------------------------------------------------------

    def _notify(self) -> None:
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if now - self._last_status >= 1.0:
            self._last_status = now
            self.notifier.send(WATCHDOG=1, STATUS=counts_line(self.view))

    # ---- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.recorder.settle_last()
        self.inbox.stop()
        for task in self.executor.abandon():
            self._stopped(task.episode.episode_id, task.stage)
        self.executor.stop()
        held, self.recorder.held = self.recorder.held, []
        if held and not self.disk.active():
            self.recorder.record(held)
        elif held:
            self._keep_artifacts(held)
        self.recorder.commit_next()
        self._write_sessions(force=True)
        signal.set_wakeup_fd(-1)
        self.observers.close()
        logger.info("podspool stopped ({})", counts_line(self.view))
