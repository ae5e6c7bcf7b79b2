"""Orchestration benchmark: the daemon's own cost per episode as batches grow. Prints figures; asserts nothing.

One batch of N episodes through the real `podspool run --once`, with the `sim` providers at zero latency,
so what is measured is the daemon's own work: intake, durable moves and manifests, IPC, scheduling.
Time per episode should stay flat as N grows (linear orchestration), and the supervisor's peak RSS
should grow with what is queued, not explode. CPU per episode, the supervisor's and the stage workers'
(sampled with psutil), says where the time goes: on two cores both are busy. Each line also splits the
run at the daemon's "podspool ready" log line: the start-up (interpreter, the batch's intake, the workers'
boot), then the episodes/s from there to the batch's completion. A small separate run counts durable
operations (every rename that makes something durable, through the PODSPOOL_CRASH_COUNT hook of
stages/fsio.py). Beside each size, in the same run and on the same disk, Huey's no-op pipeline
(huey_bench.py: three SqliteHuey queues, 5/3/2 worker processes) with and without fsync, when Huey is
installed (`pip install -e '.[bench]'`).

    python benchmarks/orchestration_bench.py [--sizes 300,1000,3000,10000] [--huey fsync,nosync] [--no-settle]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
from simconfig import sim_config

# no publishing (mp3 = false): what is measured is the daemon's own work, not loudness and lame
CONFIG = sim_config(audio="mp3 = false\n", extra="[limits]\nmax_sessions_in_memory = 10\n")


def run(episodes: int, parent: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """One `run --once` of an `episodes`-long batch in a new spool under `parent` (left for the caller)."""
    spool = Path(tempfile.mkdtemp(dir=parent)) / "spool"
    (spool / "inbox").mkdir(parents=True)
    (spool / "podspool.toml").write_text(CONFIG)
    batch = spool / "inbox" / "b.json"
    batch.write_text(json.dumps(
        {"batch_id": "bench", "topics": [f"Topic {i}" for i in range(episodes)], "strategy": "large_batch"}))
    old = time.time() - 60
    os.utime(batch, (old, old))  # dropped a minute ago: --once does not wait for it to settle
    launched = time.time()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--once", "--spool", str(spool)],
                            env={**os.environ, **(env or {})})
    ps = psutil.Process(proc.pid)
    peak, cpu = 0, 0.0
    workers: dict[int, float] = {}  # worker pid -> its CPU seconds (the last reading before it exited)
    # A few readings a second: the peak is the kernel's high-water mark (VmHWM), so no sample misses
    # it, and CPU times only grow. (At 20 a second, psutil's scans of /proc took 2-4% of a core from
    # the daemon being measured.)
    while True:
        try:
            proc.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            pass
        try:
            peak = max(peak, _high_water_mark(proc.pid))
            t = ps.cpu_times()
            cpu = t.user + t.system
            for child in ps.children(recursive=True):
                try:
                    if child.name().startswith("podspool-"):
                        ct = child.cpu_times()
                        workers[child.pid] = ct.user + ct.system
                except psutil.Error:
                    pass
        except (psutil.Error, OSError):
            break
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"daemon exited {proc.returncode}")
    done = sum(1 for _ in (spool / "done").iterdir())
    if done != episodes:
        raise SystemExit(f"only {done} of {episodes} done")
    ready, complete = _log_times(spool / "logs" / "podspool.log")
    return {"wall_s": wall, "peak_rss_mib": peak / 2**20, "cpu_s": cpu, "worker_cpu_s": sum(workers.values()),
            "startup_s": ready - launched, "batch_s": complete - ready}


def _log_times(log: Path) -> tuple[float, float]:
    """When the daemon said "podspool ready" (workers up, batch taken) and when the batch completed, from
    its own log: the start-up is the same for any size of batch, the rest is per episode."""
    ready = complete = 0.0
    for line in log.read_text(encoding="utf-8").splitlines():
        if "podspool ready" in line or ("batch bench complete" in line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if "podspool ready" in line:
                ready = stamp
            else:
                complete = stamp
    return ready, complete


def _high_water_mark(pid: int) -> int:
    """The process's peak resident set size so far, in bytes (VmHWM in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def huey_rate(episodes: int, mode: str, parent: Path) -> float | None:
    """Huey's no-op pipeline through `episodes` episodes (huey_bench.py), in episodes/s; None when Huey
    is not installed."""
    try:
        import huey_bench
    except ImportError:
        return None
    return episodes / huey_bench.run(episodes, mode == "fsync", str(parent))


def durable_ops(parent: Path, episodes: int = 30) -> Counter[str]:
    count = parent / "ops.txt"
    run(episodes, parent, {"PODSPOOL_CRASH_COUNT": str(count)})
    roles: Counter[str] = Counter()
    for line in count.read_text().splitlines():
        if not line.endswith("(left)"):  # a worker's deferred write: a kill point, not durable (fsio._leave)
            roles[line.split()[0].split("-", 1)[0]] += 1
    return roles


# Creating a file on this machine's quiet ext4 takes ~20-30 us. For about five minutes after a large
# deletion nearby (a test run's clean-up, or this benchmark's own at its end), the same takes 300-700 us:
# without a journal, ext4 skips over inodes freed in the last minutes, reading each one's inode-table
# block to see its deletion time (find_inode_bit -> recently_deleted, seen with `perf record`). A batch
# makes eight files an episode, so a run then measures the deletion, not the daemon (a second benchmark
# straight after the first: 3,000 episodes at 166/s instead of 382/s). Even at 66 us, intake took 3.7 s
# for 3,000 episodes instead of 0.6 s: quiet means below 45 us.
QUIET_CREATE_US = 45.0
SETTLE_LIMIT_S = 420.0


def settle(parent: Path, limit_s: float = SETTLE_LIMIT_S) -> None:
    """Wait (at most `limit_s`) until creating a file under `parent`, where the spools will be, costs
    what it does on a quiet disk, and say how long that took."""
    waited = 0.0
    while True:
        probe = Path(tempfile.mkdtemp(dir=parent, prefix="probe-"))
        t0 = time.perf_counter()
        for i in range(200):
            os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        us = (time.perf_counter() - t0) / 200 * 1e6
        if us < QUIET_CREATE_US or waited >= limit_s:
            break
        time.sleep(15)
        waited += 15
    print(f"file creation where the spools go: {us:.0f} us each"
          + (f", after waiting {waited:.0f} s for the disk to settle from a recent deletion" if waited else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="300,1000,3000,10000")
    ap.add_argument("--huey", default="fsync,nosync",
                    help="Huey's modes to run beside each size (huey_bench.py); '' for none")
    ap.add_argument("--no-settle", action="store_true", help="measure at once, whatever the disk's state")
    args = ap.parse_args()
    # Every run's spool is kept until the end: deleting one would slow the next run's file creation
    # (above); the whole parent is removed at the end.
    parent = Path(tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP")))
    try:
        if not args.no_settle:
            settle(parent)
        ops = durable_ops(parent)
        total = sum(ops.values())
        print(f"durable operations per episode (30-episode batch): {total / 30:.2f} "
              f"(" + ", ".join(f"{k} {v / 30:.2f}" for k, v in sorted(ops.items())) + ")")
        base = None
        for n in (int(x) for x in args.sizes.split(",")):
            r = run(n, parent)
            per_ms = r["wall_s"] / n * 1000
            base = base or per_ms
            print(f"{n:>6} episodes: {r['wall_s']:7.2f}s  {n / r['wall_s']:7.1f} episodes/s  "
                  f"{per_ms:6.2f} ms/episode ({per_ms / base:.2f}x of the first)  supervisor peak RSS "
                  f"{r['peak_rss_mib']:.1f} MiB  CPU per episode: supervisor {r['cpu_s'] / n * 1000:.2f} ms, "
                  f"workers {r['worker_cpu_s'] / n * 1000:.2f} ms  (start-up {r['startup_s']:.2f}s, then "
                  f"{n / r['batch_s']:.0f} episodes/s)", flush=True)
            for mode in filter(None, args.huey.split(",")):
                rate = huey_rate(n, mode, parent)
                if rate is None:
                    print("        Huey is not installed (pip install -e '.[bench]'): no side-by-side figure")
                    break
                print(f"        Huey {mode:6s} {rate:7.1f} episodes/s: podspool at {n / r['wall_s'] / rate:.2f}x",
                      flush=True)
    finally:
        shutil.rmtree(parent)


if __name__ == "__main__":
    main()
