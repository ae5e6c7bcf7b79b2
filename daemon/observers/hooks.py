"""Cross-cutting observers of the supervisor (metrics, alerts, charts), each in its own module.

A hook never blocks the pipeline and never takes it down: the supervisor calls each method inside a
guard, and a hook that needs I/O with a remote (a webhook) does it off the main loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from loguru import logger
from podspool.daemon.models import EpisodeManifest
from podspool.stages.base import StageName, Usage


class Hook:
    """Override what you need; every method is optional."""

    def on_tick(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Called every loop turn (about twice a second); call `snapshot()` only when you need it."""

    def on_phase_done(self, manifest: EpisodeManifest, stage: StageName, usage: list[Usage]) -> None:
        """A phase finished well in this daemon's life; `usage` is its run's, as its artifact keeps it."""

    def on_episode_done(self, manifest: EpisodeManifest) -> None: ...

    def on_episode_failed(self, manifest: EpisodeManifest) -> None:
        """The episode reached failed/ (retries exhausted or refused by a quality gate)."""

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        """`episodes` reads the batch's finished episodes from their folders each time it is iterated:
        iterate once, keep only what you need."""

    def on_crash(self, exc: BaseException) -> None:
        """The supervisor is going down with an unexpected error."""

    def close(self) -> None: ...


class Observers:
    """The hooks of one daemon, called in order; one that raises is logged, never passed on."""

    def __init__(self, hooks: list[Hook] | None = None) -> None:
        self.hooks: list[Hook] = list(hooks or [])

    def emit(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception as exc:  # an observer must never take the pipeline down
                logger.opt(exception=exc).error("hook {}.{} failed: {}", type(hook).__name__, method, exc)

    def close(self) -> None:
        for hook in self.hooks:
            try:
                hook.close()
            except Exception as exc:
                logger.error("hook {} did not close cleanly: {}", type(hook).__name__, exc)
