"""A crash-point sweep, as SQLite tests its journal: kill the daemon at every durable operation in turn.

stages.fsio.crashpoint() numbers every durable operation of a process (each write's rename, each folder
move, the intake's commit rename, the inbox unlink). With PODSPOOL_CRASH_AT=k the k-th one SIGKILLs the
process. For each k we run a small batch with `run --once`, let it die at op k, restart it without the
hook, and check the Guarantees: every episode done exactly once, nothing in two places, no temp file or
torn JSON left, the inbox file neither lost nor accepted twice, and no finished phase done (paid) again.

Supervisor crash points are counted in the supervisor only; worker crash points in each worker process
(PODSPOOL_CRASH_ROLE), once per run (PODSPOOL_CRASH_ONCE), because every respawned worker starts its own
count and would otherwise crash again on every retry. A worker's points are not durable operations: it
leaves each file at its temp name and the supervisor's group commit renames it (fsio.hold_renames), so
they are where a worker can die with files written and not yet reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from podspool_helpers import cli, episodes_in, make_spool, write_manifest

EPISODES = 3
BATCH = "cs"
EIDS = [f"ep_{i:03d}_{BATCH}" for i in range(1, EPISODES + 1)]
# the file written last by each phase: its presence means the phase finished (stages/*.py)
MARKERS = {"research": "research.json", "production": "quality.json", "audio": "audio.json"}
SMALL = "[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n"


def _spool(root: Path) -> Path:
    spool = make_spool(root, extra=SMALL, latency_ms=0)
    write_manifest(spool / "inbox" / f"{BATCH}.json", {"batch_id": BATCH, "topics": ["alpha", "beta", "gamma"]})
    return spool


def _run(spool: Path, **env: str) -> int:
    try:
        return cli("run", "--once", "--spool", str(spool), env=env, timeout=60).returncode
    except subprocess.TimeoutExpired:
        return 999  # a hang: reported with the crash point by the callers


def _ops(log: Path) -> list[tuple[str, int, int, str]]:
    """The crash-point log: (role, pid, op number in that process, what)."""
    out = []
    for line in log.read_text().splitlines():
        role, pid, op, what = line.split(" ", 3)
        out.append((role, int(pid), int(op), what))
    return out


def _markers(spool: Path) -> dict[tuple[str, str], int]:
    """(episode, marker file) -> inode, wherever the episode folder stands now."""
    found = {}
    for loc in ("research", "production", "audio", "done", "failed"):
        for eid in episodes_in(spool, loc):
            for name in MARKERS.values():
                p = spool / loc / eid / name
                if p.exists():
                    found[(eid, name)] = p.stat().st_ino
    return found


def check_invariants(spool: Path, before: dict[tuple[str, str], int] | None = None) -> list[str]:
    """Every Guarantee a crash could break; returns what is wrong (empty when all hold)."""
    bad: list[str] = []
    if episodes_in(spool, "done") != EIDS:
        bad.append(f"done/ holds {episodes_in(spool, 'done')}")
    for loc in ("research", "production", "audio", "failed"):
        if episodes_in(spool, loc):
            bad.append(f"{loc}/ still holds {episodes_in(spool, loc)}")
    if sorted(os.listdir(spool / "batches")) != [BATCH]:
        bad.append(f"batches/ holds {sorted(os.listdir(spool / 'batches'))} (accepted twice or lost?)")
    for folder in ("inbox", "rejected", "state/staging"):
        if os.listdir(spool / folder):
            bad.append(f"{folder}/ is not empty: {os.listdir(spool / folder)}")
    if (spool / "batches" / BATCH / "episodes").exists():
        bad.append("the intake was never finished (batches/cs/episodes remains)")
    for dirpath, _dirs, files in os.walk(spool):
        for name in files:
            path = Path(dirpath) / name
            if name.startswith(".tmp-"):
                bad.append(f"temp file left: {path.relative_to(spool)}")
            elif name.endswith(".json"):
                try:
                    json.loads(path.read_text())
                except ValueError as exc:
                    bad.append(f"torn JSON {path.relative_to(spool)}: {exc}")
    for eid in episodes_in(spool, "done"):
        m = json.loads((spool / "done" / eid / "manifest.json").read_text())
        if m["status"] != "done" or set(m["phases"].values()) != {"done"}:
            bad.append(f"{eid}: status {m['status']} phases {m['phases']}")
        for phase in MARKERS:
            # sim costs 0.01 a call: more means a finished phase was paid for twice
            if m["costs"][phase] != 0.01:
                bad.append(f"{eid}: {phase} cost {m['costs'][phase]}")
    if before is not None:
        after = _markers(spool)
        for key, ino in before.items():
            if after.get(key) != ino:
                bad.append(f"{key[0]}: {key[1]} was complete before the crash but written again")
    summary_path = spool / "batches" / BATCH / f"{BATCH}_summary.json"
    if not summary_path.exists():
        bad.append("no batch summary after the batch completed")
    else:
        summary = json.loads(summary_path.read_text())["batch_result"]
        if summary["results"]["successful"] != EPISODES or summary["cost_breakdown"]["batch_total"] != 0.09:
            bad.append(f"summary says {summary['results']} {summary['cost_breakdown']}")
    session = json.loads((spool / "batches" / BATCH / "session.json").read_text())
    if session["progress"]["completed"] != EPISODES:
        bad.append(f"session.json says {session['progress']}")
    return bad


def measure(tmp: Path) -> list[tuple[str, int, int, str]]:
    spool = _spool(tmp / "measure")
    log = tmp / "measure-ops.txt"
    assert _run(spool, PODSPOOL_CRASH_COUNT=str(log)) == 0
    assert check_invariants(spool) == []
    return _ops(log)


def crash_supervisor_at(tmp: Path, k: int) -> list[str]:
    spool = _spool(tmp / f"sup-{k}")
    rc = _run(spool, PODSPOOL_CRASH_AT=str(k), PODSPOOL_CRASH_ROLE="supervisor")
    if rc not in (-9, 0):  # 0: this run needed fewer than k operations (timing varies a little)
        return [f"k={k}: crashed run exited {rc}"]
    before = _markers(spool)
    rc = _run(spool)
    if rc != 0:
        return [f"k={k}: the restart exited {rc}"]
    return [f"k={k} (supervisor): {p}" for p in check_invariants(spool, before)]


def crash_worker_at(tmp: Path, stage: str, k: int) -> list[str]:
    spool = _spool(tmp / f"wrk-{stage}-{k}")
    log = tmp / f"wrk-{stage}-{k}-ops.txt"
    once = tmp / f"wrk-{stage}-{k}-crashed"
    rc = _run(spool, PODSPOOL_CRASH_AT=str(k), PODSPOOL_CRASH_ROLE=f"worker-{stage}", PODSPOOL_CRASH_ONCE=str(once),
              PODSPOOL_CRASH_COUNT=str(log))
    problems = [] if rc == 0 else [f"the run with a worker killed exited {rc}"]
    problems += check_invariants(spool)
    if once.exists():
        # the killed attempt is on record, and was retried (it is done, per check_invariants)
        errors = [e["error"] for eid in EIDS
                  for e in json.loads((spool / "done" / eid / "manifest.json").read_text())["errors"]]
        if not any("killed by SIGKILL" in e for e in errors):
            problems.append(f"no 'killed by SIGKILL' attempt in the manifests: {errors}")
    # a phase whose last file was written before the kill is reused, not written again; the op that
    # was killed had not renamed its file yet, so it does not count
    ops = _ops(log)
    killed = next(((pid, op) for _r, pid, op, _w in ops if op == k), None) if once.exists() else None
    if once.exists() and killed is None:
        problems.append("a worker crashed at an operation it never logged")
    writes = Counter(what for _r, pid, op, what in ops if (pid, op) != killed)
    for what, n in writes.items():
        if what.split("/")[-1] in MARKERS.values() and n > 1:
            problems.append(f"{what} written {n} times")
    return [f"k={k} ({stage} worker): {p}" for p in problems]


def kind(what: str) -> str:
    """An operation without its episode: 'move ep_002_cs research->production' -> 'move research->production'."""
    return " ".join(w.split("/")[-1] for w in what.split(" ") if not w.startswith("ep_") and w != BATCH)


# Observer files that leave the same spool state as their neighbours; the full sweep (soak) covers them,
# and metrics.prom.next stands for them all in the default run (its temp file lives in state/).
SAME_AS_NEIGHBOURS = {"write runtime.json", "write dashboard.txt", "write timeline.svg"}


def sample(ops: list[tuple[str, int, int, str]]) -> list[int]:
    """The first operation of every kind that changes the spool's state differently."""
    firsts: dict[str, int] = {}
    for _r, _pid, op, what in ops:
        if kind(what) not in SAME_AS_NEIGHBOURS:
            firsts.setdefault(kind(what), op)
    return sorted(firsts.values())


def sweep(tmp: Path, full: bool) -> None:
    started = time.monotonic()
    ops = measure(tmp)
    sup = [o for o in ops if o[0] == "supervisor"]
    sup_ks = list(range(1, len(sup) + 1)) if full else sample(sup)
    wrk_ks: list[tuple[str, int]] = []
    for stage in MARKERS:
        # one worker per stage (SMALL), so its operations are numbered one after another
        mine = [o for o in ops if o[0] == f"worker-{stage}"]
        # default: the first episode's first file and its phase marker (written last); the other files
        # and the later episodes repeat the same kinds
        per_episode = len(mine) // EPISODES
        ks = range(1, len(mine) + 1) if full else sorted({1, per_episode})
        wrk_ks += [(stage, k) for k in ks]
    # two at a time: each run is a separate spool and process tree, and there are two cores
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda k: crash_supervisor_at(tmp, k), sup_ks))
        results += list(pool.map(lambda sk: crash_worker_at(tmp, *sk), wrk_ks))
    print(f"\ncrash sweep: a {EPISODES}-episode batch has {len(sup)} durable operations (all in the supervisor) "
          f"and {len(ops) - len(sup)} kill points in workers; swept {len(sup_ks)} supervisor crash points "
          f"{sup_ks} and {len(wrk_ks)} worker ones {wrk_ks} in {time.monotonic() - started:.1f}s")
    problems = [p for r in results for p in r]
    assert not problems, "\n".join(problems)


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_crash_point_sweep(tmp_path: Path) -> None:
    sweep(tmp_path, full=False)


@pytest.mark.soak
def test_crash_point_sweep_every_point(tmp_path: Path) -> None:
    sweep(tmp_path, full=True)
