"""The supervisor's episodes, indexed so that every scheduling decision is O(1) or O(log n).

Only unfinished episodes are kept: one that reaches done/ or failed/ leaves the book, and what the
batch still needs of it (counts, costs) lives in its batch's tally (daemon/core/batches.py). So memory
follows what is queued and in flight, not the daemon's history.

Ready queues are kept per (stage, batch): a heap of first tries by episode number, and a heap of
retries by the time they may start. The scheduler walks batches in priority order (few) and pops
heads (log n); entries that went stale (the episode moved or started) are dropped when they surface.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from podspool.daemon.models import EpisodeManifest, State
from podspool.daemon.spool import Location
from podspool.stages.base import STAGE_NAMES, StageName


class Episode:
    """One unfinished episode as the supervisor sees it.

    An episode that has never started holds no manifest in memory (10,000 queued manifests are ~45 MB
    of pydantic objects): its manifest.json is read when it starts (`loader`), and kept while in flight.
    """

    __slots__ = ("episode_id", "batch_id", "number", "location", "running", "_manifest", "_loader")

    def __init__(self, manifest: EpisodeManifest, location: str, running: bool = False,
                 loader: Callable[[str, str], EpisodeManifest] | None = None) -> None:
        fresh = manifest.attempts == 0 and manifest.status == State.PENDING and not manifest.errors
        self._fill(manifest.session_id, manifest.batch_id, manifest.episode_number, location, running, loader,
                   None if fresh and loader is not None else manifest)

    @classmethod
    def queued(cls, episode_id: str, batch_id: str, number: int, location: str,
               loader: Callable[[str, str], EpisodeManifest] | None) -> Episode:
        """A light episode straight from intake, whose manifest was never held: a 10,000-episode batch is
        taken without 10,000 manifests in memory at once."""
        ep = cls.__new__(cls)
        ep._fill(episode_id, batch_id, number, location, False, loader, None)
        return ep

    def _fill(self, episode_id: str, batch_id: str, number: int, location: str, running: bool,
              loader: Callable[[str, str], EpisodeManifest] | None, manifest: EpisodeManifest | None) -> None:
        self.episode_id, self.batch_id, self.number, self.location = episode_id, batch_id, number, location
        self.running = running
        self._loader = loader
        self._manifest: EpisodeManifest | None = manifest

    @property
    def loaded(self) -> bool:
        return self._manifest is not None

    @property
    def manifest(self) -> EpisodeManifest:
        if self._manifest is None:
            assert self._loader is not None
            self._manifest = self._loader(self.location, self.episode_id)
        return self._manifest

    @manifest.setter
    def manifest(self, m: EpisodeManifest) -> None:
        self._manifest = m


def is_retry(m: EpisodeManifest, stage: str) -> bool:
    """A retry waits behind the rest of its batch's first tries."""
    return m.attempts > 1 or any(e.phase == stage for e in m.errors)


@dataclass
class _Queue:
    first: list[tuple[int, str]] = field(default_factory=list)  # (episode number, id)
    retries: list[tuple[float, int, str]] = field(default_factory=list)  # (due, monotonic; number, id)


class EpisodeBook:
    def __init__(self, loader: Callable[[str, str], EpisodeManifest] | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        # A retry's time is written down as wall time (manifest.not_before, for a restart to honour); in
        # memory it is a monotonic deadline, so a clock stepped back does not delay it by the step.
        self.clock, self.wall = clock, wall
        self.loader = loader  # (location, episode id) -> its manifest, read when a light episode starts
        self.by_id: dict[str, Episode] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self.admitted: set[str] = set()  # status in_progress, in a stage folder: held against the cap
        self.running_by: dict[tuple[str, str], int] = {}  # (stage, batch) -> running tasks
        self.waiting_by_stage: dict[str, int] = dict.fromkeys(STAGE_NAMES, 0)
        self.by_batch: dict[str, set[str]] = {}  # batch -> its unfinished episodes
        self.admitted_by_batch: dict[str, set[str]] = {}  # batch -> its admitted episodes
        self.in_review: dict[str, set[str]] = {}  # batch -> its episodes waiting in review/ (not admitted)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.by_id.values())

    def get(self, eid: str) -> Episode | None:
        return self.by_id.get(eid)

    # ---- membership -------------------------------------------------------------------------

    def add(self, ep: Episode) -> None:
        """An unfinished episode joins (intake, recovery, a retry request)."""
        self.by_id[ep.episode_id] = ep
        self.by_batch.setdefault(ep.batch_id, set()).add(ep.episode_id)
        self._sync_slot(ep)
        if ep.location in STAGE_NAMES and not ep.running:
            self._enqueue(ep)
        self._sync_review(ep)

    def remove(self, ep: Episode) -> None:
        """A finished episode leaves."""
        self.by_id.pop(ep.episode_id, None)
        self._set_slot(ep, False)
        self._sync_review(ep, gone=True)
        ids = self.by_batch.get(ep.batch_id)
        if ids is not None:
            ids.discard(ep.episode_id)
            if not ids:
                del self.by_batch[ep.batch_id]

    def admitted_of(self, batch_id: str) -> list[str]:
        """A batch's admitted episodes (running or between stages): at most max_sessions_in_memory."""
        return list(self.admitted_by_batch.get(batch_id, ()))

    def admitted_count(self, batch_id: str) -> int:
        return len(self.admitted_by_batch.get(batch_id, ()))

    def of_batch(self, batch_id: str) -> list[Episode]:
        return [self.by_id[e] for e in self.by_batch.get(batch_id, ())]

    # ---- running ----------------------------------------------------------------------------

    def started(self, ep: Episode) -> None:
        ep.running = True
        key = (ep.location, ep.batch_id)
        self.running_by[key] = self.running_by.get(key, 0) + 1
        self._sync_slot(ep)

    def stopped(self, ep: Episode, stage: str) -> None:
        """Its task ended (result, death, abandon); call `requeue` once its new place is known."""
        if not ep.running:
            return
        ep.running = False
        key = (stage, ep.batch_id)
        n = self.running_by.get(key, 1) - 1
        if n:
            self.running_by[key] = n
        else:
            self.running_by.pop(key, None)

    def requeue(self, ep: Episode) -> None:
        """Its manifest or location changed while not running: requeue it where it now waits."""
        self._sync_slot(ep)
        if ep.location in STAGE_NAMES and not ep.running:
            self._enqueue(ep)
        self._sync_review(ep)

    def running(self, stage: str, batch_id: str) -> int:
        return self.running_by.get((stage, batch_id), 0)

    # ---- ready queues -----------------------------------------------------------------------

    def _enqueue(self, ep: Episode) -> None:
        q = self._queues.setdefault((ep.location, ep.batch_id), _Queue())
        if ep.loaded and is_retry(ep.manifest, ep.location):  # one never started is a first try
            wait = max(0.0, (ep.manifest.not_before or 0.0) - self.wall())
            heapq.heappush(q.retries, (self.clock() + wait, ep.number, ep.episode_id))
        else:
            heapq.heappush(q.first, (ep.number, ep.episode_id))
        self.waiting_by_stage[ep.location] += 1

    def _fresh(self, eid: str, stage: str) -> Episode | None:
        ep = self.by_id.get(eid)
        return ep if ep is not None and ep.location == stage and not ep.running else None

    def pop_ready(self, stage: StageName, batch_id: str, now: float) -> Episode | None:
        """The next episode of `batch_id` that may start `stage` now: first tries, then due retries."""
        q = self._queues.get((stage, batch_id))
        if q is None:
            return None
        while q.first:
            _, eid = heapq.heappop(q.first)
            self.waiting_by_stage[stage] -= 1
            if (ep := self._fresh(eid, stage)) is not None:
                return ep
        while q.retries and q.retries[0][0] <= now:
            _, _, eid = heapq.heappop(q.retries)
            self.waiting_by_stage[stage] -= 1
            if (ep := self._fresh(eid, stage)) is not None:
                return ep
        if not q.first and not q.retries:
            del self._queues[(stage, batch_id)]
        return None

    def push_back(self, ep: Episode) -> None:
        """An episode popped but not started after all (no worker, a full disk): it keeps its place."""
        self._enqueue(ep)

    def has_waiting(self, stage: str, batch_id: str) -> bool:
        q = self._queues.get((stage, batch_id))
        return q is not None and bool(q.first or q.retries)

    def next_retry_at(self) -> float | None:
        """When the earliest waiting retry may start, on the book's monotonic clock."""
        heads = [q.retries[0][0] for q in self._queues.values() if q.retries]
        return min(heads) if heads else None

    def waiting_batches(self) -> set[str]:
        return {bid for (_, bid), q in self._queues.items() if q.first or q.retries}

    def _sync_review(self, ep: Episode, gone: bool = False) -> None:
        ids = self.in_review.get(ep.batch_id)
        if ep.location == Location.REVIEW and not gone:
            self.in_review.setdefault(ep.batch_id, set()).add(ep.episode_id)
        elif ids is not None and ep.episode_id in ids:
            ids.discard(ep.episode_id)
            if not ids:
                del self.in_review[ep.batch_id]

    def _sync_slot(self, ep: Episode) -> None:
        self._set_slot(ep, ep.loaded and ep.location in STAGE_NAMES and ep.manifest.status == State.IN_PROGRESS)

    def _set_slot(self, ep: Episode, holds: bool) -> None:
        eid, bid = ep.episode_id, ep.batch_id
        if holds and eid not in self.admitted:
            self.admitted.add(eid)
            self.admitted_by_batch.setdefault(bid, set()).add(eid)
        elif not holds and eid in self.admitted:
            self.admitted.discard(eid)
            ids = self.admitted_by_batch[bid]
            ids.discard(eid)
            if not ids:
                del self.admitted_by_batch[bid]
