"""Memory guards and worker recycling: workers are replaced after their task, and no episode is lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from podspool_helpers import cli, episodes_in, make_spool, read_json, write_manifest


def _run(spool: Path, limits: str, n: int, bid: str) -> str:
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[limits]", "[limits]\n" + limits))
    write_manifest(spool / "inbox" / f"{bid}.json", {"batch_id": bid, "topics": [f"T{i}" for i in range(n)]})
    run = cli("run", "--once", "--spool", str(spool), timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    assert episodes_in(spool, "done") == [f"ep_{i:03d}_{bid}" for i in range(1, n + 1)]
    assert episodes_in(spool, "failed") == []
    for eid in episodes_in(spool, "done"):
        m = read_json(spool / "done" / eid / "manifest.json")
        assert m["costs"]["total"] == 0.03 and m["attempts"] == 1 and m["errors"] == [], (eid, m)
    return (spool / "logs" / "podspool.log").read_text()


def test_max_tasks_per_child_one_recycles_every_worker_after_each_task(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0, extra="[concurrency]\nresearch = 2\nproduction = 1\naudio = 1\n")
    log = _run(spool, "max_tasks_per_child = 1", 4, "t")
    recycled = re.findall(r"(research|production|audio) worker \d+ recycled after 1 task\(s\): max_tasks_per_child = 1", log)
    # every task but the last of each stage is followed by a recycle before the next one starts
    assert len(recycled) >= 3 * (4 - 1) - 2, recycled
    assert {"research", "production", "audio"} <= set(recycled)


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_tiny_memory_hard_limit_recycles_workers_and_loses_nothing(tmp_path: Path) -> None:
    # A sim worker holds about 40-50 MB, under the smallest hard limit (64 MB); a leaky provider that
    # keeps 40 MB per call puts it over after one task, so the guard has to recycle it again and again.
    spool = make_spool(tmp_path / "spool", latency_ms=300, extra="[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n")
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[providers.sim]", "[providers.sim]\nleak_mb_per_call = 40"))
    log = _run(spool, "memory_hard_mb = 64", 8, "m")
    assert re.search(r"worker \d+ uses \d+ MB \(hard limit 64 MB\): recycled after its task", log), log[-2000:]
    recycled = re.findall(r"worker \d+ recycled after \d+ task\(s\): \d+ MB over memory_hard_mb", log)
    assert len(recycled) >= 2, recycled
