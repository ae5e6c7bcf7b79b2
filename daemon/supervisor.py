"""The supervisor: the one process that owns the spool's state.

It admits batches from the inbox, feeds episodes to the stage workers, moves episode folders, writes
every manifest, checkpoint and summary, and survives anything a worker does. Signal handlers only
enqueue; the main loop does the work.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon import requests as control
from podspool.daemon.config import Config
from podspool.daemon.dashboard import render_text
from podspool.daemon.guards import MemoryGuard, enforce_time_limits
from podspool.daemon.hooks import Hook
from podspool.daemon.inbox import Inbox
from podspool.daemon.intake import ManifestProblem, check_file
from podspool.daemon.models import EpisodeError, EpisodeManifest, PhaseTiming, utcnow
from podspool.daemon.notify import Notifier
from podspool.daemon.scheduler import Waiting, batch_stage_cap, needs_admission, order_key, retry_delay
from podspool.daemon.session import CHECKPOINT_RE, checkpoint_doc, derive, summary_doc
from podspool.daemon.spool import QUEUES, Spool
from podspool.daemon.workers import Task, Worker, WorkerSpec
from podspool.stages import fsio
from podspool.stages.base import STAGE_NAMES, EpisodeInput, StageName, StageResult

NEXT = {"research": "production", "production": "audio", "audio": "done"}
SESSION_WRITE_EVERY_S = 1.0


@dataclass
class BatchState:
    meta: dict[str, Any]
    checkpoints: list[str] = field(default_factory=list)
    dirty: bool = True
    summary_for: tuple[int, int] | None = None  # (completed, failed) the summary was written for
    held_logged: bool = False

    @property
    def seq(self) -> float:
        return float(self.meta.get("seq") or 0.0)


def _disk_errno(error: str | None) -> int | None:
    """The errno of a stage failure that was the disk's fault (full, over quota, read-only), else None.

    A stage reports an unexpected OSError as text ("OSError: [Errno 28] No space left on device ...",
    stages/registry.py), so this reads it back from there.
    """
    found = re.search(r"\[Errno (\d+)\]", error or "")
    code = int(found.group(1)) if found else None
    return code if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else None


class Supervisor:
    def __init__(self, spool: Spool, cfg: Config, *, once: bool = False, secrets: dict[str, str] | None = None,
                 reload_config: Any = None) -> None:
        self.spool = spool
        self.cfg = cfg
        self.once = once
        self.secrets = dict(secrets or {})
        self.reload_config = reload_config  # () -> Config, for SIGHUP
        self.episodes: dict[str, Waiting] = {}
        self.batches: dict[str, BatchState] = {}
        self.workers: dict[StageName, list[Worker]] = {s: [] for s in STAGE_NAMES}
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.unsaved: deque[tuple[Worker | None, str, StageName, StageResult]] = deque()
        self.after_change_due: set[str] = set()  # batches whose checkpoint/summary a full disk held back
        self.disk_paused_until = 0.0
        self.memory = MemoryGuard()
        self.task_seq = 0
        self.notifier = Notifier()
        self.inbox = Inbox(spool.inbox, cfg.limits.inbox_settle_s, cfg.limits.inbox_rescan_s)
        self._last_session_write = 0.0
        self._last_status = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.hooks: list[Hook] = []
        self.api_calls: Counter[str] = Counter()  # "api:outcome" -> attempts, since this daemon started

    # ---- start-up ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild every queue from the folders, as Postfix does after a crash."""
        self.spool.ensure()
        if not self.spool.wait_for_old_workers():
            logger.warning("workers of an earlier daemon are still alive after 10 s; going on")
        finished = self.spool.recover_intake()
        for bid in finished:
            logger.info("recovery: finished the intake of batch {}", bid)
        for bid in self.spool.batch_ids():
            self._load_batch(bid)
        seen: dict[str, str] = {}
        for loc in self.spool.scan():
            removed = self.spool.clean_temps(loc.folder)
            if removed:
                logger.info("recovery: removed {} temp file(s) in {}", removed, loc.folder)
            if loc.episode_id in seen:
                logger.error("recovery: {} stands in both {} and {}; keeping {}", loc.episode_id,
                             seen[loc.episode_id], loc.location, seen[loc.episode_id])
                continue
            seen[loc.episode_id] = loc.location
            m = self._read_or_rebuild(loc.folder, loc.episode_id)
            if m is None:
                continue
            self._normalise(m, loc.location)
        # Temp files of a dead writer also sit outside episode folders: the runtime view and metrics under
        # state/, error notes in rejected/ (found by the crash-point sweep: they were never removed).
        for folder in (*(self.spool.batch_dir(bid) for bid in self.batches), self.spool.state, self.spool.rejected,
                       self.spool.root, self.spool.inbox):
            self.spool.clean_temps(folder)
        # A crash after the last episode's move but before its checkpoint or summary was written would
        # leave a finished batch without them forever (nothing else is recorded for it): write what is due.
        for bid, b in self.batches.items():
            if (self.spool.batch_dir(bid) / f"{bid}_summary.json").exists():
                session = self._session(bid)
                b.summary_for = (session["completed"], session["failed"])  # already written: do not announce again
            if self.spool.batch_dir(bid).is_dir():
                self._after_change(bid)
        logger.info("recovery: {} episodes in {} batches ({})", len(self.episodes), len(self.batches),
                    self._counts_line())

    def _load_batch(self, bid: str) -> None:
        meta = self.spool.read_session(bid)
        static: dict[str, Any] = {k: meta[k] for k in ("batch_id", "accepted_at", "seq", "priority", "budget_usd", "strategy",
                                       "source", "start_time", "end_time") if k in meta}
        static.setdefault("batch_id", bid)
        if "seq" not in static:
            static["seq"] = os.stat(self.spool.batch_dir(bid)).st_mtime
        if "strategy" not in static or "budget_usd" not in static:
            batch = self.spool.read_batch(bid)
            if batch is not None:
                static.setdefault("strategy", batch.effective_strategy())
                static.setdefault("budget_usd", batch.budget_usd)
                static.setdefault("priority", batch.priority)
        cps = sorted((n for n in os.listdir(self.spool.batch_dir(bid)) if CHECKPOINT_RE.match(n)),
                     key=lambda n: int(CHECKPOINT_RE.match(n).group("n")))  # type: ignore[union-attr]
        self.batches[bid] = BatchState(meta=static, checkpoints=cps)

    def _read_or_rebuild(self, folder: Path, eid: str) -> EpisodeManifest | None:
        try:
            return self.spool.read_manifest(folder)
        except (FileNotFoundError, ValueError) as exc:
            # The manifest is written whole, so this is outside damage; rebuild it from the batch.
            for bid in self.batches:
                batch = self.spool.read_batch(bid)
                if batch is None:
                    continue
                for ep in batch.all_episodes():
                    if f"ep_{ep.number:03d}_{bid}" == eid:
                        logger.warning("recovery: {} had an unreadable manifest ({}); rebuilt from batch.json",
                                       eid, type(exc).__name__)
                        m = EpisodeManifest(episode_number=ep.number, session_id=eid, batch_id=bid,
                                            topic=ep.topic, title=ep.title, notes=ep.notes,
                                            sources=list(ep.sources), priority=batch.priority)
                        self.spool.write_manifest(folder, m)
                        return m
            logger.error("recovery: {} has no readable manifest and no batch; left alone", folder)
            return None

    def _normalise(self, m: EpisodeManifest, location: str) -> None:
        """Finish a move a crash interrupted; an in-progress phase runs again from its start."""
        eid = m.session_id
        if m.batch_id not in self.batches:
            self._load_batch_placeholder(m.batch_id)
        if location in QUEUES:
            stage: StageName = location  # type: ignore[assignment]
            if m.status == "failed":
                location = self._move(m, location, "failed")
            elif m.phases.get(stage) == "done":
                target = NEXT[stage]
                if target == "done":
                    m.status = "done"
                    m.finished_at = m.finished_at or utcnow()
                    self.spool.write_manifest(self.spool.folder(location, eid), m)
                location = self._move(m, location, target)
                if location in QUEUES:
                    return self._normalise(m, location)
            elif m.phases.get(stage) == "in_progress":
                m.phases.set(stage, "pending")
                logger.bind(batch=m.batch_id, episode=eid, stage=stage).info(
                    "recovery: {} was in flight; it runs again from the start of {}", eid, stage)
                self.spool.write_manifest(self.spool.folder(location, eid), m)
        self.episodes[eid] = Waiting(manifest=m, location=location)

    def _load_batch_placeholder(self, bid: str) -> None:
        self.batches[bid] = BatchState(meta={"batch_id": bid, "seq": time.time()})

    # ---- the main loop ----------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self.recover()
        self.inbox.start_watching()
        self._take_inbox(force=True)
        self._prespawn()
        self.notifier.send(READY=1, STATUS=self._counts_line())
        logger.info("podspool ready: spool {} (pid {})", self.spool.root, os.getpid())
        try:
            while True:
                self._handle_signals()
                if self.stopping and self._drained():
                    break
                if not self.once and not self.stopping:
                    self._take_inbox()
                    self._take_requests()
                self._save_unsaved()
                self.memory.check((w for ws in self.workers.values() for w in ws), self.cfg.limits)
                enforce_time_limits(self.workers, self.cfg)
                self._dispatch()
                self._write_sessions()
                self._notify()
                self._emit("on_tick", self.snapshot)
                if self.once and self._nothing_left():
                    logger.info("--once: nothing left to run ({})", self._counts_line())
                    break
                self._wait(0.5)
        finally:
            self._shutdown()
        return 0

    def _drained(self) -> bool:
        busy = [w for ws in self.workers.values() for w in ws if w.busy]
        if not busy:
            return True
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            for w in busy:
                for task in w.tasks.values():
                    logger.bind(batch=task.episode.batch_id, episode=task.episode_id, stage=w.stage).warning(
                        "shutdown grace over: stopping {}; it runs again from the start of {} next time",
                        task.episode_id, w.stage)
                self._abandon(w)
            return True
        return False

    def _nothing_left(self) -> bool:
        if any(w.busy for ws in self.workers.values() for w in ws) or self.unsaved:
            return False
        # anything still queued and not held by its budget will run, now or after its backoff
        return not any(w.location in QUEUES and not self._over_budget(w.batch_id) for w in self.episodes.values())

    def _wait(self, timeout: float) -> None:
        handles: list[Any] = [self._wake_r]
        for ws in self.workers.values():
            for w in ws:
                if w.conn is not None:
                    handles.append(w.conn)
                if w.process is not None:
                    handles.append(w.process.sentinel)
        ready = wait_for(handles, timeout)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                pass
        self._collect()

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
        for ws in self.workers.values():
            for w in ws:
                w.recycle = True  # picks up new providers and rate limits after its current task
                w.meta["recycle_why"] = "configuration reloaded"
        logger.info("SIGHUP: configuration reloaded; workers restart as they finish their tasks")

    # ---- inbox and control requests ---------------------------------------------------------

    def _take_inbox(self, force: bool = False) -> None:
        if time.monotonic() < self.disk_paused_until:
            return
        paths = self.spool.inbox_candidates() if force else self.inbox.due()
        if force and self.once:
            paths = self._settle(paths)
        for path in sorted(paths):
            self._take_one(path)

    def _settle(self, paths: list[Path]) -> list[Path]:
        """--once: a file written moments ago gets settle_s to stand still before it is read."""
        settle = self.cfg.limits.inbox_settle_s
        deadline = time.monotonic() + settle * 3
        while time.monotonic() < deadline:
            young = [p for p in paths if p.exists() and time.time() - p.stat().st_mtime < settle]
            if not young:
                break
            time.sleep(0.1)
        return [p for p in paths if os.path.lexists(p)]

    def _take_one(self, path: Path) -> None:
        if not os.path.lexists(path):
            return
        roots = self._source_roots()
        try:
            if not path.name.endswith(".json"):
                raise ManifestProblem([f"only *.json batch manifests are read from the inbox, not {path.name!r}"])
            checked = check_file(path, self.cfg.limits.max_manifest_bytes, roots)
            manifest = checked.manifest
            if manifest.batch_id and self.spool.known_batch(manifest.batch_id):
                if self.spool.is_leftover_of_accepted(path, checked.raw, manifest.batch_id):
                    logger.info("inbox: {} was already accepted as {}; removing it", path.name, manifest.batch_id)
                    self.spool.remove_inbox_file(path)
                    return
                raise ManifestProblem([f"batch_id: {manifest.batch_id!r} is already known"])
            if manifest.batch_id is None and self.spool.is_leftover_of_accepted(path, checked.raw, None):
                self.spool.remove_inbox_file(path)
                return
            bid, made = self.spool.accept(path, manifest, checked.raw, time.time(), roots)
        except ManifestProblem as exc:
            try:
                target = self.spool.reject(path, exc.problems)
                logger.warning("inbox: rejected {} -> {}: {}", path.name, target.name, "; ".join(exc.problems))
            except OSError as err:
                self._disk_trouble("rejecting " + path.name, err)
            return
        except OSError as exc:
            self._disk_trouble("accepting " + path.name, exc)
            return
        finally:
            self.inbox.forget(path.name)
        self._load_batch(bid)
        for m in made:
            self.episodes[m.session_id] = Waiting(manifest=m, location="research")
        logger.bind(batch=bid).info("inbox: accepted {} as batch {} ({} episodes, strategy {}, priority {})",
                                    path.name, bid, len(made), self.batches[bid].meta.get("strategy"),
                                    self.batches[bid].meta.get("priority"))

    def _source_roots(self) -> list[Path]:
        roots = [Path(r) for r in self.cfg.research.source_roots] or [Path.cwd()]
        return [r if r.is_absolute() else Path.cwd() / r for r in roots]

    def _take_requests(self) -> None:
        for req in control.pending(self.spool):
            try:
                self.apply_request(req.body)
            finally:
                control.done(req)

    def apply_request(self, body: dict[str, Any]) -> list[str]:
        """A `podspool retry` request: new budget and/or failed episodes back to their stage."""
        out: list[str] = []
        bid = body.get("batch")
        if bid and body.get("budget") is not None and bid in self.batches:
            self.batches[bid].meta["budget_usd"] = float(body["budget"])
            self.batches[bid].dirty = True
            self.batches[bid].held_logged = False
            logger.bind(batch=bid).info("budget of {} set to ${:.2f}", bid, float(body["budget"]))
        wanted = set(body.get("episodes") or [])
        for eid, w in list(self.episodes.items()):
            if w.location != "failed":
                continue
            if not (body.get("all") or eid in wanted or (bid and w.batch_id == bid and not wanted)):
                continue
            if bid and w.batch_id != bid:
                continue
            if not (body.get("all") or wanted or (bid and body.get("budget") is None)):
                continue
            self._retry_failed(w)
            out.append(eid)
        return out

    def _retry_failed(self, w: Waiting) -> None:
        m = w.manifest
        stage = m.current_stage() or "audio"
        m.status = "pending"
        m.phases.set(stage, "pending")
        m.attempts = 0
        m.retry_rounds += 1
        m.not_before = None
        m.finished_at = None
        self.spool.write_manifest(self.spool.folder("failed", m.session_id), m)
        w.location = self._move(m, "failed", stage)
        self.batches[m.batch_id].dirty = True
        self.batches[m.batch_id].summary_for = None
        logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage).info(
            "retry: {} is back in {} (retry round {})", m.session_id, stage, m.retry_rounds)

    # ---- dispatch ---------------------------------------------------------------------------

    def _admitted(self) -> int:
        return sum(1 for w in self.episodes.values() if w.location in QUEUES and w.manifest.status == "in_progress")

    def _over_budget(self, bid: str) -> bool:
        b = self.batches.get(bid)
        budget = b.meta.get("budget_usd") if b else None
        if budget is None:
            return False
        spent = sum(w.manifest.costs.total for w in self.episodes.values() if w.batch_id == bid)
        return spent >= float(budget)

    def _pool_size(self, stage: StageName) -> int:
        return int(getattr(self.cfg.concurrency, stage))

    def _dispatch(self) -> None:
        if self.stopping or time.monotonic() < self.disk_paused_until:
            return
        now = time.time()
        admitted = self._admitted()
        over = {bid: self._over_budget(bid) for bid in self.batches}
        for stage in ("audio", "production", "research"):
            pool = self.workers[stage]
            # Retire idle workers marked for recycling first, so their slots count as free below: when
            # every worker of a stage was marked (SIGHUP, max_tasks_per_child, the memory guard), nothing
            # was ever dispatched again and the batch stalled forever (found by the SIGHUP test).
            self._retire_idle(stage)
            free = sum(1 for wk in pool if wk.alive() and not wk.recycle and wk.can_take()) \
                + max(0, self._pool_size(stage) - len(pool))
            if free <= 0:
                continue
            running_by_batch: dict[str, int] = {}
            for wk in pool:
                for task in wk.tasks.values():
                    if task.task_id not in wk.freed:  # a task past its call no longer holds a slot
                        bid = self.episodes[task.episode_id].batch_id
                        running_by_batch[bid] = running_by_batch.get(bid, 0) + 1
            waiting = [w for w in self.episodes.values() if w.location == stage and not w.running]
            waiting.sort(key=lambda w: order_key(w, self.batches[w.batch_id].seq))
            for w in waiting:
                if free <= 0:
                    break
                m = w.manifest
                batch = self.batches[w.batch_id]
                if over.get(w.batch_id):
                    if not batch.held_logged:
                        batch.held_logged = True
                        batch.dirty = True
                        logger.bind(batch=w.batch_id).warning(
                            "batch {} reached its budget of ${:.2f}: its waiting episodes are held "
                            "(raise it with: podspool retry --batch {} --budget USD)",
                            w.batch_id, float(batch.meta["budget_usd"]), w.batch_id)
                    continue
                if m.not_before and m.not_before > now:
                    continue
                cap = batch_stage_cap(batch.meta.get("strategy"), stage, self._pool_size(stage),
                                      self.cfg.concurrency_explicit)
                if running_by_batch.get(w.batch_id, 0) >= cap:
                    continue
                if needs_admission(m):
                    if self.memory.paused or admitted >= self.cfg.limits.max_sessions_in_memory:
                        continue
                    admitted += 1
                if not self._start(w, stage):
                    return
                free -= 1
                running_by_batch[w.batch_id] = running_by_batch.get(w.batch_id, 0) + 1

    def _prespawn(self) -> None:
        """Start the pools up front (as gunicorn does), so no stage's first task waits for a spawn.

        Spawn is safe after the inbox observer's thread started: it never forks this process.
        """
        queued = sum(1 for w in self.episodes.values() if w.location in QUEUES)
        for stage in STAGE_NAMES:
            want = min(self._pool_size(stage), queued if self.once else self._pool_size(stage))
            while len(self.workers[stage]) < want:
                w = Worker(spec=self._spec(stage))
                w.start()
                self.workers[stage].append(w)
        # Like gunicorn, let the workers that have work now boot before work starts (a booting worker
        # holds a task it cannot start); later stages go on booting while the first episodes run.
        started = time.monotonic()
        first = {w.location for w in self.episodes.values() if w.location in QUEUES}
        while time.monotonic() - started < 60:
            workers = [w for stage in first for w in self.workers[stage]]  # type: ignore[index]
            if all(w.ready for w in workers) or not any(w.alive() for w in workers):
                break
            self._wait(0.1)
        if first:
            logger.info("workers ready in {:.2f}s", time.monotonic() - started)

    def _retire_idle(self, stage: StageName) -> None:
        pool = self.workers[stage]
        for w in list(pool):
            if w.busy:
                continue
            if w.process is None:
                # abandoned (e.g. its pipe broke while a task was handed over): an empty handle that
                # filled a slot for good and stalled the stage (found by the crash sweep)
                pool.remove(w)
            elif w.recycle or not w.alive():
                pid, done, why = w.process.pid, w.tasks_done, w.meta.get("recycle_why", "not alive")
                w.stop()
                pool.remove(w)
                logger.info("{} worker {} recycled after {} task(s): {}", stage, pid, done, why)

    def _idle_worker(self, stage: StageName) -> Worker | None:
        pool = self.workers[stage]
        for w in sorted(pool, key=lambda w: len(w.tasks)):  # an idle worker before one that is saving
            if w.alive() and not w.recycle and w.can_take():
                return w
        for w in list(pool):
            if not w.busy and (not w.alive() or w.recycle):
                w.stop()
                pool.remove(w)
        if len(pool) < self._pool_size(stage):
            w = Worker(spec=self._spec(stage))
            w.start()
            pool.append(w)
            return w
        return None

    def _spec(self, stage: StageName) -> WorkerSpec:
        return WorkerSpec(stage=stage, settings=self.cfg.stage_settings(), state_dir=str(self.spool.state),
                          rates=self.cfg.rate_limits.parsed(), secrets=self.secrets, supervisor_pid=os.getpid(),
                          time_limit_s=float(getattr(self.cfg, stage).time_limit_s))

    def _start(self, w: Waiting, stage: StageName) -> bool:
        worker = self._idle_worker(stage)
        if worker is None:
            return False
        m = w.manifest
        before = m.model_copy(deep=True)
        if m.phases.get(stage) == "failed" or m.attempts == 0:
            m.attempts += 1
        m.status = "in_progress"
        m.phases.set(stage, "in_progress")
        m.not_before = None
        m.timings[stage] = PhaseTiming(started=utcnow(), started_mono=time.monotonic())
        folder = self.spool.folder(stage, m.session_id)
        try:
            self.spool.write_manifest(folder, m)
        except OSError as exc:
            w.manifest = before  # not started after all: a full disk must not use up its attempts
            self._disk_trouble(f"starting {m.session_id}", exc)
            return False
        batch = self.batches[m.batch_id]
        if not batch.meta.get("start_time"):
            batch.meta["start_time"] = utcnow()
        self.task_seq += 1
        episode = EpisodeInput(episode_id=m.session_id, batch_id=m.batch_id, number=m.episode_number,
                               topic=m.topic, title=m.title, notes=m.notes, sources=tuple(m.sources),
                               attempt=m.attempts)
        try:
            worker.submit(Task(self.task_seq, m.session_id, folder, time.monotonic(), episode))
            if worker.tasks_started >= self.cfg.limits.max_tasks_per_child:
                # counted when handed over, not when done: a worker that overlaps two tasks must not
                # take a third past its limit
                worker.recycle = True
                worker.meta["recycle_why"] = f"max_tasks_per_child = {self.cfg.limits.max_tasks_per_child}"
        except (OSError, ValueError) as exc:
            logger.error("could not hand {} to a {} worker: {}", m.session_id, stage, exc)
            worker.tasks.pop(self.task_seq, None)
            # The worker died under us. Abandoning it (as at shutdown) made its other task vanish: no failed
            # attempt on record and its temp file left behind (found by the crash sweep). Make sure it is
            # dead and let _collect record its death like any other.
            worker.recycle = True
            if worker.process is not None and worker.process.is_alive():
                worker.process.kill()
            return False
        w.running = True
        batch.dirty = True
        logger.bind(batch=m.batch_id, episode=m.session_id, stage=stage).info(
            "{} started (attempt {})", stage, m.attempts)
        return True

    # ---- results ----------------------------------------------------------------------------

    def _collect(self) -> None:
        for stage, pool in self.workers.items():
            for worker in list(pool):
                self._drain_messages(worker)
                if worker.process is not None and not worker.process.is_alive():
                    self._drain_messages(worker)
                    reason = worker.exit_reason()
                    if worker.term_sent_at is not None:
                        reason = f"timed out after {getattr(self.cfg, stage).time_limit_s}s ({reason})"
                    for task in worker.tasks.values():
                        logger.bind(batch=task.episode.batch_id, episode=task.episode_id, stage=stage).error(
                            "{} worker (pid {}) died: {}", stage, worker.process.pid, reason)
                        # a worker killed mid-write leaves its temp file; nobody else would ever remove it
                        self.spool.clean_temps(task.folder)
                        self._finish(task.episode_id, stage, StageResult(ok=False, error=reason))
                    worker.tasks.clear()
                    worker.close()
                    pool.remove(worker)

    def _drain_messages(self, worker: Worker) -> None:
        conn = worker.conn
        while conn is not None:
            try:
                if not conn.poll():
                    return
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "log":
                _, level, text, extra = msg
                logger.bind(**extra).log(level, text)
            elif msg[0] == "ready":
                worker.ready = True
            elif msg[0] == "free":
                worker.freed.add(msg[1])
            elif msg[0] == "result":
                _, task_id, result = msg
                task = worker.tasks.pop(task_id, None)
                worker.freed.discard(task_id)
                if task is None:
                    continue
                worker.tasks_done += 1
                self._finish(task.episode_id, worker.stage, result)

    def _finish(self, eid: str, stage: StageName, result: StageResult) -> None:
        self.api_calls.update(result.details.get("api_calls") or {})
        try:
            self._record(eid, stage, result)
        except OSError as exc:
            self.unsaved.append((None, eid, stage, result))
            self._disk_trouble(f"saving the result of {eid}", exc)

    def _save_unsaved(self) -> None:
        for bid in list(self.after_change_due):
            if time.monotonic() < self.disk_paused_until:
                return
            try:
                self._after_change(bid)
            except OSError as exc:
                self._disk_trouble(f"writing the batch files of {bid}", exc)
                return
            self.after_change_due.discard(bid)
        while self.unsaved and time.monotonic() >= self.disk_paused_until:
            _, eid, stage, result = self.unsaved[0]
            try:
                self._record(eid, stage, result)
            except OSError as exc:
                self._disk_trouble(f"saving the result of {eid}", exc)
                return
            self.unsaved.popleft()

    def _record(self, eid: str, stage: StageName, result: StageResult) -> None:
        w = self.episodes[eid]
        before = w.manifest.model_copy(deep=True)
        try:
            self._apply_result(eid, stage, result)
        except OSError as exc:
            if w.location != stage:
                # the folder moved, so the result is on disk; only the batch files are behind
                self.after_change_due.add(w.batch_id)
                self._disk_trouble(f"writing the batch files of {w.batch_id}", exc)
                return
            # Nothing of this result is on disk for good: undo it in memory, or saving it again later adds
            # its cost (and error) twice, and the episode, seen as not running, could be started again.
            w.manifest = before
            w.running = True
            raise

    def _apply_result(self, eid: str, stage: StageName, result: StageResult) -> None:
        w = self.episodes[eid]
        m = w.manifest
        log = logger.bind(batch=m.batch_id, episode=eid, stage=stage)
        folder = self.spool.folder(stage, eid)
        timing = m.timings.setdefault(stage, PhaseTiming())
        m.costs.add(stage, result.cost_usd)  # failed attempts cost money too
        batch = self.batches[m.batch_id]
        batch.dirty = True
        if result.ok:
            m.phases.set(stage, "done")
            timing.finished = utcnow()
            if timing.started_mono is not None:
                timing.seconds = round(time.monotonic() - timing.started_mono, 3)
            if stage == "production":
                m.quality = result.quality
                m.quality_scores = dict(result.quality_scores)
                m.revisions = result.revisions
            if result.details:
                m.details[stage] = result.details
            target = NEXT[stage]
            if target == "done":
                m.status = "done"
                m.finished_at = utcnow()
            self.spool.write_manifest(folder, m)
            w.running = False
            w.location = self._move(m, stage, target)
            log.info("{} done in {}s{} (${:.4f}){}", stage, timing.seconds, " (reused)" if result.reused else "",
                     result.cost_usd, " -> done" if target == "done" else "")
            if target == "done":
                self._emit("on_episode_done", m)
        elif (disk := _disk_errno(result.error)) is not None:
            # The worker could not save its artifacts (disk full, read-only): the disk failed, not the
            # episode. Burning its retries now would send it to failed/ within a second; instead the
            # attempt is not counted, and it runs again when the disk recovers.
            m.phases.set(stage, "pending")
            m.status = "pending"
            self.spool.write_manifest(folder, m)
            w.running = False
            log.warning("{} could not save its work ({}); it runs again once the disk recovers", stage,
                        result.error)
            self._disk_trouble(f"{stage} of {eid}", OSError(disk, os.strerror(disk)))
        else:
            m.errors.append(EpisodeError(phase=stage, attempt=m.attempts, at=utcnow(),
                                         error=str(result.error or "unknown error")[:4000]))
            m.phases.set(stage, "failed")
            final = not result.retryable or m.attempts >= self.cfg.limits.max_retries + 1
            if final:
                m.status = "failed"
                m.finished_at = utcnow()
                self.spool.write_manifest(folder, m)
                w.running = False
                w.location = self._move(m, stage, "failed")
                log.error("{} failed for good after {} attempt(s): {}", stage, m.attempts, result.error)
                self._emit("on_episode_failed", m)
            else:
                delay = retry_delay(m.attempts, self.cfg.limits.retry_backoff_s, self.cfg.limits.retry_backoff_max_s)
                m.status = "pending"
                m.not_before = time.time() + delay
                self.spool.write_manifest(folder, m)
                w.running = False
                log.warning("{} attempt {} failed: {}; retrying in {:.1f}s, after the rest of the batch",
                            stage, m.attempts, result.error, delay)
        self._after_change(m.batch_id)

    def _move(self, m: EpisodeManifest, src: str, dst: str) -> str:
        self.spool.move(m.session_id, src, dst)
        return dst

    def _abandon(self, worker: Worker) -> None:
        """Stop a worker mid-task (shutdown); its episodes' phases are not marked failed."""
        tasks = list(worker.tasks.values())
        worker.tasks.clear()
        worker.freed.clear()
        worker.kill()
        for task in tasks:
            self.episodes[task.episode_id].running = False
            self.spool.clean_temps(task.folder)  # the killed worker's half-written file

    # ---- batches ----------------------------------------------------------------------------

    def _batch_episodes(self, bid: str) -> list[Waiting]:
        return [w for w in self.episodes.values() if w.batch_id == bid]

    def _session(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        eps = self._batch_episodes(bid)
        running = {w.episode_id for w in eps if w.running}
        return derive(b.meta, [(w.location, w.manifest) for w in eps], running, b.checkpoints)

    def _after_change(self, bid: str) -> None:
        b = self.batches[bid]
        session = self._session(bid)
        due = session["completed"] // self.cfg.limits.checkpoint_every
        while len(b.checkpoints) < due:
            n = len(b.checkpoints) + 1
            name = f"{bid}_checkpoint_{n}.json"
            b.checkpoints.append(name)
            session["checkpoints"] = list(b.checkpoints)
            fsio.write_json(self.spool.batch_dir(bid) / name, checkpoint_doc(session, n))
            logger.bind(batch=bid).info("checkpoint {} written ({} episodes complete)", name, session["completed"])
        state = (session["completed"], session["failed"])
        if session["state"] == "complete" and b.summary_for != state:
            b.meta["end_time"] = session["end_time"]
            session = self._session(bid)
            self._write_batch_files(bid, session)
            summary = summary_doc(session, [w.manifest for w in self._batch_episodes(bid)])
            fsio.write_json(self.spool.batch_dir(bid) / f"{bid}_summary.json", summary)
            b.summary_for = state
            self._emit("on_batch_complete", session, [w.manifest for w in self._batch_episodes(bid)])
            logger.bind(batch=bid).info("batch {} complete: {} done, {} failed, ${:.4f}", bid, state[0], state[1],
                                        session["costs"]["total"])
        elif session["state"] != "complete":
            b.meta.pop("end_time", None)

    def _write_batch_files(self, bid: str, session: dict[str, Any] | None = None) -> None:
        session = session or self._session(bid)
        folder = self.spool.batch_dir(bid)
        fsio.write_json(folder / "session.json", session)
        fsio.write_text(folder / "dashboard.txt", render_text(session))
        self.batches[bid].dirty = False

    def _write_sessions(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_session_write < SESSION_WRITE_EVERY_S:
            return
        self._last_session_write = now
        for bid, b in self.batches.items():
            if (b.dirty or force) and self.spool.batch_dir(bid).is_dir():
                try:
                    self._write_batch_files(bid)
                except OSError as exc:
                    self._disk_trouble(f"writing the session of {bid}", exc)
                    return

    # ---- guards -----------------------------------------------------------------------------

    def _disk_trouble(self, what: str, exc: OSError) -> None:
        self.disk_paused_until = time.monotonic() + self.cfg.limits.disk_retry_s
        kind = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system",
                errno.EDQUOT: "quota exceeded"}.get(exc.errno or 0, exc.strerror or str(exc))
        logger.error("{} failed ({}); admission paused, retrying in {}s", what, kind, self.cfg.limits.disk_retry_s)

    # ---- status -----------------------------------------------------------------------------

    def _counts_line(self) -> str:
        counts: dict[str, int] = {}
        for w in self.episodes.values():
            counts[w.location] = counts.get(w.location, 0) + 1
        busy = sum(1 for ws in self.workers.values() for w in ws if w.busy)
        return (f"done {counts.get('done', 0)}, failed {counts.get('failed', 0)}, research {counts.get('research', 0)}, "
                f"production {counts.get('production', 0)}, audio {counts.get('audio', 0)}, busy workers {busy}")

    def _notify(self) -> None:
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if now - self._last_status >= 1.0:
            self._last_status = now
            self.notifier.send(WATCHDOG=1, STATUS=self._counts_line())

    def _emit(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception as exc:  # an observer must never take the pipeline down
                logger.opt(exception=exc).error("hook {}.{} failed: {}", type(hook).__name__, method, exc)

    def snapshot(self) -> dict[str, Any]:
        """A plain view of the supervisor for dashboards and metrics."""
        stages = {}
        for stage in STAGE_NAMES:
            ws = self.workers[stage]
            stages[stage] = {
                "queue": sum(1 for w in self.episodes.values() if w.location == stage and not w.running),
                "busy": sum(w.calling for w in ws),
                "saving": sum(len(w.tasks) - w.calling for w in ws),
                "processes": sum(1 for w in ws if w.alive()),
                "pool_size": self._pool_size(stage),
            }
        locations: dict[str, int] = {}
        for w in self.episodes.values():
            locations[w.location] = locations.get(w.location, 0) + 1
        return {
            "time": time.time(),
            "pid": os.getpid(),
            "spool": str(self.spool.root),
            "stopping": self.stopping,
            "admitted": self._admitted(),
            "max_sessions_in_memory": self.cfg.limits.max_sessions_in_memory,
            "memory": {"rss_bytes": self.memory.rss, "soft_mb": self.cfg.limits.memory_soft_mb,
                       "hard_mb": self.cfg.limits.memory_hard_mb, "paused": self.memory.paused},
            "rate_limits": self.cfg.rate_limits.parsed(),
            "api_calls": dict(self.api_calls),
            "stages": stages,
            "locations": locations,
            "batches": [self._session(bid) for bid in self.batches],
            "episodes": [w.manifest for w in self.episodes.values()],
        }

    # ---- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.inbox.stop()
        for ws in self.workers.values():
            for w in ws:
                if w.busy:
                    self._abandon(w)
                else:
                    w.stop()
            ws.clear()
        self._save_unsaved()
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
        logger.info("podspool stopped ({})", self._counts_line())
