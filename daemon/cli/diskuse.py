"""Disk used by a spool and free beside it, for `status` and `doctor` (an operator's first look at a full disk)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def spool_bytes(root: Path) -> int:
    """Bytes the spool takes on disk (files and folders), each inode once (audio.mp3 is a hard link of
    episode.mp3), as `du` counts them."""
    seen: set[tuple[int, int]] = set()
    try:
        total = os.stat(root).st_blocks * 512
    except FileNotFoundError:
        return 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # moved or removed while we walked
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512  # what the file takes on disk, not its length
    return total


def usage(root: Path) -> dict[str, Any]:
    """{spool_bytes, free_bytes, total_bytes} of the file system the spool is on (or would be)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    du = shutil.disk_usage(probe)
    return {"spool_bytes": spool_bytes(root), "free_bytes": du.free, "total_bytes": du.total}


def render(u: dict[str, Any]) -> str:
    return (f"DISK\n  spool {mb(u['spool_bytes'])}   free {mb(u['free_bytes'])} of {mb(u['total_bytes'])}"
            f" ({u['free_bytes'] / max(1, u['total_bytes']):.0%})\n")


def mb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
