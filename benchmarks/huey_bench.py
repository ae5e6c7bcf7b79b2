"""Huey, side by side: the no-op pipeline orchestration_bench.py is compared with. Prints figures; asserts nothing.

Three SqliteHuey queues (research, production, audio), consumed by 5, 3 and 2 worker processes, as
podspool's pools are by default. Each episode is a no-op task on each queue in turn: a research task
enqueues its episode's production task, which enqueues its audio task, which stores a result. The
clock starts as one consumer per queue is launched and the batch's research tasks are enqueued, and
stops when the last episode's audio result is stored: so the figure includes the consumers' start-up,
as orchestration_bench.py's includes podspool's.

Each size runs twice: with SqliteHuey's defaults (`fsync=False`: SQLite's `synchronous=0`, so no
transition is durable; a power cut can lose any of them), and with `fsync=True` (`synchronous=2`:
every enqueue, dequeue and result is fsynced), the guarantee podspool gives each transition.

    pip install -e '.[bench]'
    python benchmarks/huey_bench.py [--sizes 300,1000,3000] [--modes nosync,fsync]

BENCH_TMP picks where the queues' databases go, as for orchestration_bench.py (the same file system
makes the figures comparable). Consumers poll an empty queue every 10 ms at most; HUEY_POLLING=default
keeps Huey's own backing-off (0.1 s, growing to 10 s), which made no difference here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.consumer import Consumer

POOLS = {"research": 5, "production": 3, "audio": 2}  # podspool's default concurrency


def pipeline(folder: str, fsync: bool) -> tuple[dict[str, SqliteHuey], Any]:
    """The three queues, their databases in `folder`, with the tasks registered on them (the bench and
    each consumer call this alike, so both know the tasks by the same names). Returns the queues and the
    research task, which a batch is enqueued as."""
    q = {stage: SqliteHuey(stage, filename=str(Path(folder) / f"{stage}.db"), fsync=fsync) for stage in POOLS}

    @q["audio"].task()
    def audio(n: int) -> int:
        return n  # stored: the bench counts the results to know the batch is through

    @q["production"].task()
    def production(n: int) -> None:
        audio(n)

    @q["research"].task()
    def research(n: int) -> None:
        production(n)

    return q, research


# Huey knows a task by its module's name and its own: a consumer imports this module as `huey_bench`,
# as the bench (or orchestration_bench.py) that enqueues does.
CONSUMER = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import huey_bench; "
            "huey_bench.consume(sys.argv[1], sys.argv[2], sys.argv[3] == '1')")


def consume(stage: str, folder: str, fsync: bool) -> None:
    queues, _ = pipeline(folder, fsync)
    polling = {} if os.environ.get("HUEY_POLLING") == "default" else \
        {"initial_delay": 0.001, "backoff": 1.15, "max_delay": 0.01}
    Consumer(queues[stage], workers=POOLS[stage], worker_type="process", periodic=False,
             check_worker_health=False, **polling).run()


def run(episodes: int, fsync: bool, parent: str | None) -> float:
    """Seconds from the batch's first enqueue to its last result."""
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        queues, research = pipeline(tmp, fsync)  # makes the databases' tables before the clock starts
        t0 = time.monotonic()
        consumers = [subprocess.Popen([sys.executable, "-c", CONSUMER, stage, tmp, "1" if fsync else "0"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for stage in POOLS]
        try:
            for n in range(episodes):  # while the consumers boot (podspool takes its batch while its workers do)
                research(n)
            while queues["audio"].result_count() < episodes:
                if any(c.poll() is not None for c in consumers):
                    raise SystemExit("a Huey consumer exited early")
                time.sleep(0.005)
            return time.monotonic() - t0
        finally:
            for c in consumers:
                c.terminate()
            for c in consumers:
                c.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="300,1000,3000")
    ap.add_argument("--modes", default="nosync,fsync")
    args = ap.parse_args()
    parent = os.environ.get("BENCH_TMP")
    for mode in args.modes.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            secs = run(n, mode == "fsync", parent)
            print(f"  Huey {mode:7s} {n:6d} episodes: {secs:7.2f}s {n / secs:8.1f} episodes/s", flush=True)


if __name__ == "__main__":
    import huey_bench  # the tasks registered under the module's name, as its consumers know them

    huey_bench.main()
