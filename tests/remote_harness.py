"""Helpers for the remote-executor tests: worker groups started as separate hosts would be, and a
small driver that plays the supervisor (submit, poll, carry each episode through the three stages).

A worker group is a `podspool worker` in its own session (process group), with its working folder in
its own temporary directory and no spool path anywhere in its arguments or environment.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podspool.daemon.config import load_config
from podspool.daemon.credentials import BROKER_KEY_ENV
from podspool.daemon.executors.protocol import StageTask, TaskOutcome
from podspool.daemon.executors.remote.executor import DramatiqExecutor
from podspool.stages.base import STAGE_NAMES, EpisodeInput

# The broker key every host of these tests shares (tasks and results are signed with it). The supervisors
# the tests start (in-process, or `podspool run` through podspool_helpers.cli) inherit it from here.
TEST_BROKER_KEY = "test-broker-key-0123456789abcdef"
os.environ.setdefault(BROKER_KEY_ENV, TEST_BROKER_KEY)

REMOTE_CONFIG = """
[executor]
kind = "dramatiq"
broker_url = "{url}"
heartbeat_timeout_s = 3
maintenance_chance = 200000
threads = {threads}
shutdown_grace_s = 3
[limits]
max_sessions_in_memory = {in_flight}
[concurrency]  # with dramatiq: each stage's tasks in flight across all worker hosts
research = {in_flight}
production = {in_flight}
audio = {in_flight}
[research]
provider = "{research}"
time_limit_s = {time_limit}
[production]
provider = "sim"
[audio]
provider = "sim"
[providers.sim]
latency_ms = {latency_ms}
{extra}
"""


def write_config(path: Path, url: str, *, threads: int = 4, in_flight: int = 40, research: str = "sim",
                 latency_ms: float = 50, time_limit: float = 60, extra: str = "") -> Path:
    path.write_text(REMOTE_CONFIG.format(url=url, threads=threads, in_flight=in_flight, research=research,
                                         latency_ms=latency_ms, time_limit=time_limit, extra=extra))
    return path


class WorkerGroup:
    """`podspool worker` as one host would run it: own session, own working folder, no spool."""

    def __init__(self, config: Path, workdir: Path, *, processes: int = 1, stages: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "podspool.daemon", "worker", "--config", str(config),
                "--processes", str(processes)]
        for s in stages:
            args += ["--stage", s]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PODSPOOL_")}
        full_env[BROKER_KEY_ENV] = TEST_BROKER_KEY  # a host's own credential (a test may give another in env)
        self.log = workdir / "worker.log"
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(args, cwd=workdir, env={**full_env, **(env or {})}, stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        """The host dies: every process of the group at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # dramatiq's main process passes it on to its workers

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        self.kill9()
        self._log_fh.close()


@contextmanager
def worker_groups(config: Path, *workdirs: Path, **kwargs: Any) -> Iterator[list[WorkerGroup]]:
    """Several hosts' worth of workers, stopped together (SIGTERM to all, then wait for each)."""
    groups: list[WorkerGroup] = []
    try:
        for d in workdirs:
            groups.append(WorkerGroup(config, d, **kwargs))
        yield groups
    finally:
        for g in groups:
            g.terminate()
        for g in groups:
            g.stop()


def wait_for_workers(executor: DramatiqExecutor, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(executor.workers()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{n} worker processes did not report a heartbeat within {timeout} s")


@dataclass
class Drive:
    """What the pretend supervisor saw."""

    applied: Counter[tuple[str, str]] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    workers_used: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def make_executor(config: Path, state_dir: Path) -> DramatiqExecutor:
    ex = DramatiqExecutor(load_config(config), state_dir)
    ex.start(set(STAGE_NAMES))
    return ex


def drive(executor: DramatiqExecutor, spool: Path, n: int, *, timeout: float = 90.0,
          on_progress: object = None, topic: str = "Topic {n}") -> Drive:
    """Carry `n` episodes through research -> production -> audio, as the supervisor would: up to
    free_slots() in flight, the next stage once the last one's outcome is in, wait on handles()."""
    seen = Drive()
    stage_of: dict[str, int] = {}
    episodes = {}
    for i in range(1, n + 1):
        eid = f"ep_{i:03d}_remote"
        (spool / eid).mkdir(parents=True, exist_ok=True)
        episodes[eid] = EpisodeInput(episode_id=eid, batch_id="remote", number=i, topic=topic.format(n=i))
    waiting = list(episodes)
    task_id = 0
    t0 = time.monotonic()
    while len(seen.done) + len(seen.failed) < n:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"batch not finished in {timeout} s: {len(seen.done)} done, "
                                 f"{len(seen.failed)} failed, {len(executor.in_flight())} in flight")
        for eid in list(waiting):
            stage = STAGE_NAMES[stage_of.get(eid, 0)]
            if executor.free_slots(stage) <= 0:
                continue
            task_id += 1
            if not executor.submit(StageTask(task_id, stage, episodes[eid], str(spool / eid))):
                break
            waiting.remove(eid)
        select.select(executor.handles(), [], [], 0.5)
        outcomes: list[TaskOutcome] = executor.poll()
        for o in outcomes:
            seen.applied[(o.episode_id, o.stage)] += 1
            seen.workers_used[o.worker.split("/")[0] + "/" + o.worker.split("/")[-1]] += 1
            if not o.result.ok:
                seen.failed[o.episode_id] = o.result.error or "?"
                continue
            stage_of[o.episode_id] = STAGE_NAMES.index(o.stage) + 1
            if stage_of[o.episode_id] == len(STAGE_NAMES):
                seen.done.append(o.episode_id)
            else:
                waiting.append(o.episode_id)
        if callable(on_progress):
            on_progress(seen)
    seen.seconds = time.monotonic() - t0
    return seen


def wait_outcomes(ex: DramatiqExecutor, n: int, timeout: float = 30.0) -> list[TaskOutcome]:
    """The executor's outcomes until `n` have come, failing the test after `timeout` seconds."""
    got: list[TaskOutcome] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += ex.poll()
        time.sleep(0.05)
    assert len(got) >= n, f"{len(got)} of {n} outcomes within {timeout} s"
    return got
