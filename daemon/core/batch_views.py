"""Batch-level views derived from episode manifests: session.json, checkpoints, the summary.

Nothing here is a second source of truth: every figure is recomputed from the episodes, so a crash
can never leave the batch totals out of step with the episodes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from podspool.daemon.models import EpisodeManifest, State, utcnow
from podspool.daemon.spool import FINAL, Location

CHECKPOINT_RE = re.compile(r"^(?P<bid>.+)_checkpoint_(?P<n>\d+)\.json$")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)  # C, and since 3.11 it reads the trailing "Z" (strptime: 12 us a call)
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Tally:
    """A batch's running totals: kept incrementally by the daemon, or counted from the folders by `status`.

    One formula for both, so the daemon's session.json and `podspool status` can never disagree.
    """

    total: int = 0
    completed: int = 0
    failed: int = 0
    revised: int = 0
    quality_sum: float = 0.0
    quality_n: int = 0
    last_finished: float | None = None
    costs: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("research", "production", "audio",
                                                                            "total"), 0.0))
    numbers: list[int] = field(default_factory=list)

    def add_cost(self, stage: str, usd: float) -> None:
        if usd:
            self.costs[stage] += usd
            self.costs["total"] += usd

    def add_costs(self, m: EpisodeManifest) -> None:
        for stage in ("research", "production", "audio"):
            self.add_cost(stage, getattr(m.costs, stage))

    def finish(self, location: str, m: EpisodeManifest) -> None:
        if location == Location.DONE:
            self.completed += 1
            if m.quality is not None:
                self.quality_sum += m.quality
                self.quality_n += 1
        else:
            self.failed += 1
        if m.revisions > 0:
            self.revised += 1
        end = parse_time(m.finished_at)
        if end is not None:
            self.last_finished = max(end, self.last_finished or end)

    def unfinish(self, location: str, m: EpisodeManifest) -> None:
        """`podspool retry` or `redo` took a finished episode back."""
        if location == Location.FAILED:
            self.failed -= 1
        elif location == Location.DONE:
            self.completed -= 1
            if m.quality is not None:
                self.quality_sum -= m.quality
                self.quality_n -= 1
        if m.revisions > 0:
            self.revised -= 1

    @classmethod
    def of(cls, episodes: Iterable[tuple[str, EpisodeManifest]]) -> Tally:
        t = cls()
        for loc, m in episodes:
            t.total += 1
            t.numbers.append(m.episode_number)
            t.add_costs(m)
            if loc in FINAL:
                t.finish(loc, m)
        return t


def derive(meta: dict[str, Any], tally: Tally, unfinished: Iterable[tuple[str, EpisodeManifest]],
           running: set[str] | None = None, checkpoints: list[str] | None = None,
           now: float | None = None, counts: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """session.json for one batch: its static `meta`, its `tally`, and rows for the episodes given.

    `status` gives every episode; the daemon gives only those admitted or in review, with `counts` = (in
    progress, waiting, in review) from its indexes, so a session costs the same for 10 episodes or 10,000."""
    now = time.time() if now is None else now
    running = running or set()
    budget = meta.get("budget_usd")
    in_progress = waiting = review = 0
    rows = []
    for loc, m in sorted(unfinished, key=lambda e: e[1].episode_number):
        if loc == Location.REVIEW:
            review += 1
        elif loc not in FINAL:
            if m.session_id in running or m.status == State.IN_PROGRESS:
                in_progress += 1
            else:
                waiting += 1
        rows.append({"episode_id": m.session_id, "number": m.episode_number, "topic": m.topic,
                     "location": loc, "status": m.status, "phases": m.phases.model_dump(),
                     "attempts": m.attempts, "quality": m.quality, "costs": m.costs.model_dump(),
                     "running": m.session_id in running})
    if counts is not None:
        in_progress, waiting, review = counts
    costs = {k: round(v, 6) for k, v in tally.costs.items()}
    completed, failed, total = tally.completed, tally.failed, tally.total
    over_budget = budget is not None and costs["total"] >= budget
    # held: everything of the batch in a stage folder that is not running now
    held = max(0, in_progress + waiting - len(running)) if over_budget else 0
    started = parse_time(meta.get("start_time")) or parse_time(meta.get("accepted_at"))
    finished = completed + failed == total and total > 0
    end = parse_time(meta.get("end_time")) if finished else None
    if finished and end is None:
        end = tally.last_finished or now
    elapsed = max(1e-9, ((end or now) - started)) if started else None
    per_hour = completed / (elapsed / 3600) if elapsed and completed else 0.0
    remaining = total - completed - failed
    eta_s = remaining / per_hour * 3600 if per_hour and remaining else None
    return {
        **{k: v for k, v in meta.items() if k not in ("progress", "costs", "episodes", "checkpoints")},
        "total": total,
        "episodes_numbers": sorted(tally.numbers),
        "progress": {"completed": completed, "in_progress": in_progress, "failed": failed,
                     "waiting": waiting, "held": held, "review": review, "total": total},
        "completed": completed, "in_progress": in_progress, "failed": failed, "held": held, "review": review,
        "costs": costs,
        "over_budget": over_budget,
        "state": "complete" if finished else ("held" if over_budget and in_progress == 0 else
                                              "review" if review and in_progress + waiting == 0 else "running"),
        "episodes_per_hour": round(per_hour, 3),
        "eta_seconds": None if eta_s is None else round(eta_s, 1),
        "end_time": iso(end) if finished else None,
        "checkpoints": list(checkpoints or []),
        "revised": tally.revised,
        "quality_average": round(tally.quality_sum / tally.quality_n, 4) if tally.quality_n else None,
        "episodes": rows,
        "updated_at": utcnow(),
    }


def checkpoint_doc(session: dict[str, Any], n: int, finished: list[tuple[str, EpisodeManifest]]) -> dict[str, Any]:
    """Checkpoint n: the batch's progress and costs, and the episodes finished since checkpoint n-1 (so
    writing one costs the same at the 2,000th checkpoint as at the first)."""
    return {"checkpoint": n, "written_at": utcnow(), "batch_id": session["batch_id"],
            "progress": session["progress"], "costs": session["costs"],
            "finished_since_previous": [
                {"episode_id": m.session_id, "location": loc, "status": m.status, "phases": m.phases.model_dump(),
                 "attempts": m.attempts, "costs": m.costs.model_dump()} for loc, m in finished]}


def summary_doc(session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> dict[str, Any]:
    """<batch_id>_summary.json, in the playbook's shape."""
    start = parse_time(session.get("start_time")) or parse_time(session.get("accepted_at")) or time.time()
    end = parse_time(session.get("end_time")) or time.time()
    hours = max(0.0, end - start) / 3600
    done = session["completed"]
    costs = session["costs"]
    issues = [{"episode_id": m.session_id, "phase": e.phase, "attempt": e.attempt, "at": e.at, "error": e.error}
              for m in episodes for e in m.errors]
    return {"batch_result": {
        "batch_id": session["batch_id"],
        "configuration": {"size": session["total"], "episodes": session["episodes_numbers"],
                          "strategy": session.get("strategy")},
        "execution_summary": {"start_time": iso(start), "end_time": iso(end),
                              "duration_hours": round(hours, 4),
                              "episodes_per_hour": round(done / hours, 3) if hours > 0 else 0.0},
        "results": {"successful": done, "failed": session["failed"], "revised": session["revised"],
                    "quality_average": session["quality_average"]},
        "cost_breakdown": {"research_total": costs["research"], "production_total": costs["production"],
                           "audio_total": costs["audio"], "batch_total": costs["total"],
                           "per_episode_average": round(costs["total"] / done, 6) if done else 0.0},
        "issues_log": issues,
        "checkpoints": session["checkpoints"],
    }}
