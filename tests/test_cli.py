"""The command line as an operator meets it: exit codes, messages, nothing placed when invalid."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from fakeapi import FakeApi, Reply
from podspool_helpers import cli, make_spool, write_manifest


def test_schema_is_the_manifest_json_schema() -> None:
    out = cli("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert {"batch_id", "topics", "episodes", "strategy", "priority", "budget_usd"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_validate_names_each_problem_and_exits_2(tmp_path: Path) -> None:
    good = write_manifest(tmp_path / "good.json", {"topics": ["a", "b"]})
    bad = write_manifest(tmp_path / "bad.json", {"batch_id": "no/slash", "topics": ["a"], "colour": 1})
    sim = str(make_spool(tmp_path / "spool") / "podspool.toml")  # topics alone need a research provider that searches
    ok = cli("validate", str(good), "--config", sim)
    assert ok.returncode == 0 and "valid (2 episodes)" in ok.stdout
    out = cli("validate", str(good), str(bad), "--config", sim)
    assert out.returncode == 2
    assert "bad.json: invalid" in out.stderr and "batch_id" in out.stderr and "colour: unknown field" in out.stderr
    assert cli("validate", str(tmp_path / "missing.json")).returncode == 2


def test_a_command_prints_its_results_not_library_debug_lines(tmp_path: Path) -> None:
    """The offline defaults check espeak's voices (which logs its start at DEBUG, for the daemon's log):
    an operator's `validate` shows its verdict and nothing of that."""
    manifest = write_manifest(tmp_path / "m.json", {"topics": ["a"]})
    out = cli("validate", str(manifest), cwd=tmp_path)
    assert "m.json: invalid" in out.stderr  # topics alone: the offline research has nothing to search
    assert "DEBUG" not in out.stderr and "espeak" not in out.stderr


def test_submit_places_nothing_when_any_file_is_invalid(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    good = write_manifest(tmp_path / "good.json", {"topics": ["a"]})
    bad = write_manifest(tmp_path / "bad.json", {"topics": []})
    out = cli("submit", str(good), str(bad), "--spool", str(spool))
    assert out.returncode == 2 and "at least one episode" in out.stderr
    assert list((spool / "inbox").iterdir()) == []

    out = cli("submit", str(good), "--spool", str(spool))
    assert out.returncode == 0
    bid = out.stdout.strip()
    assert bid.startswith("batch_")
    placed = json.loads((spool / "inbox" / f"{bid}.json").read_text())
    assert placed["batch_id"] == bid and placed["topics"] == ["a"]
    assert not [p for p in (spool / "inbox").iterdir() if p.name.startswith(".")]  # no temp file left

    named = write_manifest(tmp_path / "named.json", {"batch_id": "twice", "topics": ["a"]})
    assert cli("submit", str(named), "--spool", str(spool)).returncode == 0
    again = cli("submit", str(named), "--spool", str(spool))
    assert again.returncode == 2 and "already waiting" in again.stderr


def test_a_bad_config_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", extra="[concurrency]\nreserch = 3\n")
    out = cli("run", "--once", "--spool", str(spool))
    assert out.returncode == 2
    assert "[concurrency.reserch]" in out.stderr


def test_status_and_retry_refuse_bad_usage(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    (spool / "batches").mkdir()
    assert cli("status", "--spool", str(spool), "--batch", "nope").returncode == 2
    assert cli("retry", "--spool", str(spool)).returncode == 2
    assert cli("retry", "--budget", "5", "--spool", str(spool)).returncode == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_reports_keys_and_endpoints_without_printing_a_key(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    assert cli("doctor", "--spool", str(spool)).returncode == 0  # the offline defaults

    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[research]\nprovider = "perplexity"\n[providers.perplexity]\n'
                   f'base_url = "http://127.0.0.1:{_closed_port()}"\n')
    out = cli("doctor", "--spool", str(spool), "--config", str(cfg), env={"PERPLEXITY_API_KEY": ""})
    assert out.returncode == 1
    assert "FAIL key PERPLEXITY_API_KEY" in out.stdout and "answers: no answer" in out.stdout

    key = "pplx-doctor-SECRET-42"
    with FakeApi(Reply(body={})) as fake:
        cfg.write_text(f'[research]\nprovider = "perplexity"\n[providers.perplexity]\nbase_url = "{fake.base_url}"\n')
        out = cli("doctor", "--spool", str(spool), "--config", str(cfg), env={"PERPLEXITY_API_KEY": key})
    assert out.returncode == 0, out.stdout
    assert "ok   key PERPLEXITY_API_KEY" in out.stdout
    assert key not in out.stdout + out.stderr
