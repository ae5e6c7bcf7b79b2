"""Soak: kill -9 the daemon at random moments of a 30-episode batch, restart it each time, let it finish.

Marked soak (excluded from the default run; .ci/run runs `pytest -m soak` with a time bound).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from podspool_helpers import cli, episodes_in, make_spool, wait_for, write_manifest

KILLS = 8
EPISODES = 30


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.soak
def test_random_sigkills_lose_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("PODSPOOL_SOAK_SEED") or time.time())
    rng = random.Random(seed)
    print(f"\nsoak seed {seed} (PODSPOOL_SOAK_SEED to replay)")
    # stderr off: nobody reads the pipe during a long run, and a full pipe would block the daemon
    spool = make_spool(tmp_path / "spool", latency_ms=800, extra="[logging]\nstderr = false\n")
    eids = [f"ep_{i:03d}_soak" for i in range(1, EPISODES + 1)]
    write_manifest(spool / "inbox" / "soak.json", {"batch_id": "soak", "topics": [f"Topic {i}" for i in range(EPISODES)],
                                                   "strategy": "large_batch"})
    env = {**os.environ, "PODSPOOL_CONFIG": ""}
    survived = 0
    started = time.monotonic()
    for n in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(spool)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            # anywhere from start-up and recovery to full flow
            time.sleep(rng.uniform(1.0, 4.0))
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited {proc.returncode} before kill {n + 1}")
            # workers are the fork server's children, so look through the whole tree
            workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                       if p.name().startswith("podspool-")]
            proc.kill()
            proc.wait(10)
            wait_for(lambda ws=workers: not any(_alive(w) for w in ws), 5, None, "workers to follow the supervisor")  # type: ignore[misc]
            survived += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if len(episodes_in(spool, "done")) == EPISODES:
            break
    done_before = len(episodes_in(spool, "done"))
    run = cli("run", "--once", "--spool", str(spool), timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"soak: survived {survived} kill -9s ({done_before} of {EPISODES} done before the last restart) "
          f"in {time.monotonic() - started:.1f}s")

    assert episodes_in(spool, "done") == eids
    for loc in ("research", "production", "audio", "failed", "inbox", "rejected"):
        assert not os.listdir(spool / loc), loc
    assert os.listdir(spool / "batches") == ["soak"]
    for dirpath, _dirs, files in os.walk(spool):
        for name in files:
            assert not name.startswith(".tmp-"), Path(dirpath) / name
            if name.endswith(".json"):
                json.loads((Path(dirpath) / name).read_text())
    for eid in eids:
        m = json.loads((spool / "done" / eid / "manifest.json").read_text())
        assert m["status"] == "done" and m["costs"]["total"] == 0.03, (eid, m["costs"])
    summary = json.loads((spool / "batches" / "soak" / "soak_summary.json").read_text())["batch_result"]
    assert summary["results"]["successful"] == EPISODES
    assert survived >= KILLS - 1 or done_before == EPISODES
