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
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loguru import logger

from stages.base import EpisodeInput, StageContext, StageName
from stages.settings import StageSettings

# spawn, not fork: the supervisor runs threads (the inbox observer), and forking a threaded process
# can deadlock the child.
CTX = mp.get_context("spawn")
PR_SET_PDEATHSIG = 1


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
    try:  # Linux: the kernel kills us the moment the supervisor dies
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere, and as a second line: poll the parent
        while True:
            if os.getppid() != supervisor_pid:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != supervisor_pid:
        os._exit(3)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    _die_with_parent(spec.supervisor_pid)
    # Ctrl-C reaches the whole process group; the supervisor decides how in-flight work ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A shared lock that a new supervisor waits on, so it never runs beside an orphan of the old one.
    lock_fd = os.open(Path(spec.state_dir) / "workers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    fcntl.flock(lock_fd, fcntl.LOCK_SH)

    send_lock = threading.Lock()

    def send(msg: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(msg)

    def log_sink(message: Any) -> None:
        r = message.record
        exc = r["exception"]
        text = r["message"]
        if exc is not None and exc.type is not None:
            text += f" ({exc.type.__name__}: {exc.value})"
        try:
            send(("log", r["level"].name, text, {k: str(v) for k, v in r["extra"].items()}))
        except (OSError, ValueError):
            pass

    logger.remove()
    logger.add(log_sink, level="DEBUG", format="{message}")

    from daemon.ratelimit import SharedLimiter
    from stages.registry import run_stage

    limiter = SharedLimiter(Path(spec.state_dir) / "ratelimit", spec.rates)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        _, task_id, folder, episode = msg
        ctx = StageContext(settings=spec.settings, limiter=limiter, secrets=spec.secrets,
                           deadline=time.monotonic() + spec.time_limit_s)
        with logger.contextualize(batch=episode.batch_id, episode=episode.episode_id, stage=spec.stage):
            result = run_stage(spec.stage, Path(folder), episode, ctx)
        send(("result", task_id, result))


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
    task: Task | None = None
    tasks_done: int = 0
    recycle: bool = False
    term_sent_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        parent_conn, child_conn = CTX.Pipe(duplex=True)
        self.process = CTX.Process(target=worker_main, args=(self.spec, child_conn),
                                   name=f"podspool-{self.spec.stage}", daemon=True)
        self.process.start()
        child_conn.close()
        self.conn = parent_conn
        self.task = None
        self.tasks_done = 0
        self.recycle = False
        self.term_sent_at = None

    @property
    def stage(self) -> StageName:
        return self.spec.stage

    @property
    def busy(self) -> bool:
        return self.task is not None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def submit(self, task: Task) -> None:
        assert self.conn is not None and self.task is None
        self.task = task
        self.conn.send(("run", task.task_id, str(task.folder), task.episode))

    def stop(self, timeout: float = 2.0) -> None:
        """Ask an idle worker to exit; kill it if it does not."""
        if self.process is None:
            return
        try:
            if self.conn is not None and self.task is None:
                self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
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


