"""A producer in the loop: review holds, approval (with hand edits), rejection, and redo.

An episode whose show asks for review waits in review/ after production, with its script, its gates
and the predicted cost of its speech; nothing runs there and it is not admitted. `approve` sends it on
to audio (an edited script.md is normalised and held to the hard gates first), `reject` back to
production with a note for the writer (or to failed/), and `redo` runs a done or failed episode again
from a stage, keeping what came before and the previous published files as a numbered version.

Each change writes the manifest first (it says where the episode is going) and moves the folder
second, so recovery finishes a change a crash interrupted (lifecycle.recovered, versions.finish_redo). The
same functions serve a running daemon (control requests) and the command line with no daemon
(`offline`, under the spool lock).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.core import lifecycle, recovery, versions
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.commit import CommitGroup
from podspool.daemon.core.episodes import Episode, EpisodeBook
from podspool.daemon.models import EpisodeManifest, utcnow
from podspool.daemon.spool import FINAL, Location, Spool
from podspool.stages import artifacts, fsio
from podspool.stages.base import StageName
from podspool.stages.costs import price_for
from podspool.stages.script import format as script_format
from podspool.stages.script import normalise as script_normalise
from podspool.stages.script import quality
from podspool.stages.show import resolve

# the speech API each audio provider bills (stages/costs.py), and its model setting
SPEECH_API = {"elevenlabs": "elevenlabs", "openai": "openai_speech"}


class Refused(Exception):
    """An episode that cannot take this action now; the message says why."""


def script_hash(path: Path) -> str:
    return hashlib.sha256(fsio.read_whole(str(path))).hexdigest()


def predicted_speech_usd(script: str, cfg: Config) -> float:
    """The speech of `script` at the configured provider's price per character (0 for offline voices)."""
    provider = cfg.audio.provider
    api = SPEECH_API.get(provider, provider)
    model = {"elevenlabs": cfg.providers.elevenlabs.model, "openai": cfg.providers.openai_speech.model}.get(provider)
    chars = sum(len(t.text) for t in script_format.parse_turns(script))
    return round(price_for(api, model, cfg.stage_settings()).per_thousand_characters * chars / 1e3, 6)


# ---- what may be done: checked by the command before anything moves --------------------------


@dataclass(frozen=True)
class Found:
    episode_id: str
    location: Location
    folder: Path
    manifest: EpisodeManifest


def find(spool: Spool, episode_ids: list[str], batch: str | None, where: tuple[Location, ...],
         action: str) -> tuple[list[Found], list[str]]:
    """The episodes named (or every one of `batch` in `where`), and a problem per one that cannot take
    `action`: unknown, or not where the action applies."""
    found: list[Found] = []
    problems: list[str] = []
    places = {loc.episode_id: loc for loc in spool.scan()}
    wanted = list(episode_ids)
    if batch:
        if not spool.batch_dir(batch).is_dir():
            return [], [f"no batch {batch!r}"]
        wanted += sorted(e for e, loc in places.items()
                         if recovery.batch_of_folder(e) == batch and loc.location in where and e not in wanted)
        if not wanted:
            problems.append(f"batch {batch} has no episode to {action} (none in {' or '.join(where)})")
    for eid in wanted:
        loc = places.get(eid)
        if loc is None:
            problems.append(f"{eid}: no such episode")
            continue
        if loc.location not in where:
            problems.append(f"{eid}: it is in {loc.location}/, not in {' or '.join(where)}/: nothing to {action}")
            continue
        try:
            m = spool.read_manifest(loc.folder)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"{eid}: its manifest cannot be read ({exc})")
            continue
        found.append(Found(eid, Location(loc.location), loc.folder, m))
    return found, problems


def check_edit(folder: Path, m: EpisodeManifest, cfg: Config) -> tuple[str | None, str | None]:
    """A script.md edited in review, read back: (the normalised script to voice, or None when it was not
    edited; the refusal naming the hard gate that fails, or None)."""
    path = folder / artifacts.SCRIPT_MD
    if m.review is not None and m.review.script_sha256 and script_hash(path) == m.review.script_sha256:
        return None, None
    text = path.read_text(encoding="utf-8")
    show = resolve(cfg.production.show_defaults(), m.show, hosts=cfg.production.hosts)
    research = artifacts.load_research(folder)[0]
    draft = script_normalise.normalise(script_format.body(text) or text, show, m.title or m.topic)
    script = script_format.with_sources(draft.body, research.findings)
    parsed = script_format.parse(script)
    gates = [quality.complete_gate(parsed.turns, draft, None),
             quality.speakers_gate(parsed.turns, show.names, draft),
             quality.grounded_gate(parsed, len(research.findings))]
    failed = [f"{g.name}: {g.reason}" for g in gates if not g.passed]
    if failed:
        return None, "the edited script.md fails " + "; ".join(failed)
    return script, None


# ---- the changes: manifest first, folder second ------------------------------------------------


def approve(found: Found, spool: Spool, cfg: Config, checked: str | None = None) -> Location:
    """Review -> audio. `checked`: the script hash the command checked; a script edited since is refused."""
    m = found.manifest
    if checked is not None and script_hash(found.folder / artifacts.SCRIPT_MD) != checked:
        raise Refused(f"{found.episode_id}: script.md changed after it was checked; approve it again")
    script, refusal = check_edit(found.folder, m, cfg)
    if refusal:
        raise Refused(f"{found.episode_id}: {refusal}; it stays in review")
    if script is not None:  # voiced exactly as edited, in the script's one shape
        fsio.write_text(found.folder / artifacts.SCRIPT_MD, script)
    target = lifecycle.approve(m, utcnow(), script_hash(found.folder / artifacts.SCRIPT_MD), edited=script is not None)
    _save_and_move(spool, found, m, target)
    return target


def reject(found: Found, spool: Spool, note: str, fail: bool) -> Location:
    """Review -> production, the note the writer's feedback for its next draft (or -> failed)."""
    m = found.manifest
    if not fail:  # the rejected draft is kept for the producer, and is not reused by the next attempt
        n = len(m.review.notes) + 1 if m.review is not None else 1
        for name, kept in ((artifacts.SCRIPT_MD, f"script.reviewed-{n}.md"),
                           (artifacts.QUALITY_JSON, f"quality.reviewed-{n}.json")):
            if (found.folder / name).exists():
                os.replace(found.folder / name, found.folder / kept)
        fsio.fsync_dir(found.folder)
    target = lifecycle.reject(m, note, fail, utcnow())
    _save_and_move(spool, found, m, target)
    return target


def redo(found: Found, spool: Spool, stage: StageName) -> Location:
    """A done or failed episode runs again from `stage`: the manifest says so first, then what the
    stages from `stage` on made moves to versions/<n>/, then the folder moves to `stage`."""
    m = found.manifest
    lifecycle.redo(m, stage)
    spool.write_manifest(found.folder, m)
    versions.finish_redo(found.folder, m)
    spool.move(found.episode_id, found.location, Location(stage))
    return Location(stage)


def _save_and_move(spool: Spool, found: Found, m: EpisodeManifest, target: Location) -> None:
    spool.write_manifest(found.folder, m)
    if target != found.location:
        spool.move(found.episode_id, found.location, target)


# ---- applied to the books: by a running daemon, or offline ---------------------------------------


def apply(body: dict[str, Any], spool: Spool, cfg: Config, episodes: EpisodeBook,
          batches: BatchBook) -> list[tuple[str, str]]:
    """A control request {"review": {...}}: approve, reject or redo. Returns (episode id, where it went);
    an episode that may not take the action now is logged and left where it is."""
    req = body["review"]
    action = str(req.get("action"))
    where = (Location.REVIEW,) if action in ("approve", "reject") else FINAL
    found, problems = find(spool, list(req.get("episodes") or []), req.get("batch"), where, action)
    for problem in problems:
        logger.warning("{}: {}", action, problem)
    out = []
    for f in found:
        log = logger.bind(batch=f.manifest.batch_id, episode=f.episode_id, stage=f.location)
        try:
            if action == "approve":
                target = approve(f, spool, cfg, (req.get("checked") or {}).get(f.episode_id))
            elif action == "reject":
                target = reject(f, spool, str(req.get("note") or ""), bool(req.get("fail")))
            else:
                batches.reopen(f.manifest.batch_id)  # counted from its folders before this one moves
                target = redo(f, spool, req["from"])
        except Refused as exc:
            log.warning("{}: {}", action, exc)
            continue
        _rebook(f, target, episodes, batches)
        log.info("{}: {} is now in {}", action, f.episode_id, target)
        out.append((f.episode_id, str(target)))
    return out


def _rebook(f: Found, target: Location, episodes: EpisodeBook, batches: BatchBook) -> None:
    """The books follow the move: a redone episode is unfinished again, a failed one finished."""
    m = f.manifest
    bid = m.batch_id
    b = batches.reopen(bid)
    if f.location in FINAL:  # redo: it counts as unfinished again
        b.tally.unfinish(f.location, m)
        batches.finished[f.location] = batches.finished.get(f.location, 1) - 1
        b.summarised = False
    ep = episodes.get(f.episode_id)
    if ep is not None:
        episodes.remove(ep)
    if target in FINAL:
        batches.finish(target, m)
    else:
        episodes.add(Episode(manifest=m, location=target))
    b.dirty = True


def offline(body: dict[str, Any], spool: Spool, cfg: Config) -> list[tuple[str, str]]:
    """The request applied with no daemon running (the caller holds the spool lock)."""
    episodes = EpisodeBook(loader=recovery.manifest_loader(spool))
    batches = BatchBook(spool, cfg.limits.checkpoint_every, episodes)
    recovery.recover(spool, episodes, batches)
    moved = apply(body, spool, cfg, episodes, batches)
    group = CommitGroup(spool.root)  # checkpoints a failed episode made due
    for bid in list(batches.by_id):
        batches.after_change(bid, group)
    group.commit()
    batches.write_sessions(force=True)
    return moved
