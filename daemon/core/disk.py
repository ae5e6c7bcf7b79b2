"""The disk pause: when the disk refuses a write (full, read-only, over quota), nothing new is admitted for
a while, so the daemon waits for the operator instead of burning its episodes' retries on a full disk."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from loguru import logger

# A write that failed for one of these reasons failed because of the disk, not because of the episode.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_NAMES = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system", errno.EDQUOT: "quota exceeded"}


class DiskPause:
    def __init__(self, retry_s: Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s  # read at each pause: SIGHUP may change it
        self.clock = clock
        self.until = 0.0

    def active(self) -> bool:
        return self.clock() < self.until

    def trouble(self, what: str, exc: OSError) -> None:
        """`what` failed on the disk: log it and pause admission for `retry_s`."""
        retry_s = self.retry_s()
        self.until = self.clock() + retry_s
        kind = _NAMES.get(exc.errno or 0, exc.strerror or str(exc))
        logger.error("{} failed ({}); admission paused, retrying in {}s", what, kind, retry_s)
