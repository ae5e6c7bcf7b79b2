"""Control requests from the command line to a running daemon (retry, budget).

The supervisor is the only writer of state, so `podspool retry` does not move folders behind its
back: it drops a request file (written whole) into state/requests/, and the supervisor applies it.
When no daemon runs, the command takes the spool lock and applies the request itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podspool.stages import fsio

if TYPE_CHECKING:
    from podspool.daemon.spool import Spool


@dataclass
class Request:
    path: Path
    body: dict[str, Any]


def submit(spool: Spool, body: dict[str, Any]) -> Path:
    path = spool.requests / f"{time.time_ns()}-{os.getpid()}.json"
    fsio.write_json(path, body)
    return path


def pending(spool: Spool) -> Iterator[Request]:
    try:
        names = sorted(n for n in os.listdir(spool.requests) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return
    for name in names:
        path = spool.requests / name
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            body = {}
        yield Request(path, body if isinstance(body, dict) else {})


def done(req: Request) -> None:
    try:
        os.unlink(req.path)
    except FileNotFoundError:
        pass
