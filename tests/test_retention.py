"""Retention: a finished episode keeps its mp3 and text artifacts, not the wav (unless configured)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from podspool.daemon.config import Retention
from podspool.daemon.publishing.retention import DAY_S, drop_wav, sweep
from podspool.daemon.spool import Spool
from podspool_helpers import cli, make_spool, write_manifest


def _run(tmp_path: Path, extra: str = "") -> Path:
    root = make_spool(tmp_path / "spool", latency_ms=0, extra=extra, publish=True)
    write_manifest(root / "inbox" / "b.json", {"batch_id": "ret", "topics": ["one", "two"]})
    out = cli("run", "--once", "--spool", str(root))
    assert out.returncode == 0, out.stderr[-2000:]
    return root


def test_default_keeps_the_mp3_not_the_wav(tmp_path: Path) -> None:
    root = _run(tmp_path)
    done = sorted((root / "done").iterdir())
    assert len(done) == 2
    for folder in done:
        names = {p.name for p in folder.iterdir()}
        assert "audio.wav" not in names
        assert "audio.mp3" in names and "audio.json" in names and "script.md" in names


def test_keep_wav_days_keeps_it_until_the_sweep_finds_it_old(tmp_path: Path) -> None:
    root = _run(tmp_path, "[retention]\nkeep_wav_days = 2\n")
    folders = sorted((root / "done").iterdir())
    assert all((f / "audio.wav").exists() for f in folders)
    policy = Retention(keep_wav_days=2)
    assert sweep(Spool(root), policy, now=time.time() + 1 * DAY_S) == 0  # one day old: kept
    freed = sweep(Spool(root), policy, now=time.time() + 3 * DAY_S)
    assert freed > 0 and not any((f / "audio.wav").exists() for f in folders)
    assert all((f / "audio.mp3").exists() for f in folders)


def test_a_wav_without_an_mp3_is_never_removed(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    folder.mkdir()
    (folder / "audio.wav").write_bytes(b"RIFF" + b"\0" * 100)
    old = time.time() - 10 * DAY_S
    os.utime(folder / "audio.wav", (old, old))
    assert drop_wav(folder, 0) == 0 and (folder / "audio.wav").exists()


def test_status_and_doctor_show_the_spool_disk_use_and_free_space(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess

    root = _run(tmp_path)
    out = cli("status", "--json", "--spool", str(root))
    assert out.returncode == 0, out.stderr
    disk = json.loads(out.stdout)["disk"]
    # du counts each inode once, as the spool's figure must (audio.mp3 is a hard link of episode.mp3)
    du = int(subprocess.run(["du", "-s", "--block-size=1", str(root)], capture_output=True, text=True,
                            check=True).stdout.split()[0])
    assert abs(disk["spool_bytes"] - du) <= 16 * 1024  # a log line or two may land between the two reads
    assert disk["free_bytes"] == pytest.approx(shutil.disk_usage(root).free, rel=0.05)
    text = cli("doctor", "--spool", str(root)).stdout
    assert "disk: spool uses" in text and "free" in text
