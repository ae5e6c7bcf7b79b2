"""Worker benchmark: what a stage worker costs beyond its stage's own work. Prints figures; asserts nothing.

Each stage runs on the same episodes twice, with the `sim` providers at zero latency: in this process
(`run_stage` in a loop: the stage's own CPU), then through the real local executor, one worker per
stage, one task at a time (real pipes and processes, so nothing contends). The difference per task is
the worker's own cost: the pipe messages, the wake-ups, the result's pickling. The supervisor's side
of each round trip (this process) is printed too; the workers' CPU is read with psutil, in clock ticks
(10 ms), so runs of fewer than 1,000 episodes say little; and other work on the machine raises it.

    python benchmarks/worker_bench.py [--episodes 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

import psutil
from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.executors.local.pool import LocalExecutor
from podspool.daemon.executors.protocol import StageTask, TaskOutcome
from podspool.daemon.ratelimit import SharedLimiter
from podspool.stages.base import STAGE_NAMES, EpisodeInput, StageContext
from podspool.stages.registry import run_stage, warm_up

CONFIG = {"research": {"provider": "sim"}, "production": {"provider": "sim"},
          "audio": {"provider": "sim", "mp3": False},  # no publishing: the daemon's work, not lame's
          "providers": {"sim": {"latency_ms": 0}}, "concurrency": {s: 1 for s in STAGE_NAMES},
          "limits": {"max_tasks_per_child": 1_000_000}}  # one worker per stage throughout


def episode(i: int) -> EpisodeInput:
    return EpisodeInput(episode_id=f"ep_{i:04d}_b", batch_id="b", number=i, topic=f"Topic {i}", title=None,
                        notes=None, sources=())


def in_process(cfg: Config, root: Path, n: int) -> dict[str, float]:
    """CPU ms per task of each stage run in this process, the stages in turn on each episode."""
    settings = cfg.stage_settings()
    limiter = SharedLimiter(root / "ratelimit", cfg.rate_limits.parsed())
    cpu = dict.fromkeys(STAGE_NAMES, 0.0)
    for stage in STAGE_NAMES:
        warm_up(stage, settings)
    for i in range(1, n + 1):
        folder = root / "in-process" / f"ep_{i:04d}_b"
        folder.mkdir(parents=True)
        for stage in STAGE_NAMES:
            t0 = time.process_time()
            result = run_stage(stage, folder, episode(i), StageContext(settings=settings, limiter=limiter))
            cpu[stage] += time.process_time() - t0
            assert result.ok, result.error
    return {stage: cpu[stage] / n * 1e3 for stage in STAGE_NAMES}


def through_workers(cfg: Config, root: Path, n: int) -> tuple[dict[str, float], float]:
    """Worker CPU ms per task of each stage, and this side's CPU ms per episode, one task at a time."""
    (root / "state").mkdir()
    ex = LocalExecutor(cfg, str(root / "state"), {}, lambda folder: 0)
    ex.boot()
    ex.prepare(queued=1)
    ex.start(set(STAGE_NAMES), once=True, queued=1)
    procs = {stage: psutil.Process(ex.pools[stage][0].process.pid) for stage in STAGE_NAMES}

    def round_trip(task_id: int, stage: str, i: int) -> None:
        folder = root / "workers" / f"ep_{i:04d}_b"
        folder.mkdir(parents=True, exist_ok=True)
        assert ex.submit(StageTask(task_id, stage, episode(i), str(folder)))
        outcomes: list[TaskOutcome] = []
        while not outcomes:
            wait(ex.handles(), 5.0)
            outcomes = ex.poll()
        for out in outcomes:
            assert out.result.ok, out.result.error
            for tmp, final in out.files:  # the supervisor's commit, without the sync
                os.replace(tmp, final)

    def cpu_s() -> dict[str, float]:
        return {stage: sum(p.cpu_times()[:2]) for stage, p in procs.items()}

    try:
        warm = max(1, n // 20)
        for i in range(1, warm + 1):
            for k, stage in enumerate(STAGE_NAMES):
                round_trip(3 * i + k, stage, i)
        before, here = cpu_s(), time.process_time()
        for i in range(warm + 1, warm + n + 1):
            for k, stage in enumerate(STAGE_NAMES):
                round_trip(3 * i + k, stage, i)
        after, here = cpu_s(), time.process_time() - here
    finally:
        ex.stop()
    return {stage: (after[stage] - before[stage]) / n * 1e3 for stage in STAGE_NAMES}, here / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=1000)
    args = ap.parse_args()
    logger.remove()
    cfg = Config.model_validate(CONFIG)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/dev/shm")) as tmp:
        own = in_process(cfg, Path(tmp), args.episodes)
        workers, here = through_workers(cfg, Path(tmp), args.episodes)
    print(f"{args.episodes} episodes, sim providers at zero latency, one task at a time (CPU ms per task)")
    for stage in STAGE_NAMES:
        print(f"  {stage:<10} stage in this process {own[stage]:.3f}   in its worker {workers[stage]:.3f}   "
              f"worker's own {workers[stage] - own[stage]:+.3f}")
    print(f"  per episode: stages {sum(own.values()):.3f}, workers {sum(workers.values()):.3f}; "
          f"the supervisor's side of the three round trips {here:.3f}")


if __name__ == "__main__":
    main()
