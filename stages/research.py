"""Research stage: ask the configured provider for findings and write research.json whole.

The episode's own sources (files and URLs) are handed to every provider as one `EpisodeSources`,
cached in the episode folder, so a URL fetched by a failed attempt is not fetched again.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger
from podspool.stages import artifacts
from podspool.stages.base import EpisodeInput, StageContext, StageResult
from podspool.stages.costs import cost_of
from podspool.stages.providers import registry
from podspool.stages.sources.library import EpisodeSources


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    if (folder / artifacts.RESEARCH_JSON).exists():  # written whole, so present means finished: do not pay again
        _, doc = artifacts.load_research(folder)
        return StageResult(ok=True, cost_usd=float(doc.get("cost_usd", 0.0)), reused=True,
                           details={"findings": len(doc.get("findings", [])), "grounded": doc.get("grounded")})
    provider = registry.load(registry.RESEARCH, ctx.settings.research.provider)
    sources = EpisodeSources(episode, ctx, cache=folder)
    with ctx.call_slot:
        out = provider.research(episode, ctx, sources=sources)
    cost = cost_of(out.usage, ctx.settings)
    artifacts.save_research(folder, out, cost, extra={"topic": episode.topic,
                                                      "episode_sources": list(episode.sources)})
    if not out.grounded and not provider.dry_run:  # a dry run's findings are made up, and say so
        logger.warning("research {}: no grounded findings (episode sources: {})", episode.episode_id,
                       len(episode.sources))
    return StageResult(ok=True, cost_usd=cost, usage=out.usage,
                       details={"findings": len(out.findings), "grounded": out.grounded})
