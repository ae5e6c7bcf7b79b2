"""`podspool retry` applied by the supervisor: new budgets, and failed episodes back to their stage.

Failed episodes are not kept in memory, so a request reads failed/ (rare, and cheap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger
from podspool.daemon.core import lifecycle, recovery
from podspool.daemon.core.batch_views import Tally
from podspool.daemon.core.episodes import Episode
from podspool.daemon.models import EpisodeManifest

if TYPE_CHECKING:
    from podspool.daemon.core.supervisor import Supervisor


def apply(sup: Supervisor, body: dict[str, Any]) -> list[str]:
    """A `podspool retry` request: a new budget and/or failed episodes back to their stage."""
    bid = body.get("batch")
    if bid and body.get("budget") is not None and bid in sup.batches:
        b = sup.batches[bid]
        b.meta["budget_usd"] = float(body["budget"])
        b.dirty, b.held_logged = True, False
        logger.bind(batch=bid).info("budget of {} set to ${:.2f}", bid, float(body["budget"]))
    wanted = set(body.get("episodes") or [])
    if not (body.get("all") or wanted or (bid and body.get("budget") is None)):
        return []
    out = []
    for loc in sup.spool.scan_location("failed"):
        if not (body.get("all") or loc.episode_id in wanted or (bid and not wanted)):
            continue
        try:
            m = sup.spool.read_manifest(loc.folder)
        except (FileNotFoundError, ValueError):
            continue
        if bid and m.batch_id != bid:
            continue
        _reopen(sup, m)
        out.append(loc.episode_id)
    return out

def _reopen(sup: Supervisor, m: EpisodeManifest) -> None:
    bid = m.batch_id
    if bid not in sup.batches:
        sup.batches.load(bid) if sup.spool.batch_dir(bid).is_dir() else sup.batches.placeholder(bid)
        sup.batches[bid].tally = _tally(sup, bid)
    b = sup.batches[bid]
    b.tally.unfinish("failed", m)
    sup.finished["failed"] = sup.finished.get("failed", 1) - 1
    b.summarised = False
    stage = lifecycle.reopen(m)
    sup.spool.write_manifest(sup.spool.folder("failed", m.session_id), m)
    sup.spool.move(m.session_id, "failed", stage)
    sup.episodes.add(Episode(manifest=m, location=stage))
    b.dirty = True
    logger.bind(batch=bid, episode=m.session_id, stage=stage).info(
        "retry: {} is back in {} (retry round {})", m.session_id, stage, m.retry_rounds)


def _tally(sup: Supervisor, bid: str) -> Tally:
    """A forgotten (complete) batch's tally, counted again from its folders when a retry reopens it."""
    pairs = []
    for loc in ("done", "failed"):
        for found in sup.spool.scan_location(loc):
            if recovery.batch_of_folder(found.episode_id) == bid:
                try:
                    pairs.append((loc, sup.spool.read_manifest(found.folder)))
                except (FileNotFoundError, ValueError):
                    continue
    return Tally.of(pairs)
