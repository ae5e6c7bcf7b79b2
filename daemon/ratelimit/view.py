"""Read-only view of the shared rate-limit windows: how many requests started in the current window.

The limiter (daemon/ratelimit) keeps the last N start times of each API in a small file under
`<spool>/state/ratelimit/`. A dashboard only needs an estimate, so this reads the file without
taking its lock (a read racing a grant may be one request off) and never writes it: a reader must
not be able to disturb the limiter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from podspool.daemon.ratelimit.filestore import HEADER, MAGIC, SLOT, path_for


def window_usage(state_dir: Path, api: str, window_s: float, now: float | None = None) -> tuple[int, float] | None:
    """(starts in the last `window_s` seconds, paused_until) for `api`, or None when it has no file yet."""
    now = time.time() if now is None else now
    try:
        with open(path_for(state_dir, api), "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    if len(raw) < HEADER.size or raw[:8] != MAGIC:
        return None
    _, capacity, _, paused_until, _ = HEADER.unpack_from(raw)
    body = raw[HEADER.size:HEADER.size + SLOT.size * capacity]
    used = sum(1 for (t,) in SLOT.iter_unpack(body[: len(body) - len(body) % SLOT.size]) if now - window_s < t <= now)
    return used, float(paused_until)


WindowUsage = Callable[[str, float], "tuple[int, float] | None"]  # (api, window_s) -> (used, paused_until)


def headroom(state_dir: Path, rates: Mapping[str, tuple[int, float]] | Mapping[str, list[Any]],
             now: float | None = None, usage: WindowUsage | None = None) -> dict[str, dict[str, Any]]:
    """api -> {limit, window_s, used, headroom, paused_s} for every configured API; from the window
    files under `state_dir`, or from `usage` where the windows live elsewhere (Redis, for Dramatiq)."""
    now = time.time() if now is None else now
    out: dict[str, dict[str, Any]] = {}
    for api, (limit, window_s) in rates.items():
        if usage is not None:
            seen = usage(api, float(window_s))
        else:
            seen = window_usage(state_dir, api, float(window_s), now) if os.path.isdir(state_dir) else None
        used, paused_until = seen if seen is not None else (0, 0.0)
        out[api] = {"limit": int(limit), "window_s": float(window_s), "used": used,
                    "headroom": max(0, int(limit) - used), "paused_s": round(max(0.0, paused_until - now), 1)}
    return out
