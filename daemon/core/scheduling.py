"""Scheduling rules as pure functions: a batch strategy's cap per stage, and the retry backoff.

The order itself (priority, batch age, first tries before retries, episode number) is kept by the
ready heaps of daemon/core/episodes.py.
"""

from __future__ import annotations

import random

from podspool.daemon.models import STRATEGY_PRESETS
from podspool.stages.base import StageName


def batch_stage_cap(strategy: str | None, stage: StageName, pool_size: int, explicit: bool) -> int:
    """How many workers of a stage one batch may use at once."""
    if explicit or strategy not in STRATEGY_PRESETS:
        return pool_size
    return min(pool_size, STRATEGY_PRESETS[strategy][stage])


_RNG = random.Random()  # one, seeded once: a Random() per call read the OS's entropy every time


def retry_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter on the upper half: base * 2^(attempt-1), capped."""
    rng = rng or _RNG
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + rng.random() * ceiling / 2
