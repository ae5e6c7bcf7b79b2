"""Group commit on a real file system: spares swapped in without inode churn, and the fallback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from podspool.daemon.core import commit
from podspool.daemon.core.commit import CommitGroup, SparePool


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


def test_a_workers_deferred_files_wait_at_their_temp_names_until_the_group_renames_them(tmp_path: Path) -> None:
    from podspool.stages import fsio
    folder = tmp_path / "research" / "ep_001_b"
    folder.mkdir(parents=True)
    fsio.hold_renames()  # what a stage worker's task thread does (daemon/executors/local/workers.py)
    try:
        fsio.write_json(folder / "research.json", {"findings": []})
        fsio.write_bytes(folder / "episode.mp3", b"ID3 mp3")
        fsio.link(folder / "episode.mp3", folder / "audio.mp3")  # a link to a file still at its temp name
    finally:
        files = fsio.take_held_renames()
    assert [Path(final).name for _tmp, final in files] == ["research.json", "episode.mp3", "audio.mp3"]
    on_disk = sorted(p.name for p in folder.iterdir())
    assert len(on_disk) == 3 and all(n.startswith(fsio.TEMP_PREFIX) for n in on_disk), on_disk
    fsio.write_text(folder / "notes.txt", "after the task")  # deferring ended with the task
    assert (folder / "notes.txt").read_text() == "after the task"

    group = CommitGroup(tmp_path, SparePool(tmp_path / "spares"))
    group.adopt(tuple(files), "ep_001_b")
    group.write(folder / "manifest.json", b"{}", "ep_001_b")
    group.commit()
    assert sorted(p.name for p in folder.iterdir()) == ["audio.mp3", "episode.mp3", "manifest.json", "notes.txt",
                                                        "research.json"]
    assert (folder / "audio.mp3").stat().st_ino == (folder / "episode.mp3").stat().st_ino
    assert fsio.read_json(folder / "research.json") == {"findings": []}


def test_a_retracted_or_undone_adoption_keeps_the_workers_temps_for_the_next_try(tmp_path: Path) -> None:
    from podspool.stages import fsio
    folder = tmp_path / "ep"
    folder.mkdir()
    fsio.hold_renames()
    fsio.write_text(folder / "script.md", "# t")
    files = tuple(fsio.take_held_renames())
    group = CommitGroup(tmp_path)
    group.adopt(files, "ep")
    group.retract("ep")  # its manifest could not be written: the result is kept, and so are its files
    assert not group
    group.move(tmp_path / "missing", tmp_path / "elsewhere", "move missing", "other")
    group.adopt(files, "ep")
    with pytest.raises(commit.GroupFailed) as failed:
        group.commit()
    assert failed.value.failed == {"other", "ep"}
    # not renamed (after the failure), and not removed either: the kept result adopts it again
    assert [p.name for p in folder.iterdir()] == [Path(files[0][0]).name]
    again = CommitGroup(tmp_path)
    again.adopt(files, "ep")
    again.commit()
    assert [p.name for p in folder.iterdir()] == ["script.md"] and (folder / "script.md").read_text() == "# t"


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_a_move_never_lands_on_an_existing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  renameat2: bool) -> None:
    if not renameat2:
        monkeypatch.setattr(commit, "_renameat2", None)
    src, dst = tmp_path / "research" / "ep_001_b", tmp_path / "production" / "ep_001_b"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text("m")
    dst.mkdir(parents=True)  # an empty folder of the same name: rename() alone would replace it silently
    group = CommitGroup(tmp_path)
    group.move(src, dst, "move ep_001_b research->production", "ep_001_b")
    with pytest.raises(commit.GroupFailed) as info:
        group.commit()
    assert isinstance(info.value.cause, FileExistsError) and info.value.failed == {"ep_001_b"}
    assert (src / "manifest.json").read_text() == "m" and list(dst.iterdir()) == []
    dst.rmdir()
    group.move(src, dst, "move ep_001_b research->production", "ep_001_b")
    group.commit()
    assert (dst / "manifest.json").read_text() == "m" and not src.exists()


def test_a_known_rewrite_needs_no_look_and_still_lands_when_its_file_vanished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = SparePool(tmp_path / "spares")
    target = tmp_path / "ep" / "manifest.json"
    target.parent.mkdir()
    target.write_text("old")
    looked: list[Path] = []
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: looked.append(self) or real_exists(self))
    group = CommitGroup(tmp_path, pool)
    group.write(target, b"new", "ep", replaces=True)
    assert target not in looked  # the caller said the file exists: written into a spare without a look
    target.unlink()  # gone before the commit: the spare is renamed in, and the rewrite lands all the same
    synced: list[str] = []
    monkeypatch.setattr(commit, "syncfs", lambda anchor: False)  # the fallback: file and folder fsyncs
    monkeypatch.setattr(commit.fsio, "fsync_dir", lambda d: synced.append(str(d)))
    group.commit()
    assert target.read_text() == "new"
    # the spare left the spares folder: that entry is synced too, or it could come back after a power cut
    assert str(pool.folder) in synced and str(target.parent) in synced
