"""Run one stage on one episode folder; every failure becomes a StageResult, never an exception."""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path

from loguru import logger
from podspool.stages.base import EpisodeInput, StageContext, StageError, StageName, StageResult
from podspool.stages.costs import cost_of
from podspool.stages.settings import StageSettings


def run_stage(stage: StageName, folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    module = importlib.import_module(f"podspool.stages.{stage}")  # only this stage's libraries, not all three
    try:
        return module.run(folder, episode, ctx)
    except StageError as exc:
        cost = exc.cost_usd or cost_of(exc.usage, ctx.settings)
        return StageResult(ok=False, error=str(exc), retryable=exc.retryable, cost_usd=cost, usage=exc.usage)
    except OSError as exc:  # typed, so the supervisor can tell a full disk from a broken episode
        logger.opt(exception=exc).error("stage {} raised {}", stage, type(exc).__name__)
        return StageResult(ok=False, error=f"{type(exc).__name__}: {exc}", disk_errno=exc.errno)
    except Exception as exc:  # a bug or an unexpected library error: fail this attempt, keep the worker
        logger.opt(exception=exc).error("stage {} raised {}", stage, type(exc).__name__)
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
        return StageResult(ok=False, error=f"{type(exc).__name__}: {exc}{where}")


def warm_up(stage: StageName, settings: StageSettings) -> None:
    """Import a stage and its provider (numpy, BM25, libespeak...) before the first episode needs them."""
    from podspool.stages.providers import registry as providers
    module = importlib.import_module(f"podspool.stages.{stage}")
    wanted = getattr(module, "warm_up_imports", None)  # what the stage imports lazily (scipy for publishing)
    for name in wanted(settings) if wanted else ():
        importlib.import_module(name)
    table = {"research": providers.RESEARCH, "production": providers.WRITERS, "audio": providers.SPEECH}[stage]
    try:
        providers.load(table, getattr(settings, stage).provider)
    except Exception as exc:  # the first real task will report it properly, with the episode's context
        logger.warning("warm-up of {} provider failed: {}", stage, exc)
