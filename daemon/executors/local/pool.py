"""The local executor: long-lived worker processes per stage on this host (daemon/executors/local/workers.py).

It owns the workers' lives: pre-spawning, respawning one at a time, recycling (SIGHUP,
max_tasks_per_child, the memory guard), time limits, and turning a dead worker's tasks into failed
outcomes. The supervisor only sees the Executor protocol (daemon/executors/protocol.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.executors.local.guards import MemoryGuard, enforce_time_limits
from podspool.daemon.executors.local.messages import Done, Freed, Log, Ready
from podspool.daemon.executors.local.workers import Task, Worker, WorkerSpec
from podspool.daemon.executors.protocol import HasFileno, StageTask, TaskOutcome, WorkerView
from podspool.daemon.executors.waiter import Waiter
from podspool.stages.base import STAGE_NAMES, StageName, StageResult
from podspool.stages.settings import scaled_time_limit

BOOT_WAIT_S = 60.0


class LocalExecutor:
    rate_usage = None  # the rate windows are the spool's files (ratelimit/view.py reads them)

    def __init__(self, cfg: Config, state_dir: str, secrets: dict[str, str],
                 clean_temps: Callable[[Path], int]) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.secrets = secrets
        self.clean_temps = clean_temps  # (folder) -> int: a killed worker's half-written file
        self.pools: dict[StageName, list[Worker]] = {s: [] for s in STAGE_NAMES}
        self.memory = MemoryGuard()
        self._outcomes: list[TaskOutcome] = []
        self._waiter = Waiter()  # one poll over the pipes and exit sentinels, kept between ticks
        self._spawner: threading.Thread | None = None  # prepare's helper, until start takes its workers
        self._spawned: list[Worker] = []
        self._spawn_error: BaseException | None = None

    # ---- configuration ----------------------------------------------------------------------

    def size(self, stage: StageName) -> int:
        return int(getattr(self.cfg.concurrency, stage))

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: every worker restarts after its current task, with the new settings."""
        self.cfg = cfg
        for w in self._all():
            w.recycle = True
            w.meta["recycle_why"] = "configuration reloaded"

    def _spec(self, stage: StageName) -> WorkerSpec:
        return WorkerSpec(stage=stage, settings=self.cfg.stage_settings(), state_dir=self.state_dir,
                          rates=self.cfg.rate_limits.parsed(), secrets=self.secrets, supervisor_pid=os.getpid(),
                          time_limit_s=float(getattr(self.cfg, stage).time_limit_s))

    def _all(self) -> list[Worker]:
        return [w for ws in self.pools.values() for w in ws]

    def _spawn(self, stage: StageName) -> Worker:
        w = Worker(spec=self._spec(stage))
        w.start()
        self.pools[stage].append(w)
        return w

    # ---- Executor ---------------------------------------------------------------------------

    def boot(self) -> None:
        """Start the fork server now: it imports the stages' modules (workers.CTX's preload, ~0.2 s) on
        the other core while recovery and intake run."""
        forkserver.ensure_running()

    def prepare(self, queued: int | None = None) -> None:
        """Spawn the pools' workers on a helper thread and return: a spawn waits until the fork server
        has imported the stages (`boot`, ~0.3 s), and the workers then import their own libraries, all
        while the supervisor builds the inbox's episode folders (~0.3 s for 3,000). `start` takes them
        over. `queued`: the episodes a `run --once` expects (None: the full pools)."""
        if self._spawner is not None:
            return
        specs = [self._spec(stage) for stage in STAGE_NAMES
                 for _ in range(self._wanted(stage, queued) - len(self.pools[stage]))]

        def spawn_all() -> None:
            for spec in specs:
                w = Worker(spec=spec)
                try:
                    w.start()
                except BaseException as exc:  # raised again on the main thread, by start()
                    self._spawn_error = exc
                    return
                self._spawned.append(w)

        self._spawner = threading.Thread(target=spawn_all, name="spawn-workers", daemon=True)
        self._spawner.start()

    def _wanted(self, stage: StageName, queued: int | None) -> int:
        """Workers a pool starts with: its size, or fewer for a `run --once` with `queued` episodes."""
        return self.size(stage) if queued is None else min(self.size(stage), queued)

    def _take_spawned(self, raise_error: bool = True) -> None:
        """The workers `prepare` spawned, into their pools (waiting for the helper thread to end); its
        error, if a spawn failed, is raised here (or, stopping, logged)."""
        if self._spawner is None:
            return
        self._spawner.join()
        self._spawner = None
        for w in self._spawned:
            self.pools[w.stage].append(w)
        self._spawned = []
        error, self._spawn_error = self._spawn_error, None
        if error is not None and raise_error:
            raise error
        if error is not None:
            logger.error("a worker could not be started: {}", error)

    def start(self, stages_with_work: set[StageName], once: bool = False, queued: int = 0) -> None:
        """Start the pools up front (as gunicorn does), so no stage's first task waits for a spawn, and
        let them boot before work starts."""
        self._take_spawned()
        for stage in STAGE_NAMES:
            while len(self.pools[stage]) < self._wanted(stage, queued if once else None):
                self._spawn(stage)
        started = time.monotonic()
        # Every pool, not only the stages with work now: a later stage's worker still importing its
        # libraries (scipy for publishing) when its first task arrives makes that episode wait a second.
        while time.monotonic() - started < BOOT_WAIT_S and stages_with_work:
            workers = self._all()
            if all(w.ready for w in workers) or not any(w.alive() for w in workers):
                break
            self._waiter.wait(self.handles(), 0.1)
            self._collect()
        if stages_with_work:
            logger.info("workers ready in {:.2f}s", time.monotonic() - started)

    def free_slots(self, stage: StageName) -> int:
        self._retire_idle(stage)
        pool = self.pools[stage]
        return sum(1 for w in pool if w.alive() and not w.recycle and w.can_take()) \
            + max(0, self.size(stage) - len(pool))

    def submit(self, task: StageTask) -> bool:
        worker = self._idle_worker(task.stage)
        if worker is None:
            return False
        try:
            worker.submit(Task(task.task_id, task.episode.episode_id, Path(task.folder), time.monotonic(),
                               task.episode))
        except (OSError, ValueError) as exc:
            logger.error("could not hand {} to a {} worker: {}", task.episode.episode_id, task.stage, exc)
            worker.tasks.pop(task.task_id, None)
            # The worker died under us: make sure it is dead and let _collect record its death (and its
            # other task's) like any other (found by the crash sweep).
            worker.recycle = True
            if worker.process is not None and worker.process.is_alive():
                worker.process.kill()
            return False
        if worker.tasks_started >= self.cfg.limits.max_tasks_per_child:
            # counted when handed over, not when done: a worker that overlaps two tasks must not take a
            # third past its limit
            worker.recycle = True
            worker.meta["recycle_why"] = f"max_tasks_per_child = {self.cfg.limits.max_tasks_per_child}"
        return True

    def poll(self) -> list[TaskOutcome]:
        self.memory.check(self._all(), self.cfg.limits)
        enforce_time_limits(self.pools, self.cfg)
        self._collect()
        out, self._outcomes = self._outcomes, []
        return out

    def handles(self) -> list[int | HasFileno]:
        out: list[int | HasFileno] = []
        for w in self._all():
            if w.conn is not None:
                out.append(w.conn)
            if w.process is not None:
                out.append(w.process.sentinel)
        return out

    def in_flight(self) -> list[StageTask]:
        return [StageTask(t.task_id, w.stage, t.episode, str(t.folder)) for w in self._all() for t in w.tasks.values()]

    def busy(self) -> bool:
        return any(w.busy for w in self._all())

    def abandon(self) -> list[StageTask]:
        self._take_spawned(raise_error=False)
        lost = self.in_flight()
        for w in self._all():
            if w.busy:
                folders = [t.folder for t in w.tasks.values()]
                w.tasks.clear()
                w.freed.clear()
                w.kill()
                for folder in folders:
                    self.clean_temps(folder)
        return lost

    def stop(self) -> None:
        """Every worker asked to exit at once, then waited for: one at a time, each exit's interpreter
        teardown was waited for in turn (30 ms for the ten default workers)."""
        workers = self._all()
        for w in workers:
            w.kill() if w.busy else w.request_stop()
        for w in workers:
            w.stop()
        for ws in self.pools.values():
            ws.clear()

    def workers(self) -> list[WorkerView]:
        host = os.uname().nodename
        return [WorkerView(host, w.process.pid, w.stage, len(w.tasks), time.time())
                for w in self._all() if w.process is not None]

    def stage_view(self, stage: StageName) -> dict[str, int]:
        ws = self.pools[stage]
        return {"busy": sum(w.calling for w in ws), "saving": sum(len(w.tasks) - w.calling for w in ws),
                "processes": sum(1 for w in ws if w.alive()), "pool_size": self.size(stage)}

    # ---- workers ----------------------------------------------------------------------------

    def _retire_idle(self, stage: StageName) -> None:
        """Retire idle workers marked for recycling first, so their slots count as free: when every
        worker of a stage was marked, nothing was dispatched again and the batch stalled (SIGHUP test)."""
        pool = self.pools[stage]
        for w in list(pool):
            if w.busy:
                continue
            if w.process is None:
                pool.remove(w)  # an abandoned handle would fill a slot for good (crash sweep)
            elif w.recycle or not w.alive():
                pid, done, why = w.process.pid, w.tasks_done, w.meta.get("recycle_why", "not alive")
                w.stop()
                pool.remove(w)
                logger.info("{} worker {} recycled after {} task(s): {}", stage, pid, done, why)

    def _idle_worker(self, stage: StageName) -> Worker | None:
        pool = self.pools[stage]
        for w in sorted(pool, key=lambda w: len(w.tasks)):  # an idle worker before one that is saving
            if w.alive() and not w.recycle and w.can_take():
                return w
        self._retire_idle(stage)
        if len(pool) < self.size(stage):
            return self._spawn(stage)
        return None

    def _collect(self) -> None:
        # one wait over every pipe and exit sentinel, instead of a poll and a waitpid per worker per tick
        ready = set(self._waiter.wait(self.handles(), 0))
        for stage, pool in self.pools.items():
            for worker in list(pool):
                if worker.conn in ready:
                    self._drain(worker)
                if worker.process is not None and worker.process.sentinel in ready \
                        and not worker.process.is_alive():
                    worker.exited = True
                    self._drain(worker)
                    reason = worker.exit_reason()
                    if worker.term_sent_at is not None:  # the guard's limit: its oldest task's, by length
                        oldest = min(worker.tasks.values(), key=lambda t: t.started, default=None)
                        limit = scaled_time_limit(float(getattr(self.cfg, stage).time_limit_s),
                                                  oldest.episode.show.minutes if oldest else None)
                        reason = f"timed out after {limit}s ({reason})"
                    for task in worker.tasks.values():
                        logger.bind(batch=task.episode.batch_id, episode=task.episode_id, stage=stage).error(
                            "{} worker (pid {}) died: {}", stage, worker.process.pid, reason)
                        self.clean_temps(task.folder)  # nobody else would ever remove its temp file
                        self._outcomes.append(TaskOutcome(task.task_id, task.episode_id, stage,
                                                          StageResult(ok=False, error=reason),
                                                          f"pid {worker.process.pid}"))
                    worker.tasks.clear()
                    worker.close()
                    pool.remove(worker)

    def _drain(self, worker: Worker) -> None:
        conn = worker.conn
        while conn is not None:
            try:
                if not worker.has_message():
                    return
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(msg, Log):
                logger.bind(**msg.extra).log(msg.level, msg.text)
            elif isinstance(msg, Ready):
                worker.ready = True
            elif isinstance(msg, Freed):
                if msg.task_id in worker.tasks:  # a late one may follow its Done (worker_outbox.LateFrees)
                    worker.freed.add(msg.task_id)
            elif isinstance(msg, Done):
                for line in msg.logs:
                    logger.bind(**line.extra).log(line.level, line.text)
                task = worker.tasks.pop(msg.task_id, None)
                worker.freed.discard(msg.task_id)
                if task is None:
                    continue
                worker.tasks_done += 1
                pid = worker.process.pid if worker.process is not None else 0
                self._outcomes.append(TaskOutcome(msg.task_id, task.episode_id, worker.stage, msg.result, f"pid {pid}",
                                                  msg.files))

