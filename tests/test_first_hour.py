"""An operator's first hour, as a new operator meets it: status before any daemon ran, every problem
at once, the quick start from any folder with confinement intact, and a batch that cannot succeed refused."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from podspool.daemon.intake.validate import ManifestProblem, check_manifest
from podspool.stages.settings import ResearchSettings
from podspool_helpers import cli, episodes_in, make_spool, read_json, start_daemon, wait_for, write_manifest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "small_batch.json"


def test_status_of_no_spool_at_all_is_not_an_error(tmp_path: Path) -> None:
    out = cli("status", "--spool", str(tmp_path / "nowhere"))
    assert out.returncode == 0, out.stderr
    assert "nothing waiting in its inbox" in out.stdout
    doc = json.loads(cli("status", "--spool", str(tmp_path / "nowhere"), "--json").stdout)
    assert doc["batches"] == [] and doc["queued"] == []
    assert not (tmp_path / "nowhere").exists()  # looking creates nothing


def test_status_of_an_inbox_only_spool_says_what_will_happen(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "good.json", {"batch_id": "season_1", "topics": ["a", "b", "c"]})
    write_manifest(spool / "inbox" / "bad.json", {"batch_id": "../x", "topics": []})
    out = cli("status", "--spool", str(spool))
    assert out.returncode == 0, out.stderr
    assert "good.json: will be accepted as batch season_1 with 3 episodes" in out.stdout
    assert "bad.json: will be rejected" in out.stdout
    assert "batch_id" in out.stdout and "at least one episode" in out.stdout
    doc = json.loads(cli("status", "--spool", str(spool), "--json").stdout)
    queued = {q["file"]: q for q in doc["queued"]}
    assert queued["good.json"]["valid"] and queued["good.json"]["episodes"] == 3
    assert queued["good.json"]["plan"]["calls"] == {"sim": 9}
    assert not queued["bad.json"]["valid"] and len(queued["bad.json"]["problems"]) == 2
    assert cli("status", "--spool", str(spool), "--batch", "season_1", "--json").returncode == 0


def test_every_problem_is_named_at_once_model_level_included(tmp_path: Path) -> None:
    bad = write_manifest(tmp_path / "bad.json", {"batch_id": "../x", "topics": []})
    out = cli("validate", str(bad))
    assert out.returncode == 2
    assert "batch_id" in out.stderr and "at least one episode" in out.stderr
    dup = write_manifest(tmp_path / "dup.json", {"colour": 1, "topics": ["a"], "episodes": [{"number": 1, "topic": "b"}]})
    out = cli("validate", str(dup))
    assert "colour: unknown field" in out.stderr and "duplicate episode numbers: 1" in out.stderr


def test_quick_start_from_any_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "spool").mkdir(parents=True)
    # local research reads every source (the grant is checked in the stage too); sim audio keeps it quick
    (elsewhere / "spool" / "podspool.toml").write_text('[audio]\nprovider = "sim"\n')
    out = cli("submit", str(EXAMPLE), cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    placed = read_json(elsewhere / "spool" / "inbox" / "example_small.json")
    assert placed["episodes"][0]["sources"] == [str(REPO / "examples" / "sources" / "fermi_paradox.md")]
    run = cli("run", "--once", cwd=elsewhere)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(episodes_in(elsewhere / "spool", "done")) == 10, run.stderr[-2000:]


def test_confinement_still_holds_and_says_which_root_to_add(tmp_path: Path) -> None:
    (tmp_path / "secret.md").write_text("not for the podcast\n")
    batch = tmp_path / "batch"
    batch.mkdir()
    escape = write_manifest(batch / "b.json", {"episodes": [{"number": 1, "topic": "x", "sources": ["../secret.md"]}]})
    out = cli("submit", str(escape), "--spool", str(tmp_path / "spool"), cwd=batch)
    assert out.returncode == 2
    assert "outside the allowed source roots" in out.stderr and f'add "{tmp_path}"' in out.stderr
    # with roots configured, only they count, whatever folder the manifest is in
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (batch / "notes.md").write_text("a note\n")
    cfg = tmp_path / "roots.toml"
    cfg.write_text(f'[research]\nsource_roots = ["{allowed}"]\n')
    inside = write_manifest(batch / "c.json", {"episodes": [{"number": 1, "topic": "x", "sources": ["notes.md"]}]})
    out = cli("submit", str(inside), "--spool", str(tmp_path / "spool"), "--config", str(cfg), cwd=batch)
    assert out.returncode == 2 and f'add "{batch}"' in out.stderr and "source_roots" in out.stderr


def test_an_inbox_file_gets_no_grant(tmp_path: Path) -> None:
    """Only `podspool submit` grants a folder: a file dropped in the inbox still cannot reach outside."""
    (tmp_path / "secret.md").write_text("not for the podcast\n")
    spool = make_spool(tmp_path / "spool")
    work = tmp_path / "work"
    work.mkdir()
    write_manifest(spool / "inbox" / "sneaky.json",
                   {"episodes": [{"number": 1, "topic": "x", "sources": [str(tmp_path / "secret.md")]}]})
    out = cli("run", "--once", "--spool", str(spool), cwd=work)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (spool / "rejected" / "sneaky.json").exists()
    assert "outside the allowed source roots" in (spool / "rejected" / "sneaky.json.error.txt").read_text()


def test_a_batch_local_research_cannot_ground_is_refused(tmp_path: Path) -> None:
    topics = write_manifest(tmp_path / "topics.json", {"topics": ["The Fermi paradox", "Why we sleep"]})
    out = cli("submit", str(topics), "--spool", str(tmp_path / "spool"), cwd=tmp_path)
    assert out.returncode == 2
    assert "episode(s) 1, 2: no source files" in out.stderr and "sources_dir" in out.stderr
    assert not (tmp_path / "spool" / "inbox").exists() or not list((tmp_path / "spool" / "inbox").iterdir())
    # a folder to search makes the same batch possible
    cfg = tmp_path / "dir.toml"
    cfg.write_text(f'[research]\nsources_dir = "{REPO / "examples" / "sources"}"\n')
    assert cli("validate", str(topics), "--config", str(cfg)).returncode == 0
    # intake applies the same rule when the daemon hands it the research settings
    raw = topics.read_bytes()
    try:
        check_manifest(raw, [tmp_path], research=ResearchSettings())
    except ManifestProblem as exc:
        assert any("no source files" in p for p in exc.problems)
    else:
        raise AssertionError("intake accepted a batch local research cannot ground")
    check_manifest(raw, [tmp_path], research=ResearchSettings(provider="sim"))


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_status_gives_a_running_batch_an_eta_from_what_it_measured(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", extra="[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n",
                       latency_ms=300)
    write_manifest(spool / "inbox" / "b.json", {"batch_id": "eta", "topics": [f"t{i}" for i in range(8)]})
    daemon = start_daemon(spool, "--once")
    try:
        seen: dict[str, Any] = {}

        def measured_eta() -> bool:
            doc = json.loads(cli("status", "--spool", str(spool), "--json").stdout)
            batch = next(iter(doc["batches"]), None)
            if batch and batch["state"] == "running" and batch["completed"] >= 1:
                seen.update(batch)
                return True
            return False

        wait_for(measured_eta, 30, daemon, "a running batch with an episode done")
        assert seen["eta_seconds"] > 0 and "measured" in seen["eta_from"]
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_a_running_daemon_allows_a_newly_granted_folder_without_a_reload(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    daemon = start_daemon(spool)
    try:
        wait_for(lambda: (spool / "state" / "runtime.json").exists(), 30, daemon, "the daemon to start")
        folder = tmp_path / "season"
        folder.mkdir()
        (folder / "notes.md").write_text("notes\n")
        m = write_manifest(folder / "b.json", {"batch_id": "grant", "episodes": [
            {"number": 1, "topic": "x", "sources": ["notes.md"]}]})
        sub = cli("submit", str(m), "--spool", str(spool), cwd=tmp_path)
        assert sub.returncode == 0, sub.stderr
        wait_for(lambda: episodes_in(spool, "done") == ["ep_001_grant"], 30, daemon, "the batch to finish")
        assert not list((spool / "rejected").glob("grant*"))
        log = (spool / "logs" / "podspool.log").read_text()
        assert f"sources may now also come from {folder.resolve()}" in log
        research = json.loads((spool / "done" / "ep_001_grant" / "research.json").read_text())
        assert str((folder / "notes.md").resolve()) in json.dumps(research)  # read from the granted folder
        # a folder outside every root is still refused, by the running daemon's intake
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "x.md").write_text("x\n")
        write_manifest(spool / "inbox" / "out.json", {"batch_id": "out", "episodes": [
            {"number": 1, "topic": "x", "sources": [str(elsewhere / "x.md")]}]})
        wait_for(lambda: (spool / "rejected" / "out.json.error.txt").exists(), 30, daemon, "the refusal")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0


def test_the_daemon_refuses_at_intake_a_batch_local_research_cannot_ground(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    write_manifest(spool / "inbox" / "topics.json", {"batch_id": "bare", "topics": ["Why we sleep"]})
    out = cli("run", "--once", "--spool", str(spool), cwd=tmp_path)  # embedded defaults: local research
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (spool / "batches" / "bare").exists()
    reason = (spool / "rejected" / "topics.json.error.txt").read_text()
    assert "no source files" in reason and "sources_dir" in reason
