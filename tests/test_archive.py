"""`podspool archive`: finished batches move under archive/<batch_id>/, crash-safe, still seen by status
and feed; a running daemon gets a control request instead."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import feedparser
import pytest
from podspool.daemon.publishing import archive
from podspool.daemon.spool import Spool
from podspool_helpers import cli, episodes_in, make_spool, write_manifest
from publish_helpers import BATCH, EIDS, copy_spool, finished_spool, temp_files


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_spool(tmp_path_factory.mktemp("archive") / "spool")


def _status(spool: Path) -> dict:
    r = cli("status", "--spool", str(spool), "--json")
    assert r.returncode == 0, r.stderr
    return {b["batch_id"]: b for b in json.loads(r.stdout)["batches"]}


def _archived_whole(spool: Path) -> None:
    assert episodes_in(spool, "done") == [] and not (spool / "batches" / BATCH).exists()
    assert sorted(os.listdir(spool / "archive" / BATCH / "episodes")) == EIDS
    assert (spool / "archive" / BATCH / "batch" / "batch.json").is_file()
    for eid in EIDS:
        assert (spool / "archive" / BATCH / "episodes" / eid / "episode.mp3").is_file()


def test_archive_a_batch_then_status_and_feed_still_see_it(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    assert cli("feed", "--spool", str(s)).returncode == 0
    before = feedparser.parse(s / "feed" / "feed.xml")
    r = cli("archive", "--spool", str(s), "--batch", BATCH)
    assert r.returncode == 0, r.stderr
    assert f"{BATCH}: archived" in r.stdout
    _archived_whole(s)
    batch = _status(s)[BATCH]
    assert (batch["total"], batch["completed"], batch["failed"], batch["archived"]) == (2, 2, 0, True)
    assert batch["costs"]["total"] > 0
    assert cli("status", "--spool", str(s), "--batch", BATCH).returncode == 0
    assert cli("feed", "--spool", str(s)).returncode == 0
    after = feedparser.parse(s / "feed" / "feed.xml")
    assert not after.bozo
    # same episodes, same guids and URLs: a subscriber sees nothing change
    assert sorted((e.id, e.enclosures[0].href) for e in after.entries) == \
        sorted((e.id, e.enclosures[0].href) for e in before.entries)
    for eid in EIDS:
        assert os.path.samefile(s / "feed" / eid / "episode.mp3", s / "archive" / BATCH / "episodes" / eid / "episode.mp3")
    again = cli("archive", "--spool", str(s), "--batch", BATCH)  # idempotent
    assert again.returncode == 0 and "0 episode folders moved" in again.stdout


def test_unfinished_or_unknown_batches_are_refused(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    os.rename(s / "done" / EIDS[1], s / "audio" / EIDS[1])  # still waiting for its audio
    r = cli("archive", "--spool", str(s), "--batch", BATCH)
    assert r.returncode == 2 and f"{EIDS[1]} is still in audio/" in r.stderr
    assert episodes_in(s, "done") == [EIDS[0]] and not (s / "archive" / BATCH / "batch").exists()
    assert archive.archivable(s, None) == []
    assert cli("archive", "--spool", str(s), "--batch", "nope").returncode == 2
    assert cli("archive", "--spool", str(s)).returncode == 2  # neither --batch nor --older-than
    os.rename(s / "audio" / EIDS[1], s / "done" / EIDS[1])
    (s / "batches" / BATCH / "batch.json").write_text("{not json")  # a reason to refuse, never a crash
    assert archive.unfinished(s, BATCH) and archive.archivable(s, None) == []
    r = cli("archive", "--spool", str(s), "--batch", BATCH)
    assert r.returncode == 2 and "batch.json" in r.stderr and episodes_in(s, "done") == EIDS


def test_older_than_picks_batches_by_when_they_finished(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    assert archive.archivable(s, 1.0) == []
    assert archive.archivable(s, 1.0, now=time.time() + 2 * 86400) == [BATCH]
    assert archive.archivable(s, None) == [BATCH]
    r = cli("archive", "--spool", str(s), "--older-than", "1")
    assert r.returncode == 0 and "no finished batch" in r.stdout and episodes_in(s, "done") == EIDS
    assert cli("archive", "--spool", str(s), "--older-than", "0").returncode == 0
    _archived_whole(s)


def test_a_running_daemon_gets_a_control_request(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    owner = Spool(s)
    owner.lock()  # as a running daemon holds it
    try:
        r = cli("archive", "--spool", str(s), "--batch", BATCH)
    finally:
        assert owner._lock_fd is not None
        os.close(owner._lock_fd)
    assert r.returncode == 0 and "sent to the running daemon" in r.stdout
    requests = [json.loads(p.read_text()) for p in (s / "state" / "requests").glob("*.json")]
    assert requests == [{"archive": {"batch": BATCH, "older_than_days": None}}]
    assert episodes_in(s, "done") == EIDS  # the daemon, not the command, moves its folders


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_kill_9_at_every_move_of_archive(spool: Path, tmp_path: Path) -> None:
    """Nothing lost or duplicated at any crash point; status reads the half-archived batch; a rerun finishes."""
    count_file = tmp_path / "ops.log"
    probe = copy_spool(spool, tmp_path / "probe")
    r = cli("archive", "--spool", str(probe), "--batch", BATCH, env={"PODSPOOL_CRASH_COUNT": str(count_file)})
    assert r.returncode == 0
    ops = count_file.read_text().splitlines()
    assert len(ops) == len(EIDS) + 1 and "archive batch" in ops[-1]  # one rename per folder, the batch last
    for k in range(1, len(ops) + 1):
        s = copy_spool(spool, tmp_path / f"k{k}")
        r = cli("archive", "--spool", str(s), "--batch", BATCH, env={"PODSPOOL_CRASH_AT": str(k)})
        assert r.returncode == -9, (k, r.stderr)
        for eid in EIDS:  # each episode in exactly one place
            places = [p for p in (s / "done" / eid, s / "archive" / BATCH / "episodes" / eid) if p.exists()]
            assert len(places) == 1, (k, eid, places)
        assert (s / "batches" / BATCH).exists() != (s / "archive" / BATCH / "batch").exists(), k
        batch = _status(s)[BATCH]
        assert (batch["total"], batch["completed"]) == (2, 2), k
        r = cli("archive", "--spool", str(s), "--batch", BATCH)
        assert r.returncode == 0, (k, r.stderr)
        _archived_whole(s)
        assert temp_files(s) == [], k


def test_an_archived_batch_id_is_never_used_again(tmp_path: Path) -> None:
    root = make_spool(tmp_path / "spool", publish=True)
    (root / "archive" / "old" / "batch").mkdir(parents=True)
    assert Spool(root).known_batch("old")
    manifest = write_manifest(tmp_path / "old.json", {"batch_id": "old", "topics": ["again"]})
    out = cli("submit", str(manifest), "--spool", str(root))
    assert out.returncode == 2 and "already known" in out.stderr
