"""Research stage: ask the configured provider for findings and write research.json."""

from __future__ import annotations

from pathlib import Path

from stages import artifacts
from stages.base import EpisodeInput, StageContext, StageResult
from stages.costs import cost_of
from stages.providers import registry


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    if (folder / artifacts.RESEARCH_JSON).exists():  # finished before a crash: do not pay again
        _, doc = artifacts.load_research(folder)
        return StageResult(ok=True, cost_usd=float(doc.get("cost_usd", 0.0)), reused=True)
    provider = registry.load(registry.RESEARCH, ctx.settings.research.provider)
    out = provider.research(episode, ctx)
    cost = cost_of(out.usage, ctx.settings)
    artifacts.save_research(folder, out, cost)
    return StageResult(ok=True, cost_usd=cost, usage=out.usage,
                       details={"findings": len(out.findings), "grounded": out.grounded})
