"""The episode lifecycle as pure functions: a stage starts, a result comes back, recovery finds a folder;
and the scheduling rules (a strategy's cap per stage, the retry backoff).

Each function changes a manifest and says where the episode goes next; none touches the spool, the
clock or a process, so every rule here is testable on plain values (tests/test_lifecycle.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from podspool.daemon.core.disk import DISK_ERRNOS
from podspool.daemon.models import (
    STRATEGY_PRESETS,
    EpisodeError,
    EpisodeManifest,
    PhaseTiming,
    ReviewRecord,
    State,
)
from podspool.daemon.spool import FINAL, Location
from podspool.stages.base import STAGE_NAMES, StageName, StageResult

# Where an episode goes when a stage is done: the next stage, and "done" after the last one.
NEXT: dict[StageName, Location] = {s: Location(STAGE_NAMES[i + 1]) if i + 1 < len(STAGE_NAMES) else Location.DONE
                                   for i, s in enumerate(STAGE_NAMES)}

Outcome = Literal["advanced", "review", "done", "retry", "failed", "disk"]


@dataclass(frozen=True)
class Transition:
    """What a result means: where the folder goes and why."""

    outcome: Outcome
    target: Location  # the location after this result; the stage itself when the episode stays
    retry_in: float | None = None  # seconds before a retry may start

    @property
    def moves(self) -> bool:
        return self.outcome in ("advanced", "review", "done", "failed")


def begin(m: EpisodeManifest, stage: StageName, now_iso: str, now_mono: float) -> bool:
    """Mark `stage` as running. Returns True when the episode takes a session slot (it was not in progress).

    An attempt is counted when a phase starts afresh or after a failure, not when a crash interrupted it:
    a crash is the daemon's fault, not the episode's.
    """
    takes_slot = m.status != State.IN_PROGRESS
    if m.phases.get(stage) == State.FAILED or m.attempts == 0:
        m.attempts += 1
    m.status = State.IN_PROGRESS
    m.phases.set(stage, State.IN_PROGRESS)
    m.not_before = None
    m.timings[stage] = PhaseTiming(started=now_iso, started_mono=now_mono)
    return takes_slot


def conclude(m: EpisodeManifest, stage: StageName, result: StageResult, *, max_retries: int, now_iso: str,
           now_mono: float, now_unix: float, retry_delay_s: float, review: ReviewRecord | None = None) -> Transition:
    """Apply a stage's result to the manifest and decide the episode's next location. `review`: a script
    that waits for a person after production (its show asks for review) goes to review/, not admitted."""
    m.costs.add(stage, result.cost_usd)  # failed attempts cost money too
    timing = m.timings.setdefault(stage, PhaseTiming())
    if result.ok:
        m.phases.set(stage, State.DONE)
        timing.finished = now_iso
        if timing.started_mono is not None:
            timing.seconds = round(now_mono - timing.started_mono, 3)
        if stage == "production":
            m.quality = result.quality
            m.quality_scores = dict(result.quality_scores)
            m.revisions = result.revisions
        if result.details:
            m.details[stage] = result.details
        target = NEXT[stage]
        if stage == "production" and review is not None:
            m.review = review
            m.status = State.PENDING  # nothing runs in review/: it holds no place under the cap
            return Transition("review", Location.REVIEW)
        if target == Location.DONE:
            m.status = State.DONE
            m.finished_at = now_iso
            return Transition("done", Location.DONE)
        return Transition("advanced", target)
    if result.disk_errno in DISK_ERRNOS:
        # The worker could not save its artifacts: burning the episode's retries now would send it to
        # failed/ within a second. The attempt is not counted; it runs again once the disk recovers.
        m.phases.set(stage, State.PENDING)
        m.status = State.PENDING
        return Transition("disk", Location(stage))
    m.errors.append(EpisodeError(phase=stage, attempt=m.attempts, at=now_iso,
                                 error=str(result.error or "unknown error")[:4000]))
    m.phases.set(stage, State.FAILED)
    if not result.retryable or m.attempts >= max_retries + 1:
        m.status = State.FAILED
        m.finished_at = now_iso
        return Transition("failed", Location.FAILED)
    m.status = State.PENDING
    m.not_before = now_unix + retry_delay_s
    return Transition("retry", Location(stage), retry_in=retry_delay_s)


def approve(m: EpisodeManifest, now_iso: str, script_sha256: str, edited: bool) -> Location:
    """A reviewed script goes on to audio."""
    r = m.review or ReviewRecord()
    m.review = r.model_copy(update={"state": "approved", "script_sha256": script_sha256, "edited": edited,
                                    "at": now_iso})
    return Location.AUDIO


def reject(m: EpisodeManifest, note: str, fail: bool, now_iso: str) -> Location:
    """A reviewed script goes back to production with the note as the writer's feedback, or to failed/."""
    r = m.review or ReviewRecord()
    m.review = r.model_copy(update={"state": "rejected", "notes": [*r.notes, note] if note else r.notes,
                                    "at": now_iso})
    if fail:
        m.errors.append(EpisodeError(phase="production", attempt=m.attempts, at=now_iso,
                                     error=f"rejected in review: {note or 'no note'}"[:4000]))
        m.status = State.FAILED
        m.finished_at = now_iso
        return Location.FAILED
    m.phases.set("production", State.PENDING)
    m.status = State.PENDING
    return Location.PRODUCTION


def redo(m: EpisodeManifest, stage: StageName) -> None:
    """`podspool redo --from stage`: that stage and those after it run again; what came before is kept."""
    for s in STAGE_NAMES[STAGE_NAMES.index(stage):]:
        m.phases.set(s, State.PENDING)
    m.status = State.PENDING
    m.attempts = 0
    m.redo_rounds += 1
    m.not_before = None
    m.finished_at = None
    if stage != "audio":
        m.review = None  # a new script: reviewed anew when its show asks for review
    elif m.review is not None:
        m.review = m.review.model_copy(update={"state": "approved"})


def reopen(m: EpisodeManifest) -> StageName:
    """`podspool retry`: a failed episode goes back to the stage it failed in, with fresh attempts."""
    stage = m.current_stage() or STAGE_NAMES[-1]
    m.status = State.PENDING
    m.phases.set(stage, State.PENDING)
    m.attempts = 0
    m.retry_rounds += 1
    m.not_before = None
    m.finished_at = None
    return stage


def recovered(m: EpisodeManifest, location: str, now_iso: str) -> tuple[list[Location], bool]:
    """Where a folder found at `location` after a crash belongs, finishing any move the crash interrupted.

    Returns the locations to move it through, in order (empty: it stays), and whether the manifest
    changed. An in-progress phase runs again from its start.
    """
    path: list[Location] = []
    changed = False
    if location in FINAL and m.status == State.PENDING:  # a redo wrote its manifest, then the crash came
        location = Location(m.current_stage() or STAGE_NAMES[-1])
        path.append(location)
    if location == Location.REVIEW:  # approve or reject wrote the manifest, then the crash came
        decided = {"approved": Location.AUDIO, "rejected": Location.PRODUCTION}.get(m.review.state if m.review else "")
        if m.status == State.FAILED:
            decided = Location.FAILED
        if decided is None:
            return path, changed
        location = decided
        path.append(location)
    while location in STAGE_NAMES:
        stage: StageName = location
        if m.status == State.FAILED:
            path.append(Location.FAILED)
            break
        if m.phases.get(stage) == State.DONE:
            if stage == "production" and m.review is not None and m.review.state == "waiting":
                path.append(Location.REVIEW)  # the move into review a crash interrupted
                break
            location = NEXT[stage]
            if location == Location.DONE and m.status != State.DONE:
                m.status = State.DONE
                m.finished_at = m.finished_at or now_iso
                changed = True
            path.append(location)
            continue
        if m.phases.get(stage) == State.IN_PROGRESS:
            m.phases.set(stage, State.PENDING)
            changed = True
        break
    return path, changed


# ---- scheduling rules: the order itself is kept by the ready heaps of episodes.py ------------------


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
