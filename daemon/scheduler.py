"""Which waiting episode runs next: priority, batch order, first tries before retries, episode number.

Pure functions over plain values, so the order and the admission rules are testable without processes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from podspool.daemon.models import STRATEGY_PRESETS, EpisodeManifest
from podspool.stages.base import StageName


@dataclass
class Waiting:
    """An episode as the scheduler sees it."""

    manifest: EpisodeManifest
    location: str
    running: bool = False

    @property
    def episode_id(self) -> str:
        return self.manifest.session_id

    @property
    def batch_id(self) -> str:
        return self.manifest.batch_id


def order_key(w: Waiting, batch_seq: float) -> tuple[float, float, int, int]:
    m = w.manifest
    is_retry = 1 if m.attempts > 1 or any(e.phase == w.location for e in m.errors) else 0
    # higher priority first; then older batches; first tries before retries ("after the rest of the batch")
    return (-m.priority, batch_seq, is_retry, m.episode_number)


def needs_admission(m: EpisodeManifest) -> bool:
    """An episode not in progress takes a session slot when it starts (new, or back for a retry)."""
    return m.status != "in_progress"


def batch_stage_cap(strategy: str | None, stage: StageName, pool_size: int, explicit: bool) -> int:
    """How many workers of a stage one batch may use at once."""
    if explicit or strategy not in STRATEGY_PRESETS:
        return pool_size
    return min(pool_size, STRATEGY_PRESETS[strategy][stage])


def retry_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter on the upper half: base * 2^(attempt-1), capped."""
    rng = rng or random.Random()
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + rng.random() * ceiling / 2
