"""Group commit on a real file system: spares swapped in without inode churn, and the fallback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from podspool.daemon import commit
from podspool.daemon.commit import CommitGroup, SparePool


def _rewrite(root: Path, pool: SparePool | None, target: Path, text: str) -> None:
    group = CommitGroup(root, pool)
    group.write(target, text.encode(), "ep")
    group.commit()


def test_rewrites_swap_two_inodes_and_leave_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ep" / "manifest.json"
    target.parent.mkdir()
    pool = SparePool(tmp_path / "spares")
    _rewrite(tmp_path, pool, target, "v0")  # a new file: temp and rename
    inodes = set()
    for i in range(1, 6):
        _rewrite(tmp_path, pool, target, f"v{i}")
        assert target.read_text() == f"v{i}"
        inodes.add(target.stat().st_ino)
    # the live file and the one spare trade places: no inode is created or freed after the first spare
    assert len(inodes) == 2
    assert sorted(p.name for p in (tmp_path / "spares").iterdir()) == ["spare-1"]
    assert (tmp_path / "spares" / "spare-1").read_text() == "v4"  # the previous version, nobody's file
    _rewrite(tmp_path, pool, target, "short")
    _rewrite(tmp_path, pool, target, "s")  # a shorter text over a longer spare: cut to length
    assert target.read_text() == "s"
    assert os.listdir(target.parent) == ["manifest.json"]
    # a new life adopts the spares it finds
    again = SparePool(tmp_path / "spares")
    _rewrite(tmp_path, again, target, "v6")
    assert target.read_text() == "v6" and len(list((tmp_path / "spares").iterdir())) == 1


def test_without_renameat2_a_rewrite_falls_back_to_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "_renameat2", None)
    target = tmp_path / "manifest.json"
    target.write_text("old")
    pool = SparePool(tmp_path / "spares")
    assert not pool.works
    _rewrite(tmp_path, pool, target, "new")
    assert target.read_text() == "new" and not (tmp_path / "spares").exists()


def test_a_failed_exchange_target_is_replaced_and_the_group_goes_on(tmp_path: Path) -> None:
    pool = SparePool(tmp_path / "spares")
    gone = tmp_path / "gone.json"
    gone.write_text("x")
    kept = tmp_path / "kept.json"
    kept.write_text("y")
    group = CommitGroup(tmp_path, pool)
    group.write(gone, b"1", "a")
    group.write(kept, b"2", "b")
    gone.unlink()  # vanished between the write and the commit: the spare is renamed in instead
    group.commit()
    assert gone.read_text() == "1" and kept.read_text() == "2"
