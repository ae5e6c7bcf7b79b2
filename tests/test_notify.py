"""sd_notify against the real daemon: READY=1 only after recovery, STATUS=, WATCHDOG=1, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from podspool.daemon.intake import staging
from podspool.daemon.models import BatchManifest, State
from podspool.daemon.spool import Spool
from podspool_helpers import make_spool, wait_for

RECOVERY_LINE = "was in flight; it runs again from the start of research"


def _half_done_spool(root: Path) -> str:
    """A spool as a crash leaves it: a batch accepted, one episode marked in flight in research/."""
    make_spool(root, latency_ms=50)
    sp = Spool(root)
    sp.ensure()
    doc = {"batch_id": "nb", "topics": ["one", "two"]}
    src = root / "nb.json"
    src.write_text(json.dumps(doc))
    staging.accept(sp, src, BatchManifest.model_validate(doc), src.read_bytes(), time.time())
    eid = "ep_001_nb"
    folder = sp.folder("research", eid)
    m = sp.read_manifest(folder)
    m.status = State.IN_PROGRESS
    m.attempts = 1
    m.phases.set("research", State.IN_PROGRESS)
    sp.write_manifest(folder, m)
    return eid


def _bind(kind: str, tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "abstract":
        name = f"@podspool-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    sock.settimeout(0.2)
    return sock, name


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_daemon_speaks_sd_notify(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "spool"
    eid = _half_done_spool(root)
    sock, address = _bind(kind, tmp_path)
    err = open(tmp_path / "stderr.txt", "w+")  # noqa: SIM115 -- a file, not a pipe nobody reads (64 KiB would block it)
    env = {**os.environ, "PODSPOOL_CONFIG": "", "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    proc = subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(root)],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)
    messages: list[dict[str, str]] = []
    log = root / "logs" / "podspool.log"
    recovered_before_ready: bool | None = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536).decode()
            except TimeoutError:
                assert proc.poll() is None, f"daemon exited early:\n{(tmp_path / 'stderr.txt').read_text()[-3000:]}"
                if messages and any("WATCHDOG" in m for m in messages) and \
                        len(list((root / "done").iterdir())) == 2:
                    break
                continue
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            if "READY" in fields and recovered_before_ready is None:
                # the recovery scan has run and logged before READY=1 was sent
                recovered_before_ready = log.exists() and RECOVERY_LINE in log.read_text()
            messages.append(fields)
        wait_for(lambda: len(list((root / "done").iterdir())) == 2, 20, what="both episodes done")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        # drain what was sent during the stop
        sock.settimeout(0.5)
        while True:
            try:
                data = sock.recv(65536).decode()
            except TimeoutError:
                break
            messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        err.close()
    assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    ready = [i for i, m in enumerate(messages) if m.get("READY") == "1"]
    assert len(ready) == 1, messages
    assert recovered_before_ready, "READY=1 came before the recovery scan normalised the in-flight episode"
    assert messages[ready[0]].get("STATUS"), "READY should carry a STATUS line"
    assert any(m.get("WATCHDOG") == "1" for m in messages[ready[0]:]), messages
    assert any("done" in m.get("STATUS", "") for m in messages), messages
    stopping = [i for i, m in enumerate(messages) if m.get("STOPPING") == "1"]
    assert stopping and stopping[0] > ready[0], messages
    # the interrupted episode ran again and finished
    assert (root / "done" / eid / "manifest.json").exists()
