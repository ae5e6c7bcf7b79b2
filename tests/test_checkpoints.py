"""Checkpoints ride the supervisor's next group commit: on disk only once it commits, never listed by a
summary before they are, and written again when the commit that carried them fails."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from podspool.daemon.core import commit
from podspool.daemon.core.batches import CHECKPOINTS, BatchBook, checkpoint_name, summary_name
from podspool.daemon.core.commit import CommitGroup, GroupFailed
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.observers.hooks import Hook, Observers
from podspool.daemon.spool import Spool

BID = "cp"


class Completions(Hook):
    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        self.sessions.append(session)


def _book(tmp_path: Path, total: int) -> tuple[Spool, BatchBook, Completions]:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    spool.batch_dir(BID).mkdir(parents=True)
    completions = Completions()
    book = BatchBook(spool, 5, EpisodeBook(), Observers([completions]))
    b = book.add(BID, {"batch_id": BID, "seq": 1.0})
    b.tally.total = total
    return spool, book, completions


def _finish(book: BatchBook, n: int) -> None:
    b = book.by_id[BID]
    for _ in range(n):
        number = b.tally.completed + 1
        m = EpisodeManifest(episode_number=number, session_id=f"ep_{number:03d}_{BID}", batch_id=BID, topic="t",
                            status="done")
        b.tally.finish("done", m)
        b.finished_since_checkpoint.append(("done", m))


def test_a_checkpoint_is_on_disk_only_once_its_group_commits(tmp_path: Path) -> None:
    spool, book, _ = _book(tmp_path, total=20)
    _finish(book, 5)
    group = CommitGroup(spool.root)
    book.after_change(BID, group)
    path = spool.batch_dir(BID) / checkpoint_name(BID, 1)
    assert not path.exists() and group  # written to its temp name, waiting for the commit
    group.commit()
    assert json.loads(path.read_text())["checkpoint"] == 1
    assert book.by_id[BID].checkpoints == [checkpoint_name(BID, 1)]


def test_a_completing_batch_commits_its_checkpoints_before_the_summary(tmp_path: Path) -> None:
    spool, book, completions = _book(tmp_path, total=10)
    _finish(book, 10)
    book.after_change(BID, CommitGroup(spool.root))
    summary = json.loads((spool.batch_dir(BID) / summary_name(BID)).read_text())
    listed = summary["batch_result"]["checkpoints"]
    assert listed == [checkpoint_name(BID, 1), checkpoint_name(BID, 2)]
    assert all((spool.batch_dir(BID) / name).is_file() for name in listed)
    assert len(completions.sessions) == 1


def test_a_failed_commit_writes_its_checkpoints_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool, book, _ = _book(tmp_path, total=20)
    _finish(book, 5)
    group = CommitGroup(spool.root)
    book.after_change(BID, group)

    def full(anchor: Path) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commit, "syncfs", full)
    with pytest.raises(GroupFailed) as failed:
        group.commit()
    assert (CHECKPOINTS, BID) in failed.value.failed  # what the supervisor hands to checkpoints_lost
    monkeypatch.undo()
    book.checkpoints_lost(BID)
    assert book.by_id[BID].checkpoints == []
    again = CommitGroup(spool.root)
    book.after_change(BID, again)
    again.commit()
    assert (spool.batch_dir(BID) / checkpoint_name(BID, 1)).is_file()
    assert sorted(p.name for p in spool.batch_dir(BID).iterdir()) == [checkpoint_name(BID, 1)]  # no temp left
