"""Long-running daemon benchmark (issue 15): pickup latency, turnaround, memory and disk over many batches.

Starts one `podspool run` (sim providers, zero latency), then drops B batches of E episodes into the
inbox, each written aside and renamed in (as operators' scripts do) while the batch before it still
runs, so the daemon is busy at every pickup. Prints the pickup latency (rename -> batches/<id>/ exists,
polled every half millisecond), each batch's turnaround
(rename -> its summary exists), the supervisor's RSS after the first batches and at the end, and the
spool's bytes per finished episode (unique inodes: audio.mp3 is a hard link of episode.mp3). Asserts nothing.

    python benchmarks/longrun_bench.py [--batches 100] [--episodes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from simconfig import sim_config

CONFIG = sim_config()


def spool_bytes(root: Path) -> tuple[int, int]:
    """(bytes of unique inodes under done/, finished episodes)."""
    seen: set[int] = set()
    total = 0
    episodes = 0
    for folder in (root / "done").iterdir():
        episodes += 1
        for f in folder.iterdir():
            st = f.stat()
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total, episodes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp) / "spool"
        (root / "inbox").mkdir(parents=True)
        (root / "podspool.toml").write_text(CONFIG)
        proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(root)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ps = psutil.Process(proc.pid)
        try:
            while not (root / "state" / "runtime.json").exists():
                time.sleep(0.05)
            pickups, turnarounds, rss = [], [], {}
            dropped: dict[str, float] = {}

            def finish(bid: str, number: int) -> None:
                while not (root / "batches" / bid / f"{bid}_summary.json").exists():
                    time.sleep(0.002)
                turnarounds.append(time.monotonic() - dropped[bid])
                finished = number * args.episodes
                if finished in (100, 1000, 2000, 5000, 10000) or number == args.batches:
                    rss[finished] = ps.memory_info().rss / 2**20

            for i in range(args.batches):
                bid = f"long_{i:05d}"
                aside = root / f".{bid}.json.part"
                aside.write_text(json.dumps({"batch_id": bid, "topics": [f"t{j}" for j in range(args.episodes)]}))
                dropped[bid] = time.monotonic()
                os.rename(aside, root / "inbox" / f"{bid}.json")  # while the previous batch still runs
                while not (root / "batches" / bid).is_dir():
                    time.sleep(0.0005)
                pickups.append(time.monotonic() - dropped[bid])
                if i:
                    finish(f"long_{i - 1:05d}", i)
            finish(f"long_{args.batches - 1:05d}", args.batches)
            b, n = spool_bytes(root)
        finally:
            proc.terminate()
            proc.wait(30)
    ms = sorted(p * 1000 for p in pickups)
    print(f"{args.batches} batches x {args.episodes} episodes through one running daemon")
    print(f"pickup (rename -> batch folder): median {statistics.median(ms):.1f} ms, p95 {ms[int(len(ms) * .95) - 1]:.1f} ms, "
          f"max {ms[-1]:.1f} ms")
    print(f"turnaround per batch: median {statistics.median(turnarounds):.2f} s, max {max(turnarounds):.2f} s")
    print("supervisor RSS after N finished episodes: " + ", ".join(f"{k}: {v:.1f} MiB" for k, v in rss.items()))
    print(f"spool bytes per finished episode (done/, unique inodes): {b / max(n, 1) / 1024:.1f} KiB over {n} episodes")


if __name__ == "__main__":
    main()
