"""Text that came from outside never forges a log line, drives a terminal or breaks a feed; a URL's
secrets (user-info, query values) never reach any output."""

from __future__ import annotations

import json
from pathlib import Path

from loguru import logger
from podspool.daemon.observers.alerts import AlertsHook
from podspool.daemon.observers.logs import setup
from podspool_helpers import cli, make_spool, write_manifest

FORGED = "2030-01-01 00:00:00.000 | CRITICAL | - | - | - | forged line"


def test_newlines_in_an_inbox_name_and_a_field_name_do_not_forge_log_lines_or_status(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    (spool / "inbox" / f"evil\n{FORGED}\x1b[2J.json").write_text("{}")
    status = cli("status", "--spool", str(spool))  # the inbox's waiting manifests are listed by name
    write_manifest(spool / "inbox" / "fields.json", {"topics": ["Tides"], f"x\n{FORGED}": 1})
    run = cli("run", "--once", "--spool", str(spool), timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (spool / "logs" / "podspool.log").read_text()
    for text in (log, run.stderr, status.stdout):
        assert not any(line.startswith(FORGED[:23]) for line in text.splitlines()), text[-3000:]
        assert "\x1b" not in text
    assert "evil\\n2030" in log and "x\\n2030" in log


def test_control_characters_in_titles_and_topics_are_refused_at_intake(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "b.json", {"episodes": [
        {"number": 1, "topic": "Tides\x07", "title": "Moon\x0bTitle", "notes": "line one\nline two\ttab"}]})
    out = cli("validate", str(manifest))
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "episodes.0.topic" in text and "U+0007" in text and "episodes.0.title" in text and "U+000B" in text
    assert "notes" not in text  # line breaks and tabs are fine in notes
    feedable = write_manifest(tmp_path / "ok.json", {"episodes": [{"number": 1, "topic": "Tides",
                                                                   "notes": "line one\nline two\ttab"}]})
    spool = make_spool(tmp_path / "spool")  # sim research: no sources needed
    assert cli("validate", str(feedable), "--config", str(spool / "podspool.toml")).returncode == 0


def test_url_secrets_never_reach_a_log(tmp_path: Path) -> None:
    setup(tmp_path / "logs", stderr=False)
    try:
        logger.error("the broker redis://default:hunter2-pw@127.0.0.1:6379/0 does not answer")
        logger.error("fetched https://example.org/a?api_key=qwerty-key&page=2")
        hook = AlertsHook("http://127.0.0.1:9/hooks/abc?token=SEKRIT-TOKEN", timeout_s=0.2, backoff_s=0.01)
        hook._deliver({"event": "crash"}, attempts=1)
        hook.close()
    finally:
        logger.remove()
    log = (tmp_path / "logs" / "podspool.log").read_text()
    assert "hunter2-pw" not in log and "qwerty-key" not in log and "SEKRIT-TOKEN" not in log, log
    assert "redis://default:***@127.0.0.1:6379/0" in log and "?api_key=***&page=***" in log
    assert "webhook" in log and "not delivered" in log
    json.dumps(log)  # plain text
