"""Durable file writes: temp file in the same folder, fsync, rename, fsync the folder.

This is the lowest layer of podspool, so both the stages (for their artifacts) and the daemon (for
manifests, checkpoints and summaries) use it. A reader or a crash sees the old file or the new one,
never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name_for(path: Path) -> Path:
    """A temp name beside `path` that carries the writer's pid, so recovery can tell a live owner."""
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def write_bytes(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write `data` to `path` whole: temp file, fsync, rename, fsync the folder."""
    tmp = temp_name_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single O_APPEND write (logs only: they grow, they are never rewritten)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
