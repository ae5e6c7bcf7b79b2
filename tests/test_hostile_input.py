"""Hostile inbox entries and disk trouble against a live daemon, and the modes of what it creates."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from podspool_helpers import cli, episodes_in, make_spool, read_json, start_daemon, wait_for, write_manifest

QUIET = "[logging]\nstderr = false\n"


def _log(spool: Path) -> str:
    p = spool / "logs" / "podspool.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_hostile_inbox_entries_are_rejected_and_the_daemon_goes_on(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0, extra=QUIET)
    cfg = spool / "podspool.toml"
    cfg.write_text(cfg.read_text().replace("[limits]", "[limits]\nmax_manifest_bytes = 4096"))
    secret = tmp_path / "secret.json"
    write_manifest(secret, {"batch_id": "stolen", "topics": ["x"]})
    proc = start_daemon(spool)
    inbox = spool / "inbox"
    try:
        wait_for(lambda: "podspool ready" in _log(spool), 30, proc, "the daemon")
        drop = tmp_path / "drop"
        drop.mkdir()
        hostile: dict[str, str] = {  # name -> what its .error.txt must say
            "link.json": "symbolic link",
            "fifo.json": "not a regular file",
            "big.json": "over the limit",
            "latin1.json": "not UTF-8",
            "slash_id.json": "batch_id",
            "dotdot_id.json": "batch_id",
            "etc_source.json": "episode 1",
            "escape_source.json": "episode 1",
            "nul.json": "not valid JSON",
            "dir.json": "not a regular file",
        }
        os.symlink(secret, drop / "link.json")
        os.mkfifo(drop / "fifo.json")
        (drop / "big.json").write_text(json.dumps({"batch_id": "big", "topics": ["x" * 400] * 20}))
        (drop / "latin1.json").write_bytes(b'{"batch_id": "caf\xe9", "topics": ["x"]}')
        write_manifest(drop / "slash_id.json", {"batch_id": "a/b", "topics": ["x"]})
        write_manifest(drop / "dotdot_id.json", {"batch_id": "../../etc", "topics": ["x"]})
        write_manifest(drop / "etc_source.json", {"batch_id": "src1", "episodes": [
            {"number": 1, "topic": "t", "sources": ["/etc/passwd"]}]})
        write_manifest(drop / "escape_source.json", {"batch_id": "src2", "episodes": [
            {"number": 1, "topic": "t", "sources": ["../../../../../etc/shadow"]}]})
        (drop / "nul.json").write_bytes(b"\x00" * 100)
        (drop / "dir.json").mkdir()
        for name in hostile:
            os.rename(drop / name, inbox / name)
        write_manifest(drop / "fine.json", {"batch_id": "fine", "topics": ["after the storm"]})
        os.rename(drop / "fine.json", inbox / "fine.json")
        wait_for(lambda: episodes_in(spool, "done") == ["ep_001_fine"], 30, proc, "the good batch after the bad")
        wait_for(lambda: not os.listdir(inbox), 10, proc, "the inbox to empty")
        assert proc.poll() is None
        for name, why in hostile.items():
            assert os.path.lexists(spool / "rejected" / name), name
            text = (spool / "rejected" / f"{name}.error.txt").read_text()
            assert why in text, (name, text)
        assert sorted(os.listdir(spool / "batches")) == ["fine"]
        assert read_json(secret)["batch_id"] == "stolen"  # the link's target was neither read nor moved
    finally:
        assert _stop(proc) == 0


def test_created_files_and_folders_are_not_world_readable(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool", latency_ms=0, extra=QUIET)
    write_manifest(spool / "inbox" / "m.json", {"batch_id": "m", "topics": ["a", "b"]})
    (spool / "inbox" / "bad.json").write_text("{")
    from podspool_helpers import cli

    old = os.umask(0o002)  # a permissive operator umask: run must tighten it itself
    try:
        run = cli("run", "--once", "--spool", str(spool))
    finally:
        os.umask(old)
    assert run.returncode == 0, run.stderr[-2000:]
    # the test's own files (the rejected one is the operator's file, moved as it was)
    mine = {spool / "inbox", spool / "podspool.toml", spool / "rejected" / "bad.json"}
    checked = 0
    for dirpath, dirs, files in os.walk(spool):
        for name in dirs + files:
            path = Path(dirpath) / name
            if path in mine or path.parent == spool / "inbox":
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert not mode & 0o007, f"{path.relative_to(spool)} is {oct(mode)}"
            checked += 1
    assert checked > 30


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only); a test that needs it is skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}); the ENOSPC hook test covers this")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(fs: Path) -> Path:
    ballast = fs / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # to the last byte
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return ballast


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_disk_full_pauses_then_resumes_losing_nothing(small_fs: Path, tmp_path: Path) -> None:
    spool = make_spool(small_fs / "spool", latency_ms=300)
    write_manifest(spool / "inbox" / "a.json", {"batch_id": "a", "topics": [f"T{i}" for i in range(8)]})
    # written now, renamed in while the disk is full (a rename needs no free space)
    write_manifest(spool / "inbox" / ".b.json.part", {"batch_id": "b", "topics": ["x", "y"]})
    env = {**os.environ, "PODSPOOL_CONFIG": ""}
    eids = sorted([f"ep_{i:03d}_a" for i in range(1, 9)] + ["ep_001_b", "ep_002_b"])
    stderr = tmp_path / "stderr.txt"
    # the log lives on the full disk; the journal (stderr, here a file elsewhere) does not
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(spool)],
                                stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        try:
            wait_for(lambda: len(episodes_in(spool, "done")) >= 1, 60, proc, "one episode done")
            ballast = _fill(small_fs)
            assert len(episodes_in(spool, "done")) < 8, "the batch finished before the disk filled: nothing tested"
            os.rename(spool / "inbox" / ".b.json.part", spool / "inbox" / "b.json")
            wait_for(lambda: "disk full" in stderr.read_text(), 30, proc, "the daemon to notice the full disk")
            # stay full a while (until a worker, too, fails to save its work, if one is in flight: that must
            # not use up the episode's tries)
            held = time.monotonic() + 3
            while time.monotonic() < held and "could not save its work" not in stderr.read_text():
                time.sleep(0.05)
            assert proc.poll() is None
            assert episodes_in(spool, "failed") == []
            ballast.unlink()
            wait_for(lambda: episodes_in(spool, "done") == eids, 60, proc, "every episode after space returned")
        finally:
            code = _stop(proc)
    assert code == 0
    assert "admission paused" in stderr.read_text()
    for eid in eids:
        m = read_json(spool / "done" / eid / "manifest.json")
        # a call whose result could not be saved was paid for, but it used up no attempt
        assert m["attempts"] == 1 and m["errors"] == [] and m["costs"]["total"] >= 0.03, (eid, m)
    for loc in ("research", "production", "audio", "failed", "inbox", "rejected"):
        assert not os.listdir(spool / loc), loc


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_stopping_while_a_result_waits_on_the_disk_keeps_its_artifact_for_reuse(tmp_path: Path) -> None:
    """A result the disk could not record when the daemon stops: its artifact, at its worker's temp name,
    needs no space to be renamed in, so the next start reuses it instead of paying for the call again."""
    def spool_at(root: Path) -> Path:
        spool = make_spool(root, extra="[concurrency]\nresearch = 1\nproduction = 1\naudio = 1\n", latency_ms=0)
        toml = spool / "podspool.toml"  # the disk stays "full" until the daemon is stopped
        toml.write_text(toml.read_text().replace("disk_retry_s = 1\n", "disk_retry_s = 60\n"))
        write_manifest(spool / "inbox" / "k.json", {"batch_id": "k", "topics": ["alpha"]})
        return spool

    # which durable operation renames research.json in (the supervisor's group commit), measured on a twin
    ops = tmp_path / "ops.txt"
    assert cli("run", "--once", "--spool", str(spool_at(tmp_path / "twin")),
               env={"PODSPOOL_CRASH_COUNT": str(ops)}).returncode == 0
    k = next(int(op) for role, _pid, op, what in (line.split(" ", 3) for line in ops.read_text().splitlines())
             if role == "supervisor" and what == "write ep_001_k/research.json")
    spool = spool_at(tmp_path / "spool")
    proc = start_daemon(spool, env={"PODSPOOL_CRASH_AT": str(k), "PODSPOOL_CRASH_ERRNO": "ENOSPC",
                                    "PODSPOOL_CRASH_ROLE": "supervisor"})
    log = spool / "logs" / "podspool.log"
    try:
        wait_for(lambda: log.exists() and "disk full" in log.read_text(), 30, proc, "the full disk")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert (spool / "research" / "ep_001_k" / "research.json").exists()  # kept, though not recorded
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    assert episodes_in(spool, "done") == ["ep_001_k"]
    assert "research done in" in (line := next(ln for ln in (spool / "done" / "ep_001_k" / "episode.log")
                                                .read_text().splitlines() if "research done" in ln))
    assert "(reused)" in line, line
