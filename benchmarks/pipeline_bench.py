"""Pipeline benchmark: does the slowest stage stay busy? Prints figures; asserts nothing.

Runs the real daemon (`podspool run --once`) over a dry-run batch with sim providers whose latency
differs per stage, with 5/3/2 processes. The lower bound on the batch's duration is the slowest
stage's total work divided by its processes; the ratio measured/bound shows what the pipeline loses
(worker hand-offs, disk writes, pipeline fill). A second run with zero latency gives the raw
episodes/s the supervisor can carry.

    python benchmarks/pipeline_bench.py [--episodes 40] [--audio-ms 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from simconfig import sim_config

CONFIG = sim_config("latency_ms = 0\nstage_latency_ms = {{ research = {r}, production = {p}, audio = {a} }}",
                    extra="[concurrency]\nresearch = 5\nproduction = 3\naudio = 2\n[limits]\nmax_sessions_in_memory = 10\n")


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run(episodes: int, r: float, p: float, a: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        spool.mkdir()
        (spool / "podspool.toml").write_text(CONFIG.format(r=r, p=p, a=a))
        (spool / "inbox").mkdir()
        (spool / "inbox" / "b.json").write_text(json.dumps(
            {"batch_id": "bench", "topics": [f"Topic {i}" for i in range(episodes)], "strategy": "large_batch"}))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "podspool.daemon", "run", "--once", "--spool", str(spool)], check=True)
        wall = time.monotonic() - t0
        manifests = [json.loads(m.read_text()) for m in (spool / "done").glob("*/manifest.json")]
        assert len(manifests) == episodes, f"only {len(manifests)} of {episodes} done"
        first = min(ts(m["timings"]["research"]["started"]) for m in manifests)
        last = max(ts(m["timings"]["audio"]["finished"]) for m in manifests)
        audio = sorted(ts(m["timings"]["audio"]["started"]) for m in manifests)
        phase = {s: sum(m["timings"][s]["seconds"] for m in manifests) / len(manifests)
                 for s in ("research", "production", "audio")}
        return {"batch_s": last - first, "wall_s": wall, "first_audio_s": audio[0] - first,
                **{f"{s}_mean_s": v for s, v in phase.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--research-ms", type=float, default=300)
    ap.add_argument("--production-ms", type=float, default=300)
    ap.add_argument("--audio-ms", type=float, default=1000)
    args = ap.parse_args()
    n = args.episodes
    work = {"research": (args.research_ms, 5), "production": (args.production_ms, 3), "audio": (args.audio_ms, 2)}
    bound_stage, (ms, procs) = max(work.items(), key=lambda kv: kv[1][0] / kv[1][1])
    bound = n * ms / 1000 / procs
    slow = run(n, args.research_ms, args.production_ms, args.audio_ms)
    print(f"slow providers: {n} episodes, latency ms research/production/audio = "
          f"{args.research_ms:.0f}/{args.production_ms:.0f}/{args.audio_ms:.0f}, processes 5/3/2")
    print(f"  slowest stage: {bound_stage}; its bound = {n} x {ms / 1000:.2f}s / {procs} = {bound:.2f}s")
    print(f"  batch took {slow['batch_s']:.2f}s (first research start -> last audio end); "
          f"ratio to bound = {slow['batch_s'] / bound:.3f}")
    print(f"  whole command incl. start-up and exit: {slow['wall_s']:.2f}s; pipeline fill (first audio start) "
          f"{slow['first_audio_s']:.2f}s")
    print("  mean phase seconds as measured by the supervisor: " + ", ".join(
        f"{s} {slow[s + '_mean_s']:.3f}" for s in ("research", "production", "audio")))
    fast = run(n, 0, 0, 0)
    print(f"zero latency: {n} episodes in {fast['batch_s']:.2f}s = {n / fast['batch_s']:.1f} episodes/s "
          f"({n / fast['wall_s']:.1f}/s for the whole command)")


if __name__ == "__main__":
    main()
