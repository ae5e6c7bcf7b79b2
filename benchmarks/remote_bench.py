"""Remote benchmark: do two worker hosts finish latency-bound work in half the time of one? Prints
figures; asserts nothing.

Starts a throw-away redis-server on a free port, then runs the same batch (sim providers, every call
`--latency-ms` long, so the work is waiting, not CPU) through the DramatiqExecutor with one worker
group, then with two (each `podspool worker --processes 1`, `--threads` threads, own session and
folder, no spool). The lower bound is calls x latency / total threads; the ratio one/two groups is
the scale-out, and measured/bound shows what the broker round trips and hand-overs cost.

    python benchmarks/remote_bench.py [--episodes 40] [--latency-ms 400] [--threads 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' redis and worker groups

from redis_fixture import RedisServer  # noqa: E402
from remote_harness import drive, make_executor, wait_for_workers, worker_groups, write_config  # noqa: E402

STAGES = 3


def run(root: Path, url: str, groups: int, episodes: int, latency_ms: float, threads: int) -> float:
    config = write_config(root / f"podspool-{groups}.toml", url, threads=threads, in_flight=episodes,
                          latency_ms=latency_ms, extra='[logging]\nlevel = "WARNING"\n')
    hosts = [root / f"run{groups}-host{i}" for i in range(groups)]
    with worker_groups(config, *hosts):
        ex = make_executor(config, root / f"state-{groups}")
        try:
            wait_for_workers(ex, groups)
            seen = drive(ex, root / f"episodes-{groups}", episodes, timeout=600)
        finally:
            ex.stop()
    assert len(seen.done) == episodes and not seen.failed, seen.failed
    return seen.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--latency-ms", type=float, default=400.0)
    ap.add_argument("--threads", type=int, default=4, help="threads per worker group")
    args = ap.parse_args()
    from loguru import logger

    logger.remove()  # the executor's per-result log lines would drown the figures
    with tempfile.TemporaryDirectory(prefix="podspool-remote-bench-") as tmp:
        root = Path(tmp)
        server = RedisServer(root / "redis").start()
        try:
            calls = args.episodes * STAGES
            print(f"{args.episodes} episodes x {STAGES} stages, {args.latency_ms:.0f} ms per call, "
                  f"{args.threads} threads per group")
            times = {}
            for groups in (1, 2):
                bound = calls * args.latency_ms / 1000 / (groups * args.threads)
                times[groups] = run(root, server.url, groups, args.episodes, args.latency_ms, args.threads)
                print(f"{groups} group(s): {times[groups]:6.2f} s   bound {bound:6.2f} s   "
                      f"measured/bound {times[groups] / bound:4.2f}   "
                      f"{args.episodes / times[groups] * 3600:7.0f} episodes/hour")
            print(f"two groups take {times[2] / times[1]:.2f} of one group's time "
                  f"(speed-up x{times[1] / times[2]:.2f})")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
