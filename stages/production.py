"""Production stage: write the two-host script, hold it to the quality gates, revise, write it whole.

The revision loop and the script's shape live here, not in a writer, so every writer (local,
OpenAI-compatible, sim) is normalised the same way, gets the same gates and the same feedback, and
never writes the Sources list itself. The sim writer is a dry run of the plumbing: its scripts are
scored but never refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, StageContext, StageError, StageResult, Usage
from podspool.stages.costs import cost_of
from podspool.stages.providers import registry
from podspool.stages.script import format as script_format
from podspool.stages.script import normalise as script_normalise
from podspool.stages.script import quality

REJECTED_MD = "script.rejected.md"  # the last refused draft, kept for the operator who reads failed/


def _reused(folder: Path) -> StageResult | None:
    """The earlier result when script.md and a passing quality.json (written last) are both there."""
    qpath = folder / artifacts.QUALITY_JSON
    if not (qpath.exists() and (folder / artifacts.SCRIPT_MD).exists()):
        return None
    q = fsio.read_json(qpath)
    if not q.get("accepted", q.get("passed")):
        return None  # a refused script: a retry is a new attempt
    return StageResult(ok=True, cost_usd=float(q.get("cost_usd", 0.0)), quality=q.get("score"),
                       quality_scores=dict(q.get("scores", {})), revisions=int(q.get("revisions", 0)),
                       reused=True)


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    earlier = _reused(folder)
    if earlier:
        return earlier
    research, _ = artifacts.load_research(folder)
    settings = ctx.settings
    hosts = episode.show.names  # the cast, in order: one to four speakers
    writer = registry.load(registry.WRITERS, settings.production.provider)
    dry_run = writer.dry_run
    if not research.findings and not dry_run:
        # the grounded gate refuses every script without findings to cite: do not pay a writer to learn it
        raise StageError("the research found nothing to write from (no findings, not grounded): give the "
                         "episode sources or set research.sources_dir", retryable=False)
    usage: list[Usage] = []
    history: list[dict[str, Any]] = []
    feedback: list[str] = []
    drafts: dict[str, int] = {}  # script -> the draft that first produced it
    stopped = ""
    for number in range(settings.quality.max_revisions + 1):
        try:
            with ctx.call_slot:
                out = writer.write(episode, research, hosts, feedback, ctx)
        except StageError as exc:
            # earlier drafts were paid for too: the attempt's cost includes them
            exc.usage = usage + exc.usage
            exc.cost_usd = cost_of(exc.usage, settings) if exc.usage else exc.cost_usd
            raise
        usage.extend(out.usage)
        # One owner of the script's shape: whatever the writer's style, script.md is the normalised
        # body plus podspool's own Sources list, numbered as the research is.
        draft = script_normalise.normalise(out.script, episode.show, episode.title or episode.topic)
        script = script_format.with_sources(draft.body, research.findings)
        if script in drafts:
            # the model answered the feedback with the same script: another call would be paid for nothing
            stopped = f"revision {number} returned the same script as draft {drafts[script]}, so revising stopped"
            history.append({"draft": number, "same_as": drafts[script]})
            break
        drafts[script] = number
        with ctx.gate_lock:
            report = quality.evaluate(script, research, settings, draft=draft, incomplete=out.incomplete,
                                      show=episode.show)
        history.append({"draft": number, "score": round(report.score, 3), "reasons": report.reasons,
                        "dropped": draft.dropped[:20], "title_supplied": draft.title_supplied,
                        "speakers": {k: v for k, v in draft.speakers.items() if k != v}})
        if report.passed or dry_run:
            break
        logger.info("production {}: draft {} scored {:.2f}, refused: {}", episode.episode_id, number,
                    report.score, "; ".join(report.reasons))
        feedback = report.reasons
    revisions = len(history) - 1
    cost = cost_of(usage, settings)
    accepted = report.passed or dry_run
    doc = {**report.to_dict(), "accepted": accepted, "dry_run": dry_run,
           "threshold": settings.quality.threshold, "revisions": revisions, "history": history,
           "stopped_early": stopped or None, "provider": writer.name,
           "usage": [u.to_dict() for u in usage], "cost_usd": cost}
    if not accepted:
        doc["reply"] = draft.raw  # what the model actually said, for the operator reading failed/
        fsio.write_text(folder / REJECTED_MD, script)
        fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
        reasons = "; ".join(report.reasons)
        early = f"; {stopped}" if stopped else ""
        raise StageError(f"quality gates refused the script after {revisions} revision(s) "
                         f"(score {report.score:.2f}, threshold {settings.quality.threshold}{early}): {reasons}",
                         retryable=False, cost_usd=cost, usage=usage)
    # script first, quality.json last: quality.json is the marker that the phase finished
    fsio.write_text(folder / artifacts.SCRIPT_MD, script)
    fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
    return StageResult(ok=True, cost_usd=cost, usage=usage, quality=round(report.score, 3),
                       quality_scores=report.scores, revisions=revisions,
                       details={"words": report.words, "quality_passed": report.passed})
