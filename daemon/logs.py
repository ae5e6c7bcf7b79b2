"""Logging with loguru: the rotated spool log, stderr, and each episode's own episode.log.

Every line names batch, episode and stage where it has them. Workers do not write logs: they send
their records to the supervisor, which is the only writer (so rotation is never raced).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.credentials import masking_patcher
from podspool.stages import fsio

LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[batch]} | {extra[episode]} | {extra[stage]} | {message}"
EPISODE_LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[stage]} | {message}\n"
DEFAULT_EXTRA = {"batch": "-", "episode": "-", "stage": "-"}


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

    logger.remove()
    logger.configure(extra=dict(DEFAULT_EXTRA), patcher=patch)
    if stderr:
        logger.add(sys.stderr, level=level, format=LINE, serialize=as_json, backtrace=False, diagnose=False)
    if log_dir is not None:
        log_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        logger.add(log_dir / "podspool.log", level=level, format=LINE, serialize=as_json, rotation=rotation,
                   retention=retention, compression=compression or None, backtrace=False, diagnose=False,
                   encoding="utf-8")
    if episode_folder is not None:
        logger.add(_episode_sink(episode_folder), level="DEBUG", format=EPISODE_LINE, colorize=False,
                   filter=lambda r: r["extra"].get("episode", "-") != "-", backtrace=False, diagnose=False)


def _episode_sink(episode_folder: Callable[[str], Path | None]) -> Callable[[Any], None]:
    def sink(message: Any) -> None:
        folder = episode_folder(message.record["extra"]["episode"])
        if folder is None:
            return
        try:
            fsio.append_line(folder / "episode.log", str(message))
        except OSError:
            pass  # a log line is never worth failing an episode for

    return sink
