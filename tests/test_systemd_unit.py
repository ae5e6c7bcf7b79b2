"""The shipped unit passes `systemd-analyze verify` and rates 2.0 or better in `security` (skipped without systemd)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[1] / "systemd"
UNIT = UNIT_DIR / "podspool.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _podspool_binary() -> str:
    found = shutil.which("podspool") or str(Path(sys.executable).with_name("podspool"))
    assert Path(found).exists(), "the podspool entry point is not installed"
    return found


def _local_copy(tmp_path: Path) -> Path:
    """verify checks that ExecStart exists: point it at this venv's podspool instead of /usr/local/bin."""
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/podspool run --spool /var/lib/podspool" in text
    copy = tmp_path / "podspool.service"
    copy.write_text(text.replace("/usr/local/bin/podspool", _podspool_binary()))
    return copy


def test_unit_declares_the_contract() -> None:
    text = UNIT.read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert keys["Type"] == "notify"
    assert keys["NotifyAccess"] == "main"
    assert keys["WatchdogSec"] == "30"
    assert keys["Restart"] == "on-failure"
    assert keys["KillMode"] == "mixed"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["UMask"] == "0027"
    assert keys["StateDirectory"] == "podspool"
    # the drain (shutdown_grace_s, 30 s by default) must fit inside the stop timeout
    assert int(keys["TimeoutStopSec"]) > 30
    for name in ("perplexity_api_key", "openai_api_key", "elevenlabs_api_key", "tavily_api_key"):
        assert f"LoadCredential={name}:/etc/podspool/credentials/{name}" in text
        # a missing LoadCredential= file fails the unit: tmpfiles must create an (empty) placeholder
        assert re.search(rf"^f /etc/podspool/credentials/{name}\s+0600\s+root\s+root", (UNIT_DIR / "podspool.tmpfiles.conf")
                         .read_text(), re.M)
    assert re.search(r"^u\s+podspool\s", (UNIT_DIR / "podspool.sysusers.conf").read_text(), re.M)


@needs_systemd
def test_verify_is_clean(tmp_path: Path) -> None:
    unit = _local_copy(tmp_path)
    out = subprocess.run([ANALYZE, "verify", "--recursive-errors=yes", "--man=no", str(unit)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    noise = [ln for ln in out.stderr.splitlines() if "podspool" in ln]
    assert not noise, out.stderr


@needs_systemd
def test_security_exposure_at_most_2(tmp_path: Path) -> None:
    unit = _local_copy(tmp_path)
    out = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for podspool\.service: ([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0, out.stdout


def test_no_secret_is_left_group_or_world_readable() -> None:
    """Every secret INSTALL.md writes lands in a credential file tmpfiles created 0600 (tee into an existing
    file keeps its mode); no broker URL carries a password; the config, which may hold a webhook token,
    is installed 0600; both units load the broker's key and password as credentials."""
    install = (UNIT_DIR / "INSTALL.md").read_text()
    tmpfiles = (UNIT_DIR / "podspool.tmpfiles.conf").read_text()
    placeholders = set(re.findall(r"^f /etc/podspool/credentials/(\w+)\s+0600\s+root\s+root", tmpfiles, re.M))
    written = set(re.findall(r"tee /etc/podspool/credentials/(\w+)", install))
    assert written and written <= placeholders, written - placeholders
    assert not re.search(r"redis://[^\s\"'/@]*:[^\s\"'/@]+@", install), "a password in a broker URL"
    assert not re.search(r"install [^\n]*-m 06[4-7]\d [^\n]*\.toml", install)
    assert re.search(r"install -o podspool -g podspool -m 0600 my-podspool.toml", install)
    for unit in ("podspool.service", "podspool-worker.service"):
        text = (UNIT_DIR / unit).read_text()
        for name in ("podspool_broker_key", "podspool_broker_password"):
            assert f"LoadCredential={name}:/etc/podspool/credentials/{name}" in text, (unit, name)
