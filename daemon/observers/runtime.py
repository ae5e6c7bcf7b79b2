"""`<spool>/state/runtime.json`: what only the running daemon knows, for `podspool status`.

The CLI cannot ask the supervisor anything, so this hook publishes the live part of `snapshot()`
(queues, busy workers, memory, admission, rate-limit headroom) at most once a second, written whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podspool.daemon.models import utcnow
from podspool.daemon.observers.hooks import Hook
from podspool.stages import fsio

RUNTIME_FILE = "runtime.json"
WRITE_EVERY_S = 1.0
STALE_AFTER_S = 15.0  # a runtime.json older than this is from a daemon that is gone or stuck


def runtime_doc(snap: dict[str, Any], *, running: bool = True) -> dict[str, Any]:
    mem = snap["memory"]
    return {
        "running": running,
        "pid": snap["pid"],
        "time": snap["time"],
        "updated_at": utcnow(),
        "stopping": snap["stopping"],
        "admitted": snap["admitted"],
        "max_sessions_in_memory": snap["max_sessions_in_memory"],
        "memory": {**mem, "rss_mb": round(mem["rss_bytes"] / 2**20, 1)},
        "stages": snap["stages"],
        "executor": snap.get("executor", "local"),
        "workers": snap.get("workers", []),
        "locations": snap["locations"],
        "rate_limits": snap["rate_headroom"],
    }


class RuntimeHook(Hook):
    def __init__(self, state_dir: Path, every_s: float = WRITE_EVERY_S) -> None:
        self.state_dir = Path(state_dir)
        self.every_s = every_s
        self._last = 0.0
        self._snapshot: Callable[[], dict[str, Any]] | None = None

    def on_tick(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        fsio.write_json(self.state_dir / RUNTIME_FILE, runtime_doc(snapshot()))

    def close(self) -> None:
        if self._snapshot is not None:
            fsio.write_json(self.state_dir / RUNTIME_FILE, runtime_doc(self._snapshot(), running=False))


def read_runtime(root: Path, now: float | None = None) -> dict[str, Any] | None:
    """The daemon's runtime.json when a live daemon wrote it recently, else None."""
    try:
        doc = fsio.read_json(Path(root) / "state" / RUNTIME_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not doc.get("running"):
        return None
    now = time.time() if now is None else now
    if now - float(doc.get("time") or 0) > STALE_AFTER_S or not _alive(int(doc.get("pid") or 0)):
        return None
    return doc


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (the podspool service user)
    return True
