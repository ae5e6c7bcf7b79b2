"""`podspool run` with `[executor] kind = "dramatiq"`: the real daemon, a real redis-server, two real
worker groups started as separate hosts would be. The spool layout and the guarantees are the local
executor's: every episode ends in done/ exactly once, its artifacts written by the supervisor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from podspool_helpers import cli, episodes_in, make_spool, read_json, start_daemon, wait_for, write_manifest
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)
from remote_harness import worker_groups, write_config

N = 40


def _remote_spool(tmp_path: Path, url: str, latency_ms: float) -> tuple[Path, Path]:
    spool = make_spool(tmp_path / "spool", latency_ms=latency_ms,
                       extra=f'[executor]\nkind = "dramatiq"\nbroker_url = "{url}"\nheartbeat_timeout_s = 3\n'
                             'maintenance_chance = 200000\nidle_poll_ms = 50\n'
                             "[concurrency]\nresearch = 8\nproduction = 8\naudio = 8\n"
                             '[rate_limits]\nsim = "10000/minute"\n')  # a window status can show
    # the worker hosts' own config: the broker and their providers' settings (the sim's latency is the
    # host's, as a real provider's URL and model are); stage choices and rates come with each task
    worker_config = write_config(tmp_path / "worker.toml", url, latency_ms=latency_ms)
    manifest = write_manifest(tmp_path / "b.json", {"batch_id": "remote", "strategy": "large_batch",
                                                    "topics": [f"Topic {i}" for i in range(1, N + 1)]})
    sub = cli("submit", str(manifest), "--spool", str(spool))
    assert sub.returncode == 0, sub.stderr
    return spool, worker_config


def _all_done_once(spool: Path) -> None:
    done = episodes_in(spool, "done")
    assert done == [f"ep_{i:03d}_remote" for i in range(1, N + 1)]
    for loc in ("research", "production", "audio", "failed"):
        assert episodes_in(spool, loc) == [], loc
    for eid in done:
        folder = spool / "done" / eid
        m = read_json(folder / "manifest.json")
        assert m["status"] == "done" and m["phases"] == {"research": "done", "production": "done", "audio": "done"}
        assert m["costs"]["total"] == 0.03, (eid, m["costs"])  # each phase paid for once
        for artifact in ("research.json", "script.md", "quality.json", "audio.json"):
            assert (folder / artifact).exists(), (eid, artifact)
        assert (folder / "audio.mp3").exists() or (folder / "audio.wav").exists(), eid  # [retention] drops the wav
        log = (folder / "episode.log").read_text()
        for stage in ("research", "production", "audio"):  # each phase's result applied exactly once
            assert len(re.findall(rf"\| {stage} \| {stage} done in ", log)) == 1, (eid, stage, log)
    summary = read_json(spool / "batches" / "remote" / "remote_summary.json")["batch_result"]
    assert summary["results"]["successful"] == N and summary["results"]["failed"] == 0


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_run_once_on_two_worker_groups(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    spool, worker_config = _remote_spool(tmp_path, redis_url, latency_ms=30)
    with worker_groups(worker_config, tmp_path / "host-a", tmp_path / "host-b") as groups:
        run = cli("run", "--once", "--spool", str(spool), timeout=120)
        pids = [{p.pid for p in psutil.Process(g.proc.pid).children(recursive=True)} for g in groups]
    assert run.returncode == 0, run.stderr[-3000:]
    _all_done_once(spool)
    # each phase's "done" line names the host/pid that ran it
    ran_on = {int(m) for eid in episodes_in(spool, "done")
              for m in re.findall(r" done in [\d.]+s on [^/\s]+/(\d+) ", (spool / "done" / eid / "episode.log").read_text())}
    assert ran_on & pids[0] and ran_on & pids[1], "both groups took work"
    # the window the workers share lives in Redis, not in this host's files: status reads it there
    sim = read_json(spool / "state" / "runtime.json")["rate_limits"]["sim"]
    assert 0 < sim["used"] <= 3 * N and sim["limit"] == 10000, sim
    assert not (spool / "state" / "ratelimit" / "sim.window").exists()
    for host in ("host-a", "host-b"):
        assert [p.name for p in (tmp_path / host).iterdir()] == ["worker.log"], "a worker host keeps nothing"


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_kill9_of_a_worker_group_under_the_daemon(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    # slow enough (about 20 s for the batch) that it still runs through the status checks, each a process
    spool, worker_config = _remote_spool(tmp_path, redis_url, latency_ms=1000)
    with worker_groups(worker_config, tmp_path / "host-a", tmp_path / "host-b") as groups:
        daemon = start_daemon(spool, "--once")
        try:
            wait_for(lambda: len(episodes_in(spool, "done")) >= 1, 60, daemon, "a first episode done")
            # `status` lists the remote workers from their heartbeats, while the daemon runs
            pids = {p.pid for g in groups for p in psutil.Process(g.proc.pid).children(recursive=True)}
            def runtime() -> dict[str, Any]:
                return dict(json.loads(cli("status", "--spool", str(spool), "--json").stdout)["runtime"])

            # a group's first heartbeat may come after the first episode (heartbeats are periodic)
            wait_for(lambda: {w["pid"] for w in runtime()["workers"]} == pids, 20, daemon, "both groups' heartbeats")
            assert runtime()["executor"] == "dramatiq"
            assert all(w["stage"] == "research,production,audio" for w in runtime()["workers"])
            assert "Workers (2)" in cli("status", "--spool", str(spool)).stdout
            wait_for(lambda: len(episodes_in(spool, "done")) >= 6, 60, daemon, "6 episodes done")
            groups[0].kill9()
            assert daemon.wait(120) == 0, daemon.stderr.read()[-3000:] if daemon.stderr else ""
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
            if daemon.stderr:
                daemon.stderr.close()
    _all_done_once(spool)
