"""Production stage: write the two-host script, hold it to the quality gates, revise, write it whole.

The revision loop lives here, not in a writer, so every writer (local, OpenAI-compatible, sim) gets
the same gates and the same feedback. The sim writer is a dry run of the plumbing: its scripts are
scored but never refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import artifacts, fsio, quality
from podspool.stages.base import EpisodeInput, StageContext, StageError, StageResult, Usage
from podspool.stages.costs import cost_of
from podspool.stages.providers import registry

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
    writer = registry.load(registry.WRITERS, settings.production.provider)
    dry_run = writer.name == "sim"
    usage: list[Usage] = []
    history: list[dict[str, Any]] = []
    feedback: list[str] = []
    for draft in range(settings.quality.max_revisions + 1):
        try:
            with ctx.call_slot:
                out = writer.write(episode, research, list(settings.production.hosts), feedback, ctx)
        except StageError as exc:
            # earlier drafts were paid for too: the attempt's cost includes them
            exc.usage = usage + exc.usage
            exc.cost_usd = cost_of(exc.usage, settings) if exc.usage else exc.cost_usd
            raise
        usage.extend(out.usage)
        with ctx.gate_lock:
            report = quality.evaluate(out.script, research, settings)
        history.append({"draft": draft, "score": round(report.score, 3), "reasons": report.reasons})
        if report.passed or dry_run:
            break
        logger.info("production {}: draft {} scored {:.2f}, refused: {}", episode.episode_id, draft,
                    report.score, "; ".join(report.reasons))
        feedback = report.reasons
    revisions = len(history) - 1
    cost = cost_of(usage, settings)
    doc = {**report.to_dict(), "accepted": report.passed or dry_run, "dry_run": dry_run,
           "threshold": settings.quality.threshold, "revisions": revisions, "history": history,
           "provider": writer.name, "usage": [u.to_dict() for u in usage], "cost_usd": cost}
    if not doc["accepted"]:
        fsio.write_text(folder / REJECTED_MD, out.script)
        fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
        reasons = "; ".join(report.reasons)
        raise StageError(f"quality gates refused the script after {revisions} revision(s) "
                         f"(score {report.score:.2f}, threshold {settings.quality.threshold}): {reasons}",
                         retryable=False, cost_usd=cost, usage=usage)
    # script first, quality.json last: quality.json is the marker that the phase finished
    fsio.write_text(folder / artifacts.SCRIPT_MD, out.script)
    fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
    return StageResult(ok=True, cost_usd=cost, usage=usage, quality=round(report.score, 3),
                       quality_scores=report.scores, revisions=revisions,
                       details={"words": report.words, "quality_passed": report.passed})
