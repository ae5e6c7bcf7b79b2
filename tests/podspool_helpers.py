"""Helpers for tests that run the real daemon: a spool with a config, the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIM_CONFIG = """
[research]
provider = "sim"
[production]
provider = "sim"
[audio]
provider = "sim"
mp3 = {mp3}
[providers.sim]
latency_ms = {latency_ms}
error_rate = {error_rate}
[limits]
retry_backoff_s = 0.05
inbox_settle_s = 0.2
inbox_rescan_s = 0.5
shutdown_grace_s = 10
disk_retry_s = 1
"""


def make_spool(root: Path, extra: str = "", latency_ms: float = 20, error_rate: float = 0.0,
               publish: bool = False) -> Path:
    """A sim spool. Without `publish` the audio stage writes the wav only: a worker that publishes imports
    scipy at boot (most of a daemon's second of start-up), and the pipeline's tests do not need it."""
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    (root / "podspool.toml").write_text(SIM_CONFIG.format(latency_ms=latency_ms, error_rate=error_rate,
                                                          mp3=str(publish).lower()) + extra)
    return root


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PODSPOOL_CONFIG": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "podspool.daemon", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def start_daemon(spool: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PODSPOOL_CONFIG": "", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "podspool.daemon", "run", "--spool", str(spool), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)


def write_manifest(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def wait_for(cond: Callable[[], bool], timeout: float, proc: subprocess.Popen[str] | None = None,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n{err[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def episodes_in(spool: Path, location: str) -> list[str]:
    d = spool / location
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
