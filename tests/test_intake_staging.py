"""Intake staging (daemon/intake/staging.py): files written in place in the invisible staging folder, made durable
by one sync before the rename that publishes them; a failed or interrupted intake leaves no batch or the
whole batch."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from podspool.daemon.intake import staging
from podspool.daemon.models import BatchManifest
from podspool.daemon.spool import Spool
from podspool.stages import fsio

DOC = {"batch_id": "st", "topics": ["alpha", "beta", "gamma"],
       "episodes": [{"number": 7, "topic": "x", "title": "T", "notes": "n", "sources": ["https://e.org/x"]}]}
EIDS = ["ep_001_st", "ep_002_st", "ep_003_st", "ep_007_st"]


class Killed(BaseException):
    """Stands for SIGKILL at a crash point."""


def _spool(tmp_path: Path) -> tuple[Spool, Path]:
    sp = Spool(tmp_path / "spool")
    sp.ensure()
    src = sp.inbox / "st.json"
    src.write_text(json.dumps(DOC))
    return sp, src


def _accept(sp: Spool, src: Path) -> tuple[str, list[int]]:
    return staging.accept(sp, src, BatchManifest.model_validate(DOC), src.read_bytes(), time.time())


def _files(root: Path) -> list[str]:
    return sorted(str(Path(d, n).relative_to(root)) for d, _dirs, names in os.walk(root) for n in names)


def test_a_batch_is_synced_before_the_rename_that_publishes_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sp, src = _spool(tmp_path)
    seen: list[list[str]] = []

    def syncfs(anchor: Path) -> bool:
        assert anchor == sp.staging  # a folder that stays put (its fd is kept open for syncfs)
        assert not sp.batch_dir("st").exists()  # nothing published yet
        seen.append(_files(sp.staging / "st"))
        return True

    monkeypatch.setattr(staging, "syncfs", syncfs)
    bid, numbers = _accept(sp, src)
    assert bid == "st" and numbers == [1, 2, 3, 7]
    # everything the batch publishes was written (whole, in place) when the one sync ran
    assert seen == [["batch.json", *(f"episodes/{e}/manifest.json" for e in EIDS), "session.json"]]
    assert sorted(os.listdir(sp.where("research"))) == EIDS
    assert os.listdir(sp.staging) == [] and not (sp.batch_dir("st") / "episodes").exists()
    assert not src.exists()
    for eid, number, topic in zip(EIDS, numbers, ["alpha", "beta", "gamma", "x"], strict=True):
        on_disk = sp.read_manifest(sp.folder("research", eid))
        assert (on_disk.session_id, on_disk.episode_number, on_disk.topic, on_disk.status) == (eid, number, topic,
                                                                                                "pending")
        assert (sp.folder("research", eid) / "manifest.json").stat().st_mode & 0o777 == 0o640
    assert not [f for f in _files(sp.root) if Path(f).name.startswith(".tmp-")]


def test_without_syncfs_every_file_and_folder_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp, src = _spool(tmp_path)
    synced: list[str] = []
    stage = str(sp.staging / "st")
    monkeypatch.setattr(staging, "syncfs", lambda anchor: False)
    for name in ("fsync_file", "fsync_dir"):  # staging's own syncs: those of its folder
        real = getattr(fsio, name)
        monkeypatch.setattr(fsio, name, lambda path, real=real: (
            synced.append(str(path)) if str(path).startswith(stage) else None, real(path)))
    _accept(sp, src)
    files = [f"{stage}/batch.json", f"{stage}/session.json", *(f"{stage}/episodes/{e}/manifest.json" for e in EIDS)]
    folders = [*(f"{stage}/episodes/{e}" for e in EIDS), f"{stage}/episodes", stage]
    assert synced == files + folders
    assert sorted(os.listdir(sp.where("research"))) == EIDS


def test_a_failure_while_staging_leaves_no_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp, src = _spool(tmp_path)
    real = staging._write_new
    calls = []

    def full_disk(path: str, data: bytes, dir_fd: int | None = None) -> None:
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", path)
        real(path, data, dir_fd)

    monkeypatch.setattr(staging, "_write_new", full_disk)
    with pytest.raises(OSError):
        _accept(sp, src)
    assert os.listdir(sp.staging) == [] and os.listdir(sp.batches) == [] and os.listdir(sp.where("research")) == []
    assert src.exists() and not sp.known_batch("st")


def test_recovery_finishes_a_half_released_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp, src = _spool(tmp_path)

    def crash(what: str) -> None:
        if what == "release ep_003_st":
            raise Killed  # the batch is committed, two of its episodes released

    monkeypatch.setattr(staging.fsio, "crashpoint", crash)
    with pytest.raises(Killed):
        _accept(sp, src)
    monkeypatch.undo()
    assert sorted(os.listdir(sp.where("research"))) == EIDS[:2]
    # a stray copy of a released episode (a crash between its rename and the folder's sync) is dropped
    shutil.copytree(sp.folder("research", EIDS[0]), sp.batch_dir("st") / "episodes" / EIDS[0])
    assert staging.recover_intake(sp) == ["st"]
    assert sorted(os.listdir(sp.where("research"))) == EIDS
    assert not (sp.batch_dir("st") / "episodes").exists()
    assert all((sp.folder("research", e) / "manifest.json").exists() for e in EIDS)


@pytest.mark.parametrize("crowded", [False, True])
def test_an_episode_already_in_some_location_is_not_released_again(tmp_path: Path, crowded: bool) -> None:
    """Both ways of looking: a location listed once, and one too big to list, asked name by name."""
    sp = Spool(tmp_path / "spool")
    sp.ensure()
    if crowded:
        for i in range(staging.LIST_RATIO * len(EIDS) + 1):
            (sp.where("done") / f"other_{i}").mkdir()
    (sp.where("done") / EIDS[1]).mkdir()
    (sp.where("failed") / EIDS[2]).symlink_to(tmp_path / "nowhere")  # dangling: not an episode there
    episodes = sp.batch_dir("st") / "episodes"
    for eid in EIDS:
        (episodes / eid).mkdir(parents=True)
    staging.release_episodes(sp.root, sp.batch_dir("st"))
    assert sorted(os.listdir(sp.where("research"))) == [EIDS[0], EIDS[2], EIDS[3]]
    assert not episodes.exists()
