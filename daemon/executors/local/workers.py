"""Long-lived worker processes, one stage each, fed one episode at a time over a pipe.

Not ProcessPoolExecutor (one dead worker breaks the whole pool) nor multiprocessing.Pool (it can
hang when a worker is killed): each worker is a plain Process the supervisor watches through its
sentinel, so a worker that raises, hangs or dies fails one attempt and nothing else.
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing as mp
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from loguru import logger
from podspool.daemon.executors.local.messages import Done, FromWorker, Ready, Run, Stop
from podspool.daemon.executors.local.outbox import HeldLogs, LateFrees
from podspool.stages.base import EpisodeInput, StageContext, StageName
from podspool.stages.settings import StageSettings

# forkserver, not fork: the supervisor runs threads (the inbox observer), and forking a threaded
# process can deadlock the child. The fork server is a fresh single-threaded interpreter that has
# imported the heavy pure-Python modules once, so a worker boots in milliseconds instead of
# re-importing them (numpy is left out: its BLAS may start threads). Workers are the fork server's
# children; it exits when the supervisor dies, and their parent-death signal follows.
CTX = mp.get_context("forkserver")
CTX.set_forkserver_preload(["podspool.daemon.executors.local.workers", "podspool.daemon.ratelimit", "podspool.stages.registry", "podspool.stages.research",
                            "podspool.stages.production", "podspool.stages.providers.http", "podspool.stages.providers.sim"])
# The supervisor is the one serial part: each message it sends wakes a worker that, at equal
# priority, may take its core mid-write. Below it, the workers fill the idle time instead (measured:
# +15% episodes/s on 2 cores). Relative to the supervisor's own niceness, so a unit's Nice= still holds.
WORKER_NICE = 10
TASKS_PER_WORKER = 2  # one in its provider call, one saving (Worker.can_take)
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


@dataclass
class WorkerSpec:
    """Everything a worker needs, picklable (secrets travel over the spawn pipe, never through disk)."""

    stage: StageName
    settings: StageSettings
    state_dir: str
    rates: dict[str, tuple[int, float]]
    secrets: dict[str, str]
    supervisor_pid: int
    time_limit_s: float


def _die_with_parent(supervisor_pid: int) -> None:
    parent = os.getppid()  # the fork server, which exits the moment the supervisor dies
    try:  # Linux: the kernel kills us the moment our parent dies
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    def gone() -> bool:
        if os.getppid() != parent:
            return True
        try:
            os.kill(supervisor_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def watch() -> None:  # elsewhere, and as a second line: poll the parent and the supervisor
        while True:
            if gone():
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if gone():
        os._exit(3)


class _FileLock:
    """An exclusive flock on a file, shared by every worker process (the quality gates' turn)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.local = threading.Lock()

    def __enter__(self) -> None:
        self.local.acquire()
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.local.release()


class _CallSlot:
    """One provider call at a time per worker; its first release lets the supervisor send the next task
    (worker_outbox.LateFrees)."""

    def __init__(self, sem: threading.Semaphore, on_first_release: Any) -> None:
        self.sem = sem
        self.on_first_release = on_first_release
        self.released = False

    def __enter__(self) -> None:
        self.sem.acquire()

    def __exit__(self, *exc: object) -> None:
        self.sem.release()
        if not self.released:
            self.released = True
            self.on_first_release()


def _name_process(stage: str) -> None:
    """Name the process after its stage (ps, top, psutil: 'podspool-resear'), so an operator can tell them apart."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(f"podspool-{stage}".encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    _die_with_parent(spec.supervisor_pid)
    _name_process(spec.stage)
    os.nice(WORKER_NICE)
    # Before the stage's libraries load (warm_up): numpy's OpenBLAS would start a thread per core that
    # spins after each call (1% of the machine in a 3,000-episode run), in a process that runs one task
    # at a time on a machine whose cores the pools already fill.
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
    from podspool.stages import fsio
    fsio.set_role(f"worker-{spec.stage}")  # test hook: PODSPOOL_CRASH_ROLE tells supervisor and worker crash points apart
    # Ctrl-C reaches the whole process group; the supervisor decides how in-flight work ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    state = Path(spec.state_dir)
    # A shared lock that a new supervisor waits on, so it never runs beside an orphan of the old one.
    lock_fd = os.open(state / "workers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    fcntl.flock(lock_fd, fcntl.LOCK_SH)

    send_lock = threading.Lock()

    def send(msg: FromWorker) -> None:
        with send_lock:
            conn.send(msg)

    held = HeldLogs(send)
    logger.remove()
    logger.add(held.sink, level="DEBUG", format="{message}")

    from podspool.daemon.ratelimit import SharedLimiter
    from podspool.stages.registry import run_stage, warm_up
    from podspool.stages.settings import scaled_time_limit

    limiter = SharedLimiter(state / "ratelimit", spec.rates)
    gate_lock = _FileLock(state / "quality.lock")
    call_sem = threading.Semaphore(1)
    frees = LateFrees(send)
    warm_up(spec.stage, spec.settings)  # import the stage's libraries now, not during the first episode
    send(Ready())

    def run_task(task_id: int, folder: str, episode: EpisodeInput) -> None:
        slot = _CallSlot(call_sem, lambda: frees.call_over(task_id))
        limit_s = scaled_time_limit(spec.time_limit_s, episode.show.minutes)  # a long episode gets longer
        ctx = StageContext(settings=spec.settings, limiter=limiter, secrets=spec.secrets,
                           deadline=time.monotonic() + limit_s, call_slot=slot, gate_lock=gate_lock)
        held.begin()
        fsio.hold_renames()  # the supervisor syncs and renames the task's files in its group commit
        with logger.contextualize(batch=episode.batch_id, episode=episode.episode_id, stage=spec.stage):
            result = run_stage(spec.stage, Path(folder), episode, ctx)
        if ctx.calls:
            result.api_calls = dict(ctx.calls)
        frees.task_done(task_id)
        try:
            send(Done(task_id, result, held.end(), tuple(fsio.take_held_renames())))
        except (OSError, ValueError):
            os._exit(4)  # the supervisor is gone

    # Long-lived task threads, one per task a worker may hold (Worker.can_take), for a worker whose saves
    # are slow (placer): a thread per task cost its start-up handshake on every episode.
    queue: SimpleQueue[Run | None] = SimpleQueue()

    def task_loop() -> None:
        while (run := queue.get()) is not None:
            run_task(run.task_id, run.folder, run.episode)

    threads = [threading.Thread(target=task_loop, name=f"task-{i}", daemon=True) for i in range(TASKS_PER_WORKER)]
    for t in threads:
        t.start()
    try:
        serve(conn, frees, placer(frees, lambda run: run_task(run.task_id, run.folder, run.episode), queue.put))
    except (EOFError, OSError):
        os._exit(0)  # the supervisor is gone
    for _ in threads:
        queue.put(None)
    for t in threads:
        t.join()


def placer(frees: LateFrees, run_here: Callable[[Run], None],
           to_thread: Callable[[Run], None]) -> Callable[[Run], None]:
    """Where a worker runs a task. While its saves are quick, on the main thread (`run_here`): a hand-over
    to a task thread costs two wake-ups and a thread switch, a quarter of a quick stage's CPU, and buys
    nothing when no Freed falls due during a save (the supervisor sends a second task only after one).
    From its first slow save on (an mp3 to encode, say; that one task is not overlapped), on the task
    threads (`to_thread`), so that the next call overlaps such saves."""

    def place(run: Run) -> None:
        if frees.saves_quick():
            run_here(run)
        else:
            to_thread(run)

    return place


def serve(conn: Connection, frees: LateFrees, hand_over: Callable[[Run], None]) -> None:
    """A worker's main loop: each Run is handed over (placer), and each late Freed out when it falls due.
    Returns at Stop; EOFError or OSError when the supervisor is gone."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        if not poller.poll(frees.wait_ms()):
            frees.send_due()
            continue
        msg = conn.recv()
        if isinstance(msg, Stop):
            return
        frees.begin(msg.task_id)  # before the next wait, which must know a task is in flight
        hand_over(msg)


@dataclass
class Task:
    task_id: int
    episode_id: str
    folder: Path
    started: float  # monotonic
    episode: EpisodeInput


@dataclass
class Worker:
    """The supervisor's handle on one worker process."""

    spec: WorkerSpec
    process: Any = None  # mp.Process
    conn: Connection | None = None
    tasks: dict[int, Task] = field(default_factory=dict)
    freed: set[int] = field(default_factory=set)  # tasks past their provider call (saving, validating)
    tasks_done: int = 0
    tasks_started: int = 0
    ready: bool = False  # booted and warmed up
    exited: bool = False  # its exit sentinel fired (LocalExecutor._collect)
    recycle: bool = False
    stop_sent: bool = False
    term_sent_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    poller: Any = None  # select.poll on conn: Connection.poll() builds a selector per call

    def start(self) -> None:
        parent_conn, child_conn = CTX.Pipe(duplex=True)
        self.process = CTX.Process(target=worker_main, args=(self.spec, child_conn),
                                   name=f"podspool-{self.spec.stage}", daemon=True)
        self.process.start()
        child_conn.close()
        self.conn = parent_conn
        self.poller = select.poll()
        self.poller.register(parent_conn.fileno(), select.POLLIN)
        self.tasks = {}
        self.freed = set()
        self.ready = False
        self.tasks_done = 0
        self.tasks_started = 0
        self.recycle = False
        self.stop_sent = False
        self.term_sent_at = None

    @property
    def stage(self) -> StageName:
        return self.spec.stage

    @property
    def busy(self) -> bool:
        return bool(self.tasks)

    @property
    def calling(self) -> int:
        """Tasks still in (or before) their provider call: the stage's concurrency that counts."""
        return sum(1 for t in self.tasks if t not in self.freed)

    def has_message(self) -> bool:
        """Something to read on the pipe (or its end: recv then raises EOFError)."""
        return self.conn is not None and bool(self.poller.poll(0))

    def can_take(self) -> bool:
        """Idle, or its one task is past its call: the next call overlaps the last one's disk work (so a
        worker holds at most TASKS_PER_WORKER tasks)."""
        return len(self.tasks) == 0 or (len(self.tasks) == 1 and self.calling == 0)

    def alive(self) -> bool:
        """Started and not seen to exit (LocalExecutor._collect watches the exit sentinels: a waitpid per
        worker per question was 27 calls an episode). A death not yet collected shows at the next submit."""
        return self.process is not None and not self.exited

    def submit(self, task: Task) -> None:
        assert self.conn is not None and self.can_take()
        self.tasks[task.task_id] = task
        self.tasks_started += 1
        self.conn.send(Run(task.task_id, str(task.folder), task.episode))

    def request_stop(self) -> None:
        """Ask an idle worker to exit (once), without waiting: `stop` waits."""
        if self.stop_sent or self.conn is None or self.tasks:
            return
        self.stop_sent = True
        try:
            self.conn.send(Stop())
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = 2.0) -> None:
        """Ask an idle worker to exit and wait for it; kill it if it does not."""
        if self.process is None:
            return
        self.request_stop()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.close()

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            try:
                self.process.close()
            except ValueError:
                pass
            self.process = None

    def exit_reason(self) -> str:
        code = self.process.exitcode if self.process is not None else None
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
            return f"worker was killed by {sig}{hint}"
        return f"worker exited with code {code}"


