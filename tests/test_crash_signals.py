"""Real signals against the real daemon: SIGKILL of the supervisor or of one worker, a hung worker, a
second daemon, SIGTERM (once and twice) and SIGHUP. Every test ends with every episode in done/ (or,
for a poison episode, failed/) exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from podspool_helpers import cli, episodes_in, make_spool, read_json, start_daemon, wait_for, write_manifest

QUEUES = ("research", "production", "audio")


def _log(spool: Path) -> str:
    p = spool / "logs" / "podspool.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _ready(spool: Path, n: int = 1) -> bool:
    return _log(spool).count("podspool ready") >= n


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _workers(pid: int, stage: str | None = None) -> list[psutil.Process]:
    """The supervisor's worker processes; each names itself podspool-<stage> (15 characters at most)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):  # workers are children of the fork server
        try:
            name = p.name()
        except psutil.Error:
            continue
        if name.startswith("podspool-") and (stage is None or f"podspool-{stage}"[:15] == name):
            out.append(p)
    return out


def _manifests(spool: Path) -> dict[str, tuple[str, dict[str, object]]]:
    """episode -> (location, manifest), asserting no episode stands in two places."""
    out: dict[str, tuple[str, dict[str, object]]] = {}
    for loc in (*QUEUES, "done", "failed"):
        for eid in episodes_in(spool, loc):
            assert eid not in out, f"{eid} is in both {out[eid][0]} and {loc}"
            out[eid] = (loc, read_json(spool / loc / eid / "manifest.json"))
    return out


def _phase(spool: Path, eid: str, stage: str) -> str | None:
    for loc in QUEUES:
        p = spool / loc / eid / "manifest.json"
        try:
            return str(json.loads(p.read_text())["phases"][stage])
        except (OSError, ValueError):
            continue
    return None


def _all_done_once(spool: Path, eids: list[str], cost: float | None = 0.03) -> None:
    found = _manifests(spool)
    assert sorted(found) == sorted(eids)
    assert episodes_in(spool, "done") == sorted(eids), {e: loc for e, (loc, _m) in found.items()}
    for eid, (_loc, m) in found.items():
        assert m["status"] == "done"
        if cost is not None:  # sim costs 0.01 a phase: more means a finished phase was paid twice
            assert m["costs"]["total"] == cost, (eid, m["costs"])  # type: ignore[index]


def _stop(proc: subprocess.Popen[str], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_sigkill_supervisor_mid_batch_workers_die_and_restart_finishes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=150)
    eids = [f"ep_{i:03d}_k" for i in range(1, 9)]
    write_manifest(spool / "inbox" / "k.json", {"batch_id": "k", "topics": [f"T{i}" for i in range(8)]})
    proc = start_daemon(spool)
    try:
        wait_for(lambda: len(episodes_in(spool, "done")) >= 2, 60, proc, "two episodes done")
        workers = _workers(proc.pid)
        assert len(workers) >= 3, workers
        proc.kill()  # SIGKILL: no handler, no clean-up
        proc.wait(10)
        started = time.monotonic()
        wait_for(lambda: not any(_alive(w) for w in workers), 5, None, "workers to exit after the supervisor died")
        print(f"\n{len(workers)} workers gone {time.monotonic() - started:.2f}s after SIGKILL of the supervisor")
        assert len(episodes_in(spool, "done")) < len(eids), "the batch finished before the kill: nothing tested"
    finally:
        _stop(proc)
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]
    _all_done_once(spool, eids)
    assert read_json(spool / "batches" / "k" / "k_summary.json")["batch_result"]["results"]["successful"] == 8


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_sigkill_of_one_worker_fails_one_attempt_then_the_episode_finishes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0,
                       extra="[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n")
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[providers.sim]", "[providers.sim]\nstage_latency_ms = {research = 1500}"))
    eids = [f"ep_{i:03d}_w" for i in range(1, 4)]
    write_manifest(spool / "inbox" / "w.json", {"batch_id": "w", "topics": ["a", "b", "c"]})
    proc = start_daemon(spool, "--once")
    try:
        wait_for(lambda: _phase(spool, eids[0], "research") == "in_progress", 30, proc, "ep 1 in research")
        (victim,) = _workers(proc.pid, "research")
        time.sleep(0.3)  # well inside its 1.5 s call
        victim.kill()
        assert proc.wait(60) == 0
    finally:
        _stop(proc)
    _all_done_once(spool, eids)
    hit = {eid: m for eid, (_loc, m) in _manifests(spool).items() if m["errors"]}
    assert list(hit) == [eids[0]], "only the killed worker's episode was touched"
    m = hit[eids[0]]
    assert m["attempts"] == 2
    (err,) = m["errors"]  # type: ignore[misc]
    assert err["phase"] == "research" and "killed by SIGKILL (likely out of memory)" in err["error"], err
    assert "research worker (pid " in _log(spool) and "likely out of memory" in _log(spool)


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_hung_worker_is_stopped_at_its_time_limit(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0)
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[providers.sim]", '[providers.sim]\nhang_topic = "HANG"')
                   .replace("[limits]", "[limits]\nmax_retries = 1")
                   .replace("[research]\n", "[research]\ntime_limit_s = 1\n"))
    assert "time_limit_s = 1" in cfg.read_text()
    write_manifest(spool / "inbox" / "h.json", {"batch_id": "h", "topics": ["fine", "HANG forever", "fine too"]})
    started = time.monotonic()
    run = cli("run", "--once", "--spool", str(spool), timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert time.monotonic() - started < 30
    assert episodes_in(spool, "done") == ["ep_001_h", "ep_003_h"]
    assert episodes_in(spool, "failed") == ["ep_002_h"]
    m = read_json(spool / "failed" / "ep_002_h" / "manifest.json")
    assert m["attempts"] == 2 and len(m["errors"]) == 2
    assert all("timed out after 1.0s" in e["error"] for e in m["errors"]), m["errors"]
    assert "exceeded its time limit of 1.0s" in _log(spool)


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_sigterm_drains_then_a_restart_finishes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=250)
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[limits]", "[limits]\ncheckpoint_every = 2"))
    eids = [f"ep_{i:03d}_t" for i in range(1, 9)]
    write_manifest(spool / "inbox" / "t.json", {"batch_id": "t", "topics": [f"T{i}" for i in range(8)]})
    proc = start_daemon(spool)
    try:
        wait_for(lambda: len(episodes_in(spool, "done")) >= 2, 60, proc, "two episodes done")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "admitting nothing new" in _log(spool), 10, None, "the drain to start")
        # a batch dropped while draining is left for the next run
        write_manifest(spool / "inbox" / "late.json", {"batch_id": "late", "topics": ["x"]})
        assert proc.wait(12) == 0  # within shutdown_grace_s = 10
    finally:
        _stop(proc)
    found = _manifests(spool)
    assert len(episodes_in(spool, "done")) < len(eids), "finished before SIGTERM: nothing tested"
    for eid, (_loc, m) in found.items():  # the in-flight work finished; nothing was cut off
        assert "in_progress" not in m["phases"].values(), (eid, m["phases"])  # type: ignore[union-attr]
    assert (spool / "inbox" / "late.json").exists() and not (spool / "batches" / "late").exists()
    session = read_json(spool / "batches" / "t" / "session.json")
    assert session["progress"]["completed"] == len(episodes_in(spool, "done"))
    assert len(session["checkpoints"]) == len(episodes_in(spool, "done")) // 2
    assert all((spool / "batches" / "t" / c).exists() for c in session["checkpoints"])
    assert "podspool stopped" in _log(spool)

    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]
    _all_done_once(spool, [*eids, "ep_001_late"])


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_second_sigterm_stops_at_once_and_loses_nothing(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0)
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[providers.sim]", "[providers.sim]\nstage_latency_ms = {research = 20000}")
                   .replace("shutdown_grace_s = 10", "shutdown_grace_s = 60"))
    eids = [f"ep_{i:03d}_s" for i in range(1, 5)]
    write_manifest(spool / "inbox" / "s.json", {"batch_id": "s", "topics": ["a", "b", "c", "d"]})
    proc = start_daemon(spool)
    try:
        wait_for(lambda: _phase(spool, eids[0], "research") == "in_progress", 30, proc, "research running")
        workers = _workers(proc.pid)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "admitting nothing new" in _log(spool), 10, None, "the drain to start")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 8, "the second SIGTERM did not stop it at once"
        wait_for(lambda: not any(_alive(w) for w in workers), 5, None, "workers gone")
    finally:
        _stop(proc)
    assert "second stop signal" in _log(spool)
    # the calls cut off were neither recorded as failures nor paid
    for eid, (_loc, m) in _manifests(spool).items():
        assert m["errors"] == [] and m["costs"]["total"] == 0, (eid, m)  # type: ignore[index]
    cfg.write_text(cfg.read_text().replace("stage_latency_ms = {research = 20000}", ""))
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]
    _all_done_once(spool, eids)
    assert "runs again from the start of research" in _log(spool)


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_sighup_reloads_the_configuration_and_a_second_daemon_exits_75(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=200, extra="[concurrency]\nresearch = 2\nproduction = 1\naudio = 1\n")
    cfg = spool / "podspool.toml"
    eids = [f"ep_{i:03d}_r" for i in range(1, 11)]
    write_manifest(spool / "inbox" / "r.json", {"batch_id": "r", "topics": [f"T{i}" for i in range(10)]})
    proc = start_daemon(spool)
    try:
        wait_for(lambda: len(episodes_in(spool, "done")) >= 1, 60, proc, "one episode done")
        second = cli("run", "--spool", str(spool), timeout=30)  # a second daemon on the same spool
        assert second.returncode == 75, second.stderr
        assert "another daemon already owns the spool" in second.stderr
        # the new configuration makes every call cost twice as much, and the sim faster
        cfg.write_text(cfg.read_text().replace("latency_ms = 200", "latency_ms = 20\ncost_per_call_usd = 0.02"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: configuration reloaded" in _log(spool), 10, proc, "the reload")
        wait_for(lambda: len(episodes_in(spool, "done")) == len(eids), 60, proc, "the whole batch")
        assert proc.poll() is None, "SIGHUP must not stop the daemon"
    finally:
        assert _stop(proc) == 0
    _all_done_once(spool, eids, cost=None)
    costs = [m["costs"] for _loc, m in _manifests(spool).values()]
    assert any(c["audio"] == 0.02 for c in costs), "the reloaded price never applied"  # type: ignore[index]
    assert any(c["research"] == 0.01 for c in costs)  # type: ignore[index]
    for c in costs:  # each phase paid once, at the old or the new price
        assert all(c[s] in (0.01, 0.02) for s in QUEUES), c  # type: ignore[index]
