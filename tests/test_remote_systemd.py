"""The worker host's unit: `systemd-analyze verify` clean, exposure 2.0 or better, a drain that fits."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "podspool-worker.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _local_copy(tmp_path: Path) -> Path:
    podspool = shutil.which("podspool") or str(Path(sys.executable).with_name("podspool"))
    copy = tmp_path / "podspool-worker.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/podspool", podspool))
    return copy


def test_worker_unit_runs_the_worker_command_and_drains() -> None:
    keys = dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.M))
    assert keys["ExecStart"].startswith("/usr/local/bin/podspool worker --config /etc/podspool/worker.toml")
    assert keys["KillMode"] == "mixed" and keys["Restart"] == "on-failure"
    assert int(keys["TimeoutStopSec"]) > 30  # [executor] shutdown_grace_s defaults to 30
    assert keys["DynamicUser"] == "yes"  # a worker host keeps no state


@needs_systemd
def test_worker_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = _local_copy(tmp_path)
    out = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True,  # type: ignore[list-item]
                         timeout=60)
    assert out.returncode == 0 and "podspool" not in out.stderr, out.stderr
    sec = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for podspool-worker\.service: ([0-9.]+)", sec.stdout)
    assert m and float(m.group(1)) <= 2.0, sec.stdout
