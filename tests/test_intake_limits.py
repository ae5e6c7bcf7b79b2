"""Intake cannot stop the daemon: a name too long for rejected/, an 8 MB manifest of 700,000 mistakes,
a manifest citing more sources than any batch needs. Each fails its own file, with its reason, quickly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from document_makers import make_pdf, make_slow_pdf
from podspool.daemon.intake import apart
from podspool.daemon.intake.limits import MAX_PROBLEMS, MAX_SOURCES
from podspool.daemon.intake.validate import ManifestProblem
from podspool_helpers import cli, episodes_in, make_spool, wait_for, write_manifest

WATCHDOG_SEC = 30  # systemd/podspool.service


def test_a_name_too_long_for_rejected_fails_that_file_and_admission_goes_on(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    long_name = "x" * 235 + ".json"  # 240 characters: its error file's temp name passes NAME_MAX (255)
    (spool / "inbox" / long_name).write_text('{"topics": []}')
    write_manifest(spool / "inbox" / "good.json", {"batch_id": "good", "topics": ["Tides"]})
    run = cli("run", "--once", "--spool", str(spool), timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (spool / "inbox" / long_name).exists()
    [error] = list((spool / "rejected").glob("*.error.txt"))
    text = error.read_text()
    assert "too long" in text and long_name in text and "at least one episode" in text, text
    assert episodes_in(spool, "done") == ["ep_001_good"]
    log = (spool / "logs" / "podspool.log").read_text()
    assert "admission paused" not in log, log[-3000:]


def test_too_many_sources_are_refused_unread(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "many.json", {"batch_id": "many", "episodes": [
        {"number": i, "topic": "Tides", "sources": [f"missing-{i}-{j}.md" for j in range(50)]}
        for i in range(1, MAX_SOURCES // 50 + 2)]})
    out = cli("validate", str(manifest))
    assert out.returncode == 2
    assert f"at most {MAX_SOURCES} per manifest" in out.stderr + out.stdout
    assert "missing-1-0.md" not in out.stderr + out.stdout  # none was looked at


def _citing(name: str, episodes: int) -> bytes:
    return json.dumps({"batch_id": "docs", "episodes": [
        {"number": i, "topic": "The harbour", "sources": [name]} for i in range(1, episodes + 1)]}).encode()


@pytest.mark.usefixtures("own_fork_server")
def test_documents_are_checked_apart_and_a_slow_one_is_refused_in_bounded_time(tmp_path: Path) -> None:
    """A manifest citing documents is checked in a child process: a good PDF gives the same manifest as a
    check in place would, and three citations of a PDF that takes 2 s each to read are refused when the
    bound runs out, with the reason, instead of holding the caller for 6 s."""
    make_pdf(tmp_path / "report.pdf", ["The harbour wall was rebuilt in 1904 after the great storm."])
    make_slow_pdf(tmp_path / "slow.pdf")
    good = _citing("report.pdf", 2)
    assert apart.names_documents(good) and not apart.names_documents(b'{"topics": ["pdf files"]}')
    escaped = _citing("slow.pdf", 1).replace(b".pdf", b"\\u002epdf")
    assert b".pdf" not in escaped and apart.names_documents(escaped)  # escaped in the JSON: a PDF all the same
    assert not apart.names_documents(_citing("notes.md", 1) + b"report.pdf")  # not JSON: refused unread
    manifest = apart.check_apart(good, [tmp_path])
    assert [ep.sources for ep in manifest.all_episodes()] == [["report.pdf"], ["report.pdf"]]
    with pytest.raises(ManifestProblem) as refused:
        apart.check_apart(_citing("slow.pdf", 3), [tmp_path], timeout_s=1.0)
    assert "took more than 1 s to check" in refused.value.problems[0]
    with pytest.raises(ManifestProblem) as missing:  # the child's own verdicts come back as they are
        apart.check_apart(_citing("gone.pdf", 1), [tmp_path])
    assert "gone.pdf" in missing.value.problems[0]


@dataclass
class _Watch:
    proc: subprocess.Popen[bytes]
    sock: socket.socket

    def pings(self, since: float, limit_s: float, until: Callable[[list[float]], bool]) -> list[float]:
        """The times of the daemon's WATCHDOG=1 pings from `since` until `until(pings)` (or `limit_s`)."""
        pings: list[float] = []
        while time.monotonic() < since + limit_s and not until(pings):
            try:
                if "WATCHDOG=1" in self.sock.recv(65536).decode():
                    pings.append(time.monotonic())
            except TimeoutError:
                pass
        return pings


def _longest_gap(since: float, pings: list[float]) -> float:
    return max(b - a for a, b in zip([since, *pings], pings, strict=False))


@contextmanager
def _watched_daemon(tmp_path: Path, spool: Path, cwd: Path | None = None) -> Iterator[_Watch]:
    """A running daemon that pings a systemd watchdog (a socket of the test's) each loop, once READY=1."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(0.2)
    env = {**os.environ, "PODSPOOL_CONFIG": "", "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_SEC * 10**6)}
    err = open(tmp_path / "stderr.txt", "w+")  # noqa: SIM115 -- a file: a pipe nobody reads would fill
    proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(spool)],
                            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
    try:
        def ready() -> bool:
            try:
                return "READY=1" in sock.recv(65536).decode()
            except TimeoutError:
                return False

        wait_for(ready, 30, proc, "READY=1")
        yield _Watch(proc, sock)
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()
        err.close()


def _hostile_manifest(path: Path) -> int:
    """An 8 MB manifest with about 700,000 problems (seven per episode, 99,999 episodes)."""
    eps = [{"number": "x", "topic": 5, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5} for _ in range(99999)]
    path.write_text(json.dumps({"batch_id": "hostile", "episodes": eps}))
    return path.stat().st_size


def test_a_hostile_manifest_holds_the_main_loop_less_than_a_watchdog_period(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    with _watched_daemon(tmp_path, spool) as watch:
        size = _hostile_manifest(tmp_path / "hostile.json")
        os.rename(tmp_path / "hostile.json", spool / "inbox" / "hostile.json")  # renamed in whole
        dropped = time.monotonic()
        pings = watch.pings(dropped, 60, lambda pings: bool(
            list((spool / "rejected").glob("*.error.txt")) and pings and pings[-1] > dropped + 2))
    gap = _longest_gap(dropped, pings)
    print(f"hostile manifest of {size / 1e6:.1f} MB: longest gap between watchdog pings {gap:.1f} s")
    assert gap < WATCHDOG_SEC, f"the main loop was held {gap:.1f} s"
    [error] = list((spool / "rejected").glob("*.error.txt"))
    text = error.read_text()
    assert len(text) < 64 * 1024 and text.count("\n- ") == MAX_PROBLEMS + 1, len(text)
    assert "more field problems" in text or "more problems" in text
    log = (spool / "logs" / "podspool.log").read_text()
    assert max(len(line) for line in log.splitlines()) < 128 * 1024


def test_a_state_folder_on_another_file_system_is_refused_at_start(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    elsewhere = Path(tempfile.mkdtemp(prefix="podspool-state-", dir=shm))
    try:
        spool = make_spool(tmp_path / "spool")
        (spool / "state").symlink_to(elsewhere)
        run = cli("run", "--once", "--spool", str(spool), timeout=60)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert run.returncode == 1
    assert "state/ is on another file system than the spool" in run.stderr, run.stderr[-2000:]


def test_one_tick_takes_about_one_largest_manifest(tmp_path: Path) -> None:
    """Three big manifests arriving together are handed out one per call, each call waking the loop for
    the next: the watchdog is pinged between them."""
    from podspool.daemon.intake.inbox import Inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("a.json", "b.json", "c.json", "small.json"):
        (inbox / name).write_bytes(b" " * (10 if name == "small.json" else 3_000_000))
    wakes: list[int] = []
    watch = Inbox(inbox, 0.0, 0.0, wake=lambda: wakes.append(1), bytes_per_call=4_000_000)
    calls = []
    for i in range(4):
        taken = watch.due(now=time.monotonic() + 10 * i)
        calls.append(sorted(p.name for p in taken))
        for p in taken:
            p.unlink()  # accepted or rejected: gone from the inbox
    assert calls == [["a.json", "small.json"], ["b.json"], ["c.json"], []], calls
    assert len(wakes) >= 2  # the loop is woken for the rest at once, not at the next rescan


@pytest.mark.soak  # a daemon waits out the 20 s bound: .ci/run runs it with the soak tests
def test_a_manifest_of_slow_documents_is_refused_before_the_watchdog_fires(tmp_path: Path) -> None:
    """Thirty citations of a 3 KB PDF that takes 2 s to read (a minute in all) reach a running daemon: the
    manifest is refused when the check's bound (apart.CHECK_S) runs out, the watchdog is pinged within its
    period throughout, and a good batch dropped after it still runs."""
    docs = tmp_path / "docs"
    docs.mkdir()
    make_slow_pdf(docs / "slow.pdf")
    spool = make_spool(tmp_path / "spool")
    with _watched_daemon(tmp_path, spool, cwd=docs) as watch:
        (tmp_path / "slow.json").write_bytes(_citing("slow.pdf", 30))
        os.rename(tmp_path / "slow.json", spool / "inbox" / "slow.json")
        dropped = time.monotonic()
        pings = watch.pings(dropped, 90, lambda _: bool(list((spool / "rejected").glob("*.error.txt"))))
        write_manifest(spool / "inbox" / "after.json", {"batch_id": "after", "topics": ["Tides"]})
        wait_for(lambda: episodes_in(spool, "done") == ["ep_001_after"], 60, watch.proc, "the next batch done")
    refused_after = max(pings) - dropped if pings else 0.0
    gap = _longest_gap(dropped, pings)
    print(f"30 slow documents: refused after about {refused_after:.0f} s, longest watchdog gap {gap:.1f} s")
    assert gap < WATCHDOG_SEC, f"the main loop was held {gap:.1f} s"
    [error] = list((spool / "rejected").glob("*.error.txt"))
    assert f"took more than {apart.CHECK_S:.0f} s to check" in error.read_text()
