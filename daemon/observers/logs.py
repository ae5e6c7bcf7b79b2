"""Logging with loguru: the rotated spool log, stderr, and each episode's own episode.log.

Every line names batch, episode and stage where it has them. Workers do not write logs: they send
their records to the supervisor, which is the only writer (so rotation is never raced).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.credentials import masking_patcher

LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[batch]} | {extra[episode]} | {extra[stage]} | {message}"
EPISODE_LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[stage]} | {message}\n"
DEFAULT_EXTRA = {"batch": "-", "episode": "-", "stage": "-"}
# A line break or a terminal escape in a name that came from outside (an inbox file, a field of a manifest)
# would forge a log line or rewrite the operator's terminal: every control character is written escaped.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7f, 0xa0))} | {
    0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def escape_controls(text: str) -> str:
    """`text` with every control character (and the Unicode line separators) written as an escape."""
    return text if text.isprintable() else text.translate(_CONTROLS)


def setup(log_dir: Path | None, *, level: str = "INFO", rotation: str = "50 MB", retention: str = "14 days",
          compression: str = "gz", as_json: bool = False, stderr: bool = True,
          secrets: Mapping[str, str] | None = None,
          episode_folder: Callable[[str], Path | None] | None = None) -> None:
    """Configure the process-wide logger (the supervisor's, or a CLI command's)."""
    mask = masking_patcher(secrets or {})  # keys, Bearer tokens and exception text

    def patch(record: Any) -> None:
        for k, v in DEFAULT_EXTRA.items():
            record["extra"].setdefault(k, v)
        mask(record)
        record["message"] = escape_controls(record["message"])
        extra = record["extra"]
        for name, value in extra.items():
            if isinstance(value, str) and not value.isprintable():
                extra[name] = escape_controls(value)

    logger.remove()
    logger.configure(extra=dict(DEFAULT_EXTRA), patcher=patch)
    if stderr:
        logger.add(sys.stderr, level=level, format=LINE, serialize=as_json, backtrace=False, diagnose=False)
    if log_dir is not None:
        log_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        logger.add(log_dir / "podspool.log", level=level, format=LINE, serialize=as_json, rotation=rotation,
                   retention=retention, compression=compression or None, backtrace=False, diagnose=False,
                   encoding="utf-8")
    global _episode_logs
    if _episode_logs is not None:
        _episode_logs.close()
        _episode_logs = None
    if episode_folder is not None:
        _episode_logs = _EpisodeLogs(episode_folder)
        logger.add(_episode_logs, level="DEBUG", format=EPISODE_LINE, colorize=False,
                   filter=lambda r: r["extra"].get("episode", "-") != "-", backtrace=False, diagnose=False)


class _EpisodeLogs:
    """The episode.log sink. It keeps the files of the episodes it wrote to last open (an open fd
    follows its folder from stage to stage), so a line costs one write, not an open and a close: a busy
    spool's opens wait on directory locks behind the workers' file creations."""

    KEEP = 64

    def __init__(self, episode_folder: Callable[[str], Path | None]) -> None:
        self.episode_folder = episode_folder
        self.fds: OrderedDict[str, int] = OrderedDict()

    def __call__(self, message: Any) -> None:
        eid = message.record["extra"]["episode"]
        data = (str(message).rstrip("\n") + "\n").encode("utf-8", "replace")
        try:
            fd = self.fds.get(eid)
            if fd is None:
                folder = self.episode_folder(eid)
                if folder is None:
                    return
                fd = os.open(folder / "episode.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o640)
                self.fds[eid] = fd
                if len(self.fds) > self.KEEP:
                    os.close(self.fds.popitem(last=False)[1])
            else:
                self.fds.move_to_end(eid)
            os.write(fd, data)  # one O_APPEND write: a line is never torn by another writer
        except OSError:
            pass  # a log line is never worth failing an episode for

    def close(self, eid: str | None = None) -> None:
        for key in [eid] if eid is not None else list(self.fds):
            fd = self.fds.pop(key, None)
            if fd is not None:
                os.close(fd)


_episode_logs: _EpisodeLogs | None = None


def episode_finished(eid: str) -> None:
    """Close an episode's log once its last line is written (it is done, failed or leaves the spool)."""
    if _episode_logs is not None:
        _episode_logs.close(eid)
