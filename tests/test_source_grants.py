"""Where a manifest's sources may come from is decided by what folders are, not by their names: a grant
holds for the folder `submit` saw (device and inode) and for the manifests it placed; the spool and `/`
are never roots; a source is read through one descriptor, never following a link, never blocking."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from podspool.stages.sources.resolve import SourceError, read_source
from podspool_helpers import cli, make_spool, write_manifest


def _rejections(spool: Path) -> dict[str, str]:
    return {p.name.removesuffix(".error.txt"): p.read_text() for p in (spool / "rejected").glob("*.error.txt")}


def test_a_grant_is_for_its_folder_and_its_manifests_only(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "tides.md").write_text("# Tides\n\nThe moon pulls the sea.\n")
    submitted = write_manifest(notes / "b.json", {"batch_id": "granted", "episodes": [
        {"number": 1, "topic": "Tides", "sources": ["tides.md"]}]})
    sub = cli("submit", str(submitted), "--spool", str(spool))
    assert sub.returncode == 0, sub.stderr
    # dropped straight into the inbox, citing the granted folder: no grant was made for this file
    (spool / "inbox" / "dropped.json").write_text(json.dumps({"batch_id": "dropped", "episodes": [
        {"number": 1, "topic": "Tides", "sources": [str(notes / "tides.md")]}]}))
    (tmp_path / "cwd").mkdir()
    run = cli("run", "--once", "--spool", str(spool), cwd=tmp_path / "cwd", timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    rejected = _rejections(spool)
    assert "dropped.json" in rejected and "outside the allowed source roots" in rejected["dropped.json"]
    assert "granted.json" not in rejected and (spool / "batches" / "granted").is_dir()


def test_a_granted_folder_swapped_for_a_symlink_to_root_grants_nothing(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "tides.md").write_text("# Tides\n\nThe moon pulls the sea.\n")
    first = write_manifest(notes / "a.json", {"batch_id": "first", "episodes": [
        {"number": 1, "topic": "Tides", "sources": ["tides.md"]}]})
    assert cli("submit", str(first), "--spool", str(spool)).returncode == 0
    placed = (spool / "inbox" / "first.json").read_text()
    os.rename(notes, tmp_path / "notes.old")
    os.symlink("/", notes)  # the granted name now reaches the whole machine
    # the placed manifest, rewritten to cite a private file through the granted name
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\nnot granted to anyone\n")
    through = notes / str(secret).lstrip("/")  # notes/tmp/.../secret.md: the secret, if notes is /
    (spool / "inbox" / "first.json").write_text(placed.replace(str(notes / "tides.md"), str(through)))
    (tmp_path / "cwd").mkdir()
    run = cli("run", "--once", "--spool", str(spool), cwd=tmp_path / "cwd", timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "outside the allowed source roots" in _rejections(spool)["first.json"]


def test_the_spool_is_never_a_root(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    other = spool / "batches" / "other"
    other.mkdir(parents=True)
    (other / "script.md").write_text("**Alex:** another batch's private script\n")
    # under systemd the daemon's working directory is the spool: a relative path would reach its files
    (spool / "inbox" / "peek.json").write_text(json.dumps({"batch_id": "peek", "episodes": [
        {"number": 1, "topic": "Tides", "sources": ["batches/other/script.md"]}]}))
    run = cli("run", "--once", "--spool", str(spool), cwd=spool, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "peek.json" in _rejections(spool)
    assert not (spool / "batches" / "peek").exists()


def test_root_is_never_a_root_for_validate(tmp_path: Path) -> None:
    private = tmp_path / "private.md"
    private.write_text("# Private\n\nnot for a manifest from elsewhere\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = write_manifest(elsewhere / "b.json", {"episodes": [
        {"number": 1, "topic": "Tides", "sources": [str(private)]}]})
    out = cli("validate", str(manifest), cwd=Path("/"))  # started by hand from /
    assert out.returncode == 2 and "outside the allowed source roots" in out.stdout + out.stderr


def test_a_source_is_read_through_one_descriptor(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("# Fine\n")
    real, data = read_source("ok.md", [tmp_path])
    assert real == tmp_path / "ok.md" and data == b"# Fine\n"
    os.mkfifo(tmp_path / "pipe.md")  # no writer: a blocking open or read would wait forever
    started = time.monotonic()
    with pytest.raises(SourceError, match="not a regular file"):
        read_source("pipe.md", [tmp_path])
    assert time.monotonic() - started < 5
    (tmp_path / "link.md").symlink_to(tmp_path / "ok.md")
    inside, _ = read_source("link.md", [tmp_path])  # a link inside the roots is followed to its file, once
    assert inside == tmp_path / "ok.md"


def test_a_sources_folder_is_confined_to_itself_and_capped(tmp_path: Path) -> None:
    from podspool.stages.sources.resolve import confined_files

    folder = tmp_path / "shelf"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# A\n")
    (folder / "sub" / "b.txt").write_text("B\n")
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "secret.md").write_text("# private\n")
    (folder / "leak.md").symlink_to(secret / "secret.md")  # a link out of the folder
    (folder / "door").symlink_to(secret)  # a folder link out of it
    os.mkfifo(folder / "pipe.md")
    files, skipped = confined_files(folder)
    assert files == [folder / "a.md", folder / "sub" / "b.txt"]
    assert "leak.md (not a regular file)" in skipped and "pipe.md (not a regular file)" in skipped
    capped, more = confined_files(folder, max_files=1)
    assert capped == [folder / "a.md"] and any("over the folder's limits" in s for s in more)
