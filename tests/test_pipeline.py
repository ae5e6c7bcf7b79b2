"""A whole dry-run batch through the real daemon: real processes, real files, the CLI as operators use it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from podspool_helpers import cli, episodes_in, make_spool, read_json, write_manifest


def test_dry_run_batch_end_to_end(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", publish=True)
    src = write_manifest(tmp_path / "b.json", {"batch_id": "dry", "topics": [f"Topic {i}" for i in range(1, 13)],
                                               "strategy": "large_batch"})
    sub = cli("submit", str(src), "--spool", str(spool))
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.strip() == "dry"
    assert (spool / "inbox" / "dry.json").exists()
    # junk beside it: rejected with a reason, and the daemon goes on
    (spool / "inbox" / "junk.json").write_text("{not json")
    (spool / "inbox" / ".hidden.json").write_text("{}")
    (spool / "inbox" / "half.json.part").write_text("{")

    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]

    done = episodes_in(spool, "done")
    assert done == [f"ep_{i:03d}_dry" for i in range(1, 13)]
    for loc in ("research", "production", "audio", "failed"):
        assert episodes_in(spool, loc) == []
    for eid in done:
        folder = spool / "done" / eid
        m = read_json(folder / "manifest.json")
        assert m["status"] == "done" and m["session_id"] == eid and m["batch_id"] == "dry"
        assert m["phases"] == {"research": "done", "production": "done", "audio": "done"}
        assert m["attempts"] == 1 and m["errors"] == []
        assert m["costs"]["total"] == 0.03 and m["costs"]["research"] == 0.01
        assert set(m["timings"]) == {"research", "production", "audio"}
        # the default retention keeps the mp3 (audio.mp3), not the wav
        for artifact in ("research.json", "script.md", "quality.json", "audio.mp3", "audio.json", "episode.log"):
            assert (folder / artifact).exists(), artifact
        log = (folder / "episode.log").read_text()
        assert "research" in log and "audio" in log and "done" in log
        audio = read_json(folder / "audio.json")  # the audio's "done" line says what audio.json does
        assert re.search(rf"\| audio \| audio done in [\d.]+s on pid \d+ \(attempt 1, \$0\.0100, "
                         rf"{audio['seconds']:.1f} s of audio, {audio['words']} words\) -> done\n", log), log
        assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

    batch = spool / "batches" / "dry"
    assert read_json(batch / "batch.json")["topics"][0] == "Topic 1"
    session = read_json(batch / "session.json")
    assert session["progress"]["completed"] == 12 and session["costs"]["total"] == 0.36
    assert session["checkpoints"] == ["dry_checkpoint_1.json", "dry_checkpoint_2.json"]
    assert read_json(batch / "dry_checkpoint_1.json")["checkpoint"] == 1
    summary = read_json(batch / "dry_summary.json")["batch_result"]
    assert summary["configuration"] == {"size": 12, "episodes": list(range(1, 13)), "strategy": "large_batch"}
    assert summary["results"]["successful"] == 12 and summary["results"]["failed"] == 0
    assert summary["cost_breakdown"]["batch_total"] == 0.36
    assert summary["cost_breakdown"]["per_episode_average"] == 0.03
    assert summary["checkpoints"] == session["checkpoints"]
    assert summary["execution_summary"]["episodes_per_hour"] > 0
    assert "BATCH PRODUCTION DASHBOARD" in (batch / "dashboard.txt").read_text()

    assert (spool / "rejected" / "junk.json").exists()
    assert "not valid JSON" in (spool / "rejected" / "junk.json.error.txt").read_text()
    assert (spool / "inbox" / ".hidden.json").exists() and (spool / "inbox" / "half.json.part").exists()

    mainlog = (spool / "logs" / "podspool.log").read_text()
    assert "| dry | ep_001_dry | research |" in mainlog

    st = cli("status", "--json", "--spool", str(spool))
    assert st.returncode == 0, st.stderr
    b = json.loads(st.stdout)["batches"][0]
    assert (b["batch_id"], b["total"], b["completed"], b["in_progress"], b["failed"]) == ("dry", 12, 12, 0, 0)
    assert b["costs"] == {"research": 0.12, "production": 0.12, "audio": 0.12, "total": 0.36}


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_one_poison_episode_fails_alone(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[providers.sim]", '[providers.sim]\nfail_topic = "POISON"')
                   .replace("[limits]", "[limits]\nmax_retries = 2"))
    write_manifest(spool / "inbox" / "p.json", {"batch_id": "p", "topics": ["Fine one", "POISON pill", "Fine two"]})
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]
    assert episodes_in(spool, "done") == ["ep_001_p", "ep_003_p"]
    assert episodes_in(spool, "failed") == ["ep_002_p"]
    m = read_json(spool / "failed" / "ep_002_p" / "manifest.json")
    assert m["status"] == "failed" and m["phases"]["research"] == "failed"
    assert m["attempts"] == 3  # max_retries + 1
    assert [e["attempt"] for e in m["errors"]] == [1, 2, 3]
    assert all("always fails" in e["error"] for e in m["errors"])
    assert m["costs"]["research"] == 0.03  # failed attempts are paid for, and counted
    summary = read_json(spool / "batches" / "p" / "p_summary.json")["batch_result"]
    assert summary["results"]["failed"] == 1 and len(summary["issues_log"]) == 3

    # the operator brings it back; it fails again with a fresh set of attempts, never looping forever
    r = cli("retry", "ep_002_p", "--spool", str(spool))
    assert r.returncode == 0, r.stderr
    assert episodes_in(spool, "research") == ["ep_002_p"]
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0
    m = read_json(spool / "failed" / "ep_002_p" / "manifest.json")
    assert m["attempts"] == 3 and m["retry_rounds"] == 1 and len(m["errors"]) == 6


def test_budget_holds_then_resumes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "b.json", {"batch_id": "money", "topics": [f"T{i}" for i in range(8)],
                                                "budget_usd": 0.05})
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0, run.stderr[-3000:]
    session = read_json(spool / "batches" / "money" / "session.json")
    assert session["over_budget"] and session["progress"]["held"] > 0
    spent = session["costs"]["total"]
    assert 0.05 <= spent < 0.05 + 0.01 * 10  # at most the calls already in flight when it was reached
    assert "reached its budget" in (spool / "logs" / "podspool.log").read_text()
    held = sum(len(episodes_in(spool, s)) for s in ("research", "production", "audio"))
    assert held == session["progress"]["held"] and episodes_in(spool, "failed") == []

    r = cli("retry", "--batch", "money", "--budget", "5", "--spool", str(spool))
    assert r.returncode == 0, r.stderr
    run = cli("run", "--once", "--spool", str(spool))
    assert run.returncode == 0
    assert len(episodes_in(spool, "done")) == 8
    assert read_json(spool / "batches" / "money" / "session.json")["budget_usd"] == 5.0


def test_priority_batches_start_first(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", extra="[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n")
    write_manifest(spool / "inbox" / "a_low.json", {"batch_id": "low", "topics": ["a", "b"], "priority": 0})
    write_manifest(spool / "inbox" / "b_high.json", {"batch_id": "high", "topics": ["c", "d"], "priority": 5})
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0

    def started(eid: str) -> str:
        return str(read_json(spool / "done" / eid / "manifest.json")["timings"]["research"]["started"])

    assert max(started("ep_001_high"), started("ep_002_high")) < min(started("ep_001_low"), started("ep_002_low"))
