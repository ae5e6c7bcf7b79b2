"""Production stage: write the two-host script from the research (gates land with the local writer)."""

from __future__ import annotations

from pathlib import Path

from stages import artifacts, fsio
from stages.base import EpisodeInput, StageContext, StageResult
from stages.costs import cost_of
from stages.providers import registry


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    if (folder / artifacts.SCRIPT_MD).exists() and (folder / artifacts.QUALITY_JSON).exists():
        q = fsio.read_json(folder / artifacts.QUALITY_JSON)
        return StageResult(ok=True, cost_usd=float(q.get("cost_usd", 0.0)), quality=q.get("score"),
                           quality_scores=q.get("scores", {}), revisions=q.get("revisions", 0), reused=True)
    research, _ = artifacts.load_research(folder)
    writer = registry.load(registry.WRITERS, ctx.settings.production.provider)
    out = writer.write(episode, research, ctx.settings.production.hosts, [], ctx)
    cost = cost_of(out.usage, ctx.settings)
    fsio.write_text(folder / artifacts.SCRIPT_MD, out.script)
    fsio.write_json(folder / artifacts.QUALITY_JSON, {"score": 1.0, "scores": {}, "passed": True,
                                                      "revisions": 0, "cost_usd": cost})
    return StageResult(ok=True, cost_usd=cost, usage=out.usage, quality=1.0)
