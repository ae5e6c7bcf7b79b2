"""`podspool plan` against real dry runs: predicted vs measured duration, calls and cost. Prints; asserts nothing.

Each scenario writes a sim config (latency, rate limit, processes, session cap) and a batch, asks
`podspool plan --json` for its prediction, then runs `podspool run --once` on a fresh spool and measures
the batch from its own record: duration from the summary's start to end (the first episode started to
the last one done; daemon start-up is shown apart as wall time), calls from the usage every stage wrote
into research.json, quality.json and audio.json, cost from the summary's cost breakdown.

    python benchmarks/plan_bench.py [--quick | --long] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Scenario:
    name: str
    episodes: int
    latency_ms: float = 100.0
    stage_latency_ms: dict[str, float] = field(default_factory=dict)
    rate: str | None = None  # the sim API's rate limit
    concurrency: tuple[int, int, int] | None = None  # explicit; None: the batch strategy's preset
    sessions: int = 10
    cost_per_call_usd: float = 0.01
    minutes: float | None = None  # the episodes' target length (a long one is written in segments)


FULL = [
    Scenario("small preset, 100 ms", 10, 100),
    Scenario("medium preset, 50 ms", 30, 50),
    Scenario("large preset, 300/100/500 ms", 40, 0, {"research": 300, "production": 100, "audio": 500}),
    Scenario("rate limit 5/second", 20, 20, rate="5/second", concurrency=(5, 3, 2)),
    Scenario("rate limit 60/minute", 12, 10, rate="60/minute", concurrency=(5, 3, 2)),
    Scenario("session cap 2", 16, 100, concurrency=(5, 5, 5), sessions=2),
    Scenario("125 episodes, 30 ms", 125, 30, concurrency=(5, 3, 2)),
]
LONG = [  # long episodes: an outline and a writer call per segment, so production bounds the batch
    Scenario("5 minutes, 100 ms", 10, 100, concurrency=(3, 2, 2), minutes=5),
    Scenario("30 minutes, 100 ms", 10, 100, concurrency=(3, 2, 2), minutes=30),
    Scenario("60 minutes, 100 ms", 10, 100, concurrency=(3, 2, 2), minutes=60),
    Scenario("60 minutes, rate limit 5/second", 6, 20, rate="5/second", concurrency=(3, 3, 2), minutes=60),
]
QUICK = [
    Scenario("quick: research bound", 14, 150, concurrency=(1, 2, 2)),
    Scenario("quick: rate limit 10/second", 16, 10, rate="10/second", concurrency=(3, 3, 3)),
]


def config_text(s: Scenario) -> str:
    lines = ["[research]", 'provider = "sim"', "[production]", 'provider = "sim"', "[audio]", 'provider = "sim"',
             "mp3 = false",  # the sim's latencies are the model's input; publishing's CPU is not
             "[providers.sim]", f"latency_ms = {s.latency_ms}", f"cost_per_call_usd = {s.cost_per_call_usd}"]
    if s.stage_latency_ms:
        lines.append("stage_latency_ms = { " + ", ".join(f"{k} = {v}" for k, v in s.stage_latency_ms.items()) + " }")
    if s.concurrency:
        lines += ["[concurrency]", *(f"{k} = {v}" for k, v in zip(("research", "production", "audio"),
                                                                   s.concurrency, strict=True))]
    lines += ["[limits]", f"max_sessions_in_memory = {s.sessions}", "inbox_settle_s = 0", "[logging]",
              "stderr = false"]
    if s.rate:
        lines += ["[rate_limits]", f'sim = "{s.rate}"']
    return "\n".join(lines) + "\n"


def podspool(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PODSPOOL_CONFIG": ""}
    return subprocess.run([sys.executable, "-m", "podspool.daemon", *args], capture_output=True, text=True,
                          env=env, check=True, timeout=600)


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measured_calls(spool: Path) -> dict[str, int]:
    calls: Counter[str] = Counter()
    for name in ("research.json", "quality.json", "audio.json"):
        for path in (spool / "done").glob(f"*/{name}"):
            for u in json.loads(path.read_text()).get("usage", []):
                calls[u["api"]] += int(u.get("requests", 1))
    return dict(calls)


def compare(s: Scenario, workdir: Path) -> dict[str, Any]:
    spool = workdir / "spool"
    (spool / "inbox").mkdir(parents=True)
    cfg = workdir / "podspool.toml"
    cfg.write_text(config_text(s))
    manifest = workdir / "batch.json"
    doc: dict[str, Any] = {"batch_id": "bench", "topics": [f"Topic {i}" for i in range(s.episodes)]}
    if s.minutes is not None:
        doc["minutes"] = s.minutes
    manifest.write_text(json.dumps(doc))
    plan = json.loads(podspool("plan", str(manifest), "--config", str(cfg), "--json").stdout)["batches"][0]
    podspool("submit", str(manifest), "--spool", str(spool), "--config", str(cfg))
    t0 = time.monotonic()
    podspool("run", "--once", "--spool", str(spool), "--config", str(cfg))
    wall = time.monotonic() - t0
    summary = json.loads((spool / "batches" / "bench" / "bench_summary.json").read_text())["batch_result"]
    run = summary["execution_summary"]
    costs = summary["cost_breakdown"]
    measured = ts(run["end_time"]) - ts(run["start_time"])
    return {
        "scenario": s.name, "episodes": s.episodes, "done": summary["results"]["successful"],
        "bound_by": plan["bound_by"], "load_factor": plan.get("load_factor"),
        "predicted_s": plan["duration_s"], "measured_s": round(measured, 2), "wall_s": round(wall, 2),
        "error_pct": round(100 * (plan["duration_s"] - measured) / measured, 1),
        "calls_predicted": plan["calls"], "calls_measured": measured_calls(spool),
        "cost_predicted": plan["cost_usd"],
        "cost_measured": {"research": costs["research_total"], "production": costs["production_total"],
                          "audio": costs["audio_total"], "total": costs["batch_total"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two small scenarios (what the test runs)")
    ap.add_argument("--long", action="store_true", help="long episodes only (5, 30 and 60 minutes)")
    ap.add_argument("--json", action="store_true", help="one JSON object per scenario")
    args = ap.parse_args()
    if not args.json:
        print(f"{'scenario':<30} {'eps':>4} {'predicted':>9} {'measured':>9} {'error':>7} {'wall':>6}  "
              f"calls  cost   bound by")
    for s in QUICK if args.quick else LONG if args.long else FULL + LONG:
        with tempfile.TemporaryDirectory() as tmp:
            r = compare(s, Path(tmp))
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        calls_ok = "exact" if r["calls_predicted"] == r["calls_measured"] else "DIFF"
        cost_ok = "exact" if all(abs(r["cost_predicted"][k] - r["cost_measured"][k]) < 1e-9
                                 for k in r["cost_predicted"]) else "DIFF"
        print(f"{r['scenario']:<30} {r['episodes']:>4} {r['predicted_s']:>8.2f}s {r['measured_s']:>8.2f}s "
              f"{r['error_pct']:>+6.1f}% {r['wall_s']:>5.1f}s  {calls_ok:<6} {cost_ok:<6} {r['bound_by']}",
              flush=True)


if __name__ == "__main__":
    main()
