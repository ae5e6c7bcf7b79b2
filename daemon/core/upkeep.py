"""The daemon's upkeep between its own moves: retention of wavs, and archiving finished batches.

The daemon is the only writer of its spool, so `podspool archive` against a running daemon, and the
`[retention] archive_after_days` policy, both land here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.disk import DiskPause
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.publishing import archive as archiving
from podspool.daemon.publishing import retention
from podspool.daemon.spool import Location, Spool


class Upkeep:
    def __init__(self, spool: Spool, config: Callable[[], Config], episodes: EpisodeBook, batches: BatchBook,
                 disk: DiskPause) -> None:
        self.spool, self.config, self.episodes, self.batches, self.disk = spool, config, episodes, batches, disk
        self.next_sweep = 0.0

    def retire_wav(self, eid: str) -> None:
        """A finished episode keeps its mp3, not its wav (the default retention)."""
        if self.config().retention.keep_wav_days == 0:
            try:
                retention.drop_wav(self.spool.folder(Location.DONE, eid), 0)
            except OSError as exc:
                logger.warning("retention: could not remove the wav of {}: {}", eid, exc)

    def sweep(self) -> None:
        """Hourly (by default): wavs kept some days, and finished batches due for the archive."""
        policy = self.config().retention
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + policy.sweep_every_s
        if policy.archive_after_days is not None:
            self.archive(None, policy.archive_after_days)
        if policy.keep_wav_days > 0:
            freed = retention.sweep(self.spool, policy)
            if freed:
                logger.info("retention: removed {:.1f} MB of wav past {} days", freed / 2**20, policy.keep_wav_days)

    def archive(self, batch: str | None, older_than_days: float | None) -> list[str]:
        """Move finished batches under archive/ (never one with an episode still in memory)."""
        root = self.spool.root
        wanted = [batch] if batch else archiving.archivable(root, older_than_days or 0.0)
        done = []
        for bid in wanted:
            if bid in self.episodes.by_batch or archiving.unfinished(root, bid):
                continue
            try:
                archiving.archive_batch(root, bid)
            except OSError as exc:
                self.disk.trouble(f"archiving {bid}", exc)
                break
            self.batches.forget(bid)
            done.append(bid)
            logger.bind(batch=bid).info("archived batch {}", bid)
        if done:
            self.batches.count_finished()  # archiving is rare: count the folders again
        return done
