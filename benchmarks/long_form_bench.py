"""Long episodes: how near their target they land, and what they cost in writer calls. Prints; asserts nothing.

Part one runs the production stage against the loopback model that keeps to the budget it is given
(tests/loopback_writers.py, an OpenAI-compatible server on 127.0.0.1) at each target, counting the
calls at the server. Part two (`--offline`) runs examples/long_batch.json through the real daemon on a
fresh spool with the offline defaults (local research, the local writer, espeak) and reads each
episode's spoken words, audio length and gates from what the daemon wrote.

    python benchmarks/long_form_bench.py [--minutes 5 15 30 60] [--offline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def loopback(minutes: list[float]) -> None:
    from fakeapi import FakeApi
    from loopback_writers import asked, long_form_handler
    from podspool.stages import artifacts, fsio
    from test_long_form import WPM, produce, spoken_words  # the suite's own episode and research

    print(f"{'target':>8} {'words':>7} {'of':>7} {'error':>7} {'segments':>8} {'calls':>5} {'seconds':>7}")
    for m in minutes:
        with tempfile.TemporaryDirectory() as tmp, FakeApi(long_form_handler()) as fake:
            t0 = time.monotonic()
            result = produce(Path(tmp), fake, m, n_findings=max(12, int(m * 2)))
            took = time.monotonic() - t0
            if not result.ok:
                print(f"{m:>6g} m  failed: {result.error}")
                continue
            n, target = spoken_words(Path(tmp)), round(m * WPM)
            q = fsio.read_json(Path(tmp) / artifacts.QUALITY_JSON)
            k = len(q.get("outline", {}).get("segments", [])) or 0
            print(f"{m:>6g} m {n:>7} {target:>7} {100 * (n - target) / target:>+6.1f}% {k:>8} "
                  f"{len(asked(fake)):>5} {took:>7.2f}", flush=True)


def offline() -> None:
    env = {**os.environ, "PODSPOOL_CONFIG": ""}
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        (spool / "inbox").mkdir(parents=True)
        run = [sys.executable, "-m", "podspool.daemon"]
        example = str(REPO / "examples" / "long_batch.json")
        plan = json.loads(subprocess.run([*run, "plan", example, "--json"], check=True, env=env, capture_output=True,
                                         text=True, cwd=REPO).stdout)["batches"][0]
        subprocess.run([*run, "submit", example, "--spool", str(spool)], check=True, env=env, capture_output=True,
                       cwd=REPO)
        t0 = time.monotonic()
        subprocess.run([*run, "run", "--once", "--spool", str(spool)], check=True, env=env, capture_output=True,
                       cwd=REPO, timeout=3600)
        took = time.monotonic() - t0
        doc = json.loads((REPO / "examples" / "long_batch.json").read_text())
        target_s = doc["minutes"] * 60
        summary = next((spool / "batches").glob("*/*_summary.json"))
        times = json.loads(summary.read_text())["batch_result"]["execution_summary"]
        measured = (datetime.fromisoformat(times["end_time"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(times["start_time"].replace("Z", "+00:00"))).total_seconds()
        print(f"examples/long_batch.json offline, {took:.0f} s for the batch; plan {plan['duration_s']:.1f} s, "
              f"measured {measured:.1f} s ({100 * (plan['duration_s'] - measured) / measured:+.1f}%)")
        print(f"{'episode':<24} {'words':>6} {'audio s':>8} {'error':>7} {'repetition':>10} {'continuity':>10}")
        for folder in sorted((spool / "done").iterdir()) + sorted((spool / "failed").iterdir()):
            q = json.loads((folder / "quality.json").read_text()) if (folder / "quality.json").exists() else {}
            a = json.loads((folder / "audio.json").read_text()) if (folder / "audio.json").exists() else {}
            gates = {g["name"]: g["score"] for g in q.get("gates", [])}
            seconds = a.get("seconds") or 0.0
            print(f"{folder.name:<24} {q.get('words', 0):>6} {seconds:>8.1f} "
                  f"{100 * (seconds - target_s) / target_s:>+6.1f}% {gates.get('repetition', '-'):>10} "
                  f"{gates.get('continuity', '-'):>10}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 30, 60])
    ap.add_argument("--offline", action="store_true", help="also run examples/long_batch.json through the daemon")
    args = ap.parse_args()
    loopback(args.minutes)
    if args.offline:
        offline()


if __name__ == "__main__":
    main()
