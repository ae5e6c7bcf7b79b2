"""`podspool retry`: new budgets, and failed episodes back to the stage they failed in.

Applied by a running daemon (a control request) or, when none runs, by the command itself under the
spool lock (`offline`): the same owners either way. Failed episodes are not kept in memory, so a
request reads failed/ (rare, and cheap).
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from podspool.daemon.core import lifecycle, recovery
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.spool import Location, Spool


def apply(body: dict[str, Any], spool: Spool, episodes: EpisodeBook, batches: BatchBook) -> list[str]:
    """A `podspool retry` request: a new budget and/or failed episodes back to their stage."""
    bid = body.get("batch")
    if bid and body.get("budget") is not None and bid in batches:
        b = batches[bid]
        b.meta["budget_usd"] = float(body["budget"])
        b.dirty, b.held_logged = True, False
        logger.bind(batch=bid).info("budget of {} set to ${:.2f}", bid, float(body["budget"]))
    wanted = set(body.get("episodes") or [])
    if not (body.get("all") or wanted or (bid and body.get("budget") is None)):
        return []
    out = []
    for loc in spool.scan_location(Location.FAILED):
        if not (body.get("all") or loc.episode_id in wanted or (bid and not wanted)):
            continue
        try:
            m = spool.read_manifest(loc.folder)
        except (FileNotFoundError, ValueError):
            continue
        if bid and m.batch_id != bid:
            continue
        _reopen(m, spool, episodes, batches)
        out.append(loc.episode_id)
    return out


def offline(body: dict[str, Any], spool: Spool, checkpoint_every: int) -> list[tuple[str, str]]:
    """The request applied with no daemon running (the caller holds the spool lock): the books rebuilt by
    recovery, changed, and the batch files written. Returns (episode id, where it is now)."""
    episodes = EpisodeBook(loader=recovery.manifest_loader(spool))
    batches = BatchBook(spool, checkpoint_every, episodes)
    recovery.recover(spool, episodes, batches)
    moved = apply(body, spool, episodes, batches)
    batches.write_sessions(force=True)
    return [(eid, ep.location if (ep := episodes.get(eid)) else "?") for eid in moved]


def _reopen(m: EpisodeManifest, spool: Spool, episodes: EpisodeBook, batches: BatchBook) -> None:
    bid = m.batch_id
    b = batches.reopen(bid)
    b.tally.unfinish(Location.FAILED, m)
    batches.finished[Location.FAILED] = batches.finished.get(Location.FAILED, 1) - 1
    b.summarised = False
    stage = lifecycle.reopen(m)
    spool.write_manifest(spool.folder(Location.FAILED, m.session_id), m)
    spool.move(m.session_id, Location.FAILED, stage)
    episodes.add(Episode(manifest=m, location=stage))
    b.dirty = True
    logger.bind(batch=bid, episode=m.session_id, stage=stage).info(
        "retry: {} is back in {} (retry round {})", m.session_id, stage, m.retry_rounds)
