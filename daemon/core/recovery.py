"""Recovery is a scan (as Postfix does after a crash): rebuild every queue from the folders.

Whatever was in flight runs again from the start of its stage; a move a crash interrupted is
finished; temp files of dead writers are removed. Batches whose summary is written are complete:
their episodes are not read at all, so a spool with months of finished work starts in a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loguru import logger
from podspool.daemon.core import lifecycle, versions
from podspool.daemon.core.batches import BatchBook, summary_name
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.intake import staging
from podspool.daemon.models import EpisodeManifest, State, episode_id, utcnow
from podspool.daemon.spool import FINAL, Spool

EPISODE_PREFIX = "ep_"


def batch_of_folder(name: str) -> str | None:
    """The batch id in an episode folder's name (`ep_<number>_<batch_id>`)."""
    parts = name.split("_", 2)
    return parts[2] if len(parts) == 3 and parts[0] + "_" == EPISODE_PREFIX and parts[1].isdigit() else None


def recover(spool: Spool, book: EpisodeBook, batches: BatchBook) -> None:
    spool.ensure()
    if not spool.wait_for_old_workers():
        logger.warning("workers of an earlier daemon are still alive after 10 s; going on")
    for bid in staging.recover_intake(spool):
        logger.info("recovery: finished the intake of batch {}", bid)
    found = list(spool.scan())
    open_batches = {batch_of_folder(loc.episode_id) for loc in found if loc.location not in FINAL}
    complete = set()
    for bid in spool.batch_ids():
        if bid not in open_batches and (spool.batch_dir(bid) / summary_name(bid)).exists():
            complete.add(bid)
        else:
            batches.load(bid)
    seen: dict[str, str] = {}
    for loc in found:
        if loc.location in FINAL and batch_of_folder(loc.episode_id) in complete:
            continue  # a finished episode of a summarised batch: nothing to do, nothing to keep
        removed = spool.clean_temps(loc.folder)
        if removed:
            logger.info("recovery: removed {} temp file(s) in {}", removed, loc.folder)
        if loc.episode_id in seen:
            logger.error("recovery: {} stands in both {} and {}; keeping {}", loc.episode_id,
                         seen[loc.episode_id], loc.location, seen[loc.episode_id])
            continue
        seen[loc.episode_id] = loc.location
        m = _read_or_rebuild(spool, loc.folder, loc.episode_id)
        if m is not None:
            _place(spool, book, batches, m, loc.location)
    # Temp files of a dead writer also sit outside episode folders (found by the crash-point sweep).
    # Every batch folder, complete ones included (a crash while writing a finished batch's chart).
    for folder in (*(spool.batch_dir(b) for b in spool.batch_ids()), spool.state, spool.rejected, spool.root,
                   spool.inbox):
        spool.clean_temps(folder)
    for bid in batches.by_id:
        if (spool.batch_dir(bid) / summary_name(bid)).exists() and batches[bid].complete:
            batches[bid].summarised = True  # written before the crash: not announced again
    batches.count_finished()


def _place(spool: Spool, book: EpisodeBook, batches: BatchBook, m: EpisodeManifest, location: str) -> None:
    eid = m.session_id
    if m.batch_id not in batches:
        batches.placeholder(m.batch_id)
    if location in FINAL and m.status == State.PENDING:  # a redo a crash interrupted: finish its versioning
        versions.finish_redo(spool.folder(location, eid), m)
    path, changed = lifecycle.recovered(m, location, utcnow())
    if changed or path:
        if location in lifecycle.NEXT and path == [] and changed:
            logger.bind(batch=m.batch_id, episode=eid, stage=location).info(
                "recovery: {} was in flight; it runs again from the start of {}", eid, location)
        spool.write_manifest(spool.folder(location, eid), m)
    for target in path:
        spool.move(eid, location, target)
        location = target
    tally = batches[m.batch_id].tally
    tally.total += 1
    tally.numbers.append(m.episode_number)
    tally.add_costs(m)
    if location in FINAL:
        tally.finish(location, m)
    else:
        book.add(Episode(manifest=m, location=location, loader=book.loader))


def manifest_loader(spool: Spool) -> Callable[[str, str], EpisodeManifest]:
    """How a light (never started) episode's manifest is read when it starts: from its folder, rebuilt from
    batch.json if damaged; an OSError when neither can be had."""

    def load(location: str, eid: str) -> EpisodeManifest:
        m = _read_or_rebuild(spool, spool.folder(location, eid), eid)
        if m is None:
            raise FileNotFoundError(f"{location}/{eid}: no readable manifest and no batch to rebuild it from")
        return m

    return load


def _read_or_rebuild(spool: Spool, folder: Path, eid: str) -> EpisodeManifest | None:
    try:
        return spool.read_manifest(folder)
    except (FileNotFoundError, ValueError) as exc:
        # The manifest is written whole, so this is outside damage; rebuild it from the batch.
        bid = batch_of_folder(eid)
        batch = spool.read_batch(bid) if bid else None
        for ep in batch.all_episodes() if batch is not None and bid else []:
            if episode_id(ep.number, bid) == eid:  # type: ignore[arg-type]
                logger.warning("recovery: {} had an unreadable manifest ({}); rebuilt from batch.json",
                               eid, type(exc).__name__)
                m = EpisodeManifest(episode_number=ep.number, session_id=eid, batch_id=bid,  # type: ignore[arg-type]
                                    topic=ep.topic, title=ep.title, notes=ep.notes, sources=list(ep.sources),
                                    show=batch.show_of(ep), priority=batch.priority)  # type: ignore[union-attr]
                spool.write_manifest(folder, m)
                return m
        logger.error("recovery: {} has no readable manifest and no batch; left alone", folder)
        return None
