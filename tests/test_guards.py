"""The memory guard alone: it pauses admission over the soft limit, resumes under it, and checks at its pace."""

from __future__ import annotations

from podspool.daemon.config import Limits
from podspool.daemon.executors.local.guards import MemoryGuard


def test_memory_guard_pauses_and_resumes() -> None:
    guard = MemoryGuard(every_s=2.0)
    # below the configurable minimum, so this test process alone is over it
    guard.check([], Limits.model_construct(memory_soft_mb=1), now=100.0)
    assert guard.paused and guard.rss > 1024 * 1024
    guard.check([], Limits(memory_soft_mb=10**6), now=101.0)  # too soon: not checked again
    assert guard.paused
    guard.check([], Limits(memory_soft_mb=10**6), now=102.5)
    assert not guard.paused
