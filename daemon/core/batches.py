"""Batch bookkeeping: each batch's static facts, its running tally, checkpoints, summary and session files.

The tally is kept incrementally (a result adds its cost, a finished episode its count), so deciding
whether a batch is over budget or due a checkpoint costs O(1) whatever its size. The summary, written
once when a batch completes, is read back from the episode folders themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from podspool.daemon.core.batch_views import CHECKPOINT_RE, Tally, checkpoint_doc, derive, summary_doc
from podspool.daemon.core.commit import CommitGroup, GroupFailed
from podspool.daemon.core.dashboard import render_text
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.models import EpisodeManifest, episode_id, utcnow
from podspool.daemon.observers.hooks import Observers
from podspool.daemon.spool import FINAL, MANIFEST, Spool, error_free
from podspool.stages import fsio

CHECKPOINTS = "checkpoints"  # owner of a checkpoint in a group commit: (CHECKPOINTS, batch id)

SUMMARY_SUFFIX = "_summary.json"


def checkpoint_name(bid: str, n: int) -> str:
    return f"{bid}_checkpoint_{n}.json"


def summary_name(bid: str) -> str:
    return f"{bid}{SUMMARY_SUFFIX}"


@dataclass
class BatchState:
    meta: dict[str, Any]
    tally: Tally = field(default_factory=Tally)
    checkpoints: list[str] = field(default_factory=list)
    finished_since_checkpoint: list[tuple[str, EpisodeManifest]] = field(default_factory=list)
    dirty: bool = True
    summarised: bool = False  # its summary is written for its current state
    held_logged: bool = False
    pending_usd: float = 0.0  # the cost of results applied but not yet committed (results.py)

    @property
    def seq(self) -> float:
        return float(self.meta.get("seq") or 0.0)

    @property
    def priority(self) -> int:
        return int(self.meta.get("priority") or 0)

    @property
    def complete(self) -> bool:
        t = self.tally
        return t.total > 0 and t.completed + t.failed == t.total

    def over_budget(self) -> bool:
        budget = self.meta.get("budget_usd")
        return budget is not None and self.tally.costs["total"] + self.pending_usd >= float(budget)


class BatchBook:
    """Every known batch, in admission order (priority, then age), and the count of finished episodes.

    Owns the batch files: session.json and dashboard.txt, checkpoints and the summary."""

    def __init__(self, spool: Spool, checkpoint_every: int, episodes: EpisodeBook,
                 observers: Observers | None = None) -> None:
        self.spool = spool
        self.checkpoint_every = checkpoint_every
        self.episodes = episodes  # the unfinished ones, for the rows and counts of session.json
        self.observers = observers or Observers()
        self.by_id: dict[str, BatchState] = {}
        self.order: list[str] = []  # admission order; batches are few, so a sorted list is enough
        self.finished: dict[str, int] = {}  # episode folders in done/ and failed/ (count_finished)
        self._last_sessions = 0.0

    def count_finished(self) -> None:
        """Episode folders in done/ and failed/, counted once (start-up, after archiving); kept from there,
        so the once-a-second STATUS line does not list months of work."""
        self.finished = {loc: sum(1 for _ in self.spool.scan_location(loc)) for loc in FINAL}

    def finish(self, location: str, m: EpisodeManifest) -> None:
        """An episode reached done/ or failed/."""
        b = self.by_id[m.batch_id]
        b.tally.finish(location, m)
        self.finished[location] = self.finished.get(location, 0) + 1
        b.finished_since_checkpoint.append((location, m))

    def __contains__(self, bid: str) -> bool:
        return bid in self.by_id

    def __getitem__(self, bid: str) -> BatchState:
        return self.by_id[bid]

    def add(self, bid: str, meta: dict[str, Any], checkpoints: list[str] | None = None) -> BatchState:
        b = BatchState(meta=meta, checkpoints=list(checkpoints or []))
        self.by_id[bid] = b
        self.order.append(bid)
        self.order.sort(key=lambda x: (-self.by_id[x].priority, self.by_id[x].seq))
        return b

    def load(self, bid: str) -> BatchState:
        """A batch as its folder records it (recovery, intake)."""
        meta = self.spool.read_session(bid)
        static: dict[str, Any] = {k: meta[k] for k in ("batch_id", "accepted_at", "seq", "priority", "budget_usd",
                                                       "strategy", "source", "start_time", "end_time") if k in meta}
        static.setdefault("batch_id", bid)
        if "seq" not in static:
            static["seq"] = os.stat(self.spool.batch_dir(bid)).st_mtime
        if "strategy" not in static or "budget_usd" not in static:
            batch = self.spool.read_batch(bid)
            if batch is not None:
                static.setdefault("strategy", batch.effective_strategy())
                static.setdefault("budget_usd", batch.budget_usd)
                static.setdefault("priority", batch.priority)
        return self.add(bid, static, self._checkpoints_on_disk(bid))

    def _checkpoints_on_disk(self, bid: str) -> list[str]:
        return sorted((n for n in os.listdir(self.spool.batch_dir(bid)) if CHECKPOINT_RE.match(n)),
                      key=lambda n: int(CHECKPOINT_RE.match(n).group("n")))  # type: ignore[union-attr]

    def checkpoints_lost(self, bid: str) -> None:
        """A commit that carried checkpoints failed: what is on disk is what the batch has (the next
        after_change writes the rest again)."""
        b = self.by_id.get(bid)
        if b is not None:
            try:
                b.checkpoints = self._checkpoints_on_disk(bid)
            except OSError:
                pass  # its folder is gone: nothing to write checkpoints into either

    def reopen(self, bid: str) -> BatchState:
        """A batch in memory again for an episode that runs again (retry, redo): a complete batch was
        forgotten, so its tally is counted again from its episode folders."""
        if bid in self.by_id:
            return self.by_id[bid]
        b = self.load(bid) if self.spool.batch_dir(bid).is_dir() else self.placeholder(bid)
        pairs = []
        for loc in FINAL:
            for found in self.spool.scan_location(loc):
                if found.episode_id.split("_", 2)[-1] != bid:  # ep_<number>_<batch_id>
                    continue
                try:
                    pairs.append((loc, self.spool.read_manifest(found.folder)))
                except (FileNotFoundError, ValueError):
                    continue
        b.tally = Tally.of(pairs)
        return b

    def placeholder(self, bid: str) -> BatchState:
        """An episode whose batch folder is gone still belongs somewhere."""
        return self.add(bid, {"batch_id": bid, "seq": time.time()})

    def forget(self, bid: str) -> None:
        """A complete batch needs nothing in memory (its files say everything)."""
        self.by_id.pop(bid, None)
        if bid in self.order:
            self.order.remove(bid)

    # ---- files ------------------------------------------------------------------------------

    def session(self, bid: str) -> dict[str, Any]:
        """session.json of a batch: counts and costs from its tally and the indexes, rows for its admitted
        episodes (the folders say the rest)."""
        book = self.episodes
        b = self.by_id[bid]
        flying = [book.by_id[e] for e in book.admitted_of(bid)]
        review = [book.by_id[e] for e in book.in_review.get(bid, ())]
        unfinished = len(book.by_batch.get(bid, ()))
        in_progress = book.admitted_count(bid)
        return derive(b.meta, b.tally, [(ep.location, ep.manifest) for ep in flying + review],
                      {ep.episode_id for ep in flying if ep.running}, b.checkpoints,
                      counts=(in_progress, unfinished - in_progress - len(review), len(review)))

    def write_session(self, bid: str, session: dict[str, Any]) -> None:
        folder = self.spool.batch_dir(bid)
        fsio.write_json(folder / "session.json", session)
        fsio.write_text(folder / "dashboard.txt", render_text(session))
        self.by_id[bid].dirty = False

    def write_sessions(self, force: bool = False, every_s: float = 1.0) -> None:
        """session.json and dashboard.txt of every batch that changed (at most every `every_s`)."""
        now = time.monotonic()
        if not force and now - self._last_sessions < every_s:
            return
        self._last_sessions = now
        for bid, b in list(self.by_id.items()):
            if (b.dirty or force) and self.spool.batch_dir(bid).is_dir():
                self.write_session(bid, self.session(bid))

    def after_change(self, bid: str, group: CommitGroup) -> None:
        """Write the checkpoints that fell due, and the summary once the batch is complete.

        A checkpoint joins `group`, the supervisor's next group commit, instead of paying two fsyncs of
        its own on the main loop (one every 5 episodes); `group` is committed first when the batch
        completes, so the summary never lists a checkpoint that is not on disk.
        """
        if bid not in self.by_id:
            return
        b = self.by_id[bid]
        due = b.tally.completed // self.checkpoint_every
        if len(b.checkpoints) < due:
            session = self.session(bid)
            while len(b.checkpoints) < due:
                n = len(b.checkpoints) + 1
                name = checkpoint_name(bid, n)
                doc = checkpoint_doc(session, n, b.finished_since_checkpoint)
                group.write(self.spool.batch_dir(bid) / name, fsio.json_bytes(doc), (CHECKPOINTS, bid))
                b.checkpoints.append(name)
                b.finished_since_checkpoint = []
                logger.bind(batch=bid).info("checkpoint {} written ({} episodes complete)", name, b.tally.completed)
        if b.complete and not b.summarised:
            try:
                group.commit()
            except GroupFailed as exc:
                self.checkpoints_lost(bid)
                raise exc.cause from None
            b.meta.setdefault("end_time", utcnow())
            session = self.session(bid)
            manifests = FinishedEpisodes(self, bid)
            self.write_session(bid, session)
            fsio.write_json(self.spool.batch_dir(bid) / summary_name(bid), summary_doc(session, manifests.with_errors()))
            b.summarised = True
            self.observers.emit("on_batch_complete", session, manifests)
            logger.bind(batch=bid).info("batch {} complete: {} done, {} failed, ${:.4f}", bid, b.tally.completed,
                                        b.tally.failed, session["costs"]["total"])
            if bid not in self.episodes.by_batch:
                self.forget(bid)  # a finished batch needs no per-episode state in memory at all
        elif not b.complete:
            b.meta.pop("end_time", None)



class FinishedEpisodes:
    """A complete batch's episodes, read from their folders one at a time on each pass (the summary and
    the hooks each take one pass), so a 10,000-episode batch is never held in memory whole."""

    def __init__(self, book: BatchBook, bid: str) -> None:
        self.bid = bid
        self.numbers = list(book.by_id[bid].tally.numbers)
        self.places = [str(book.spool.where(loc)) for loc in FINAL]

    def __iter__(self) -> Iterator[EpisodeManifest]:
        for m in self._first(EpisodeManifest.model_validate_json):
            if m is not None:
                yield m

    def with_errors(self) -> Iterator[EpisodeManifest]:
        """The episodes with errors, as __iter__ gives them; the others are told by their bytes, unparsed
        (`spool.error_free`): the summary wants nothing else of them."""
        for m in self._first(lambda data: None if error_free(data) else EpisodeManifest.model_validate_json(data)):
            if m is not None and m.errors:
                yield m

    def _first(self, parse: Callable[[bytes], EpisodeManifest | None]) -> Iterator[EpisodeManifest | None]:
        """For each finished episode, `parse` of its manifest's bytes, from the first final location whose
        manifest exists and parses (a ValueError tries the next location)."""
        for number in self.numbers:
            eid = episode_id(number, self.bid)
            for place in self.places:
                try:
                    yield parse(fsio.read_whole(os.path.join(place, eid, MANIFEST)))
                except (FileNotFoundError, ValueError):
                    continue
                break
