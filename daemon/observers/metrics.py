"""`<spool>/metrics.prom`: Prometheus text format for node_exporter's textfile collector.

Everything is recomputed from `snapshot()` (the spool's episodes and the supervisor's live state),
so the file can never drift from the folders. Written whole every few seconds and at close.
Every HTTP attempt (retries inside one call and failed attempts included) is counted by outcome in
podspool_api_calls_total, from the counts each stage run reports; it restarts from zero with the
daemon, as Prometheus counters do.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from podspool.daemon.core.batch_views import parse_time
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.observers.hooks import Hook
from podspool.daemon.observers.usage_tally import UsageTally
from podspool.daemon.spool import LOCATIONS
from podspool.stages import fsio
from podspool.stages.base import STAGE_NAMES, StageName, Usage

METRICS_FILE = "metrics.prom"
WRITE_EVERY_S = 5.0
BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RATE_LIMITED = re.compile(r"\b429\b|rate.?limit|too many requests", re.I)
PREV = {"production": "research", "audio": "production"}


# per-stage gauges straight from snapshot()["stages"]: (metric, key, help)
STAGE_GAUGES = (
    ("podspool_stage_queue", "queue", "episodes waiting in a stage folder, not running"),
    ("podspool_stage_busy_workers", "busy", "worker processes running an episode"),
    ("podspool_stage_processes", "processes", "live worker processes"),
    ("podspool_stage_pool_size", "pool_size", "configured worker processes"),
)


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _num(v: float | int) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float | int, **labels: object) -> None:
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    def histogram(self, name: str, help_: str, series: Mapping[Any, Histo], label: str) -> None:
        self.family(name, "histogram", help_)
        for key, h in series.items():
            for b, n in zip(BUCKETS, h.buckets, strict=True):
                self.sample(f"{name}_bucket", n, **{label: key, "le": _num(float(b))})
            self.sample(f"{name}_bucket", h.count, **{label: key, "le": "+Inf"})
            self.sample(f"{name}_sum", round(h.total, 3), **{label: key})
            self.sample(f"{name}_count", h.count, **{label: key})


class Histo:
    """Bucket counts, not the values: a histogram's memory does not grow with the daemon's history."""

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.total = 0.0

    def add(self, v: float) -> None:
        for i, b in enumerate(BUCKETS):
            if v <= b:
                self.buckets[i] += 1
        self.count += 1
        self.total += v

    def merged(self, other: Histo) -> Histo:
        h = Histo()
        h.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        h.count, h.total = self.count + other.count, self.total + other.total
        return h


class Totals:
    """What the metrics need of a set of episodes, folded once (closed batches) or recomputed (open ones)."""

    def __init__(self) -> None:
        self.run = {s: Histo() for s in STAGE_NAMES}
        self.wait = {s: Histo() for s in STAGE_NAMES}
        self.spend = dict.fromkeys(STAGE_NAMES, 0.0)
        self.errors = dict.fromkeys(STAGE_NAMES, 0)
        self.limited = dict.fromkeys(STAGE_NAMES, 0)
        self.requests: dict[str, int] = {}
        self.batches_complete = 0

    def fold(self, episodes: Iterable[EpisodeManifest]) -> Totals:
        for m in episodes:
            run, wait = stage_seconds([m])
            for s in STAGE_NAMES:
                for v in run[s]:
                    self.run[s].add(v)
                for v in wait[s]:
                    self.wait[s].add(v)
                self.spend[s] += getattr(m.costs, s)
            for e in m.errors:
                self.errors[e.phase] = self.errors.get(e.phase, 0) + 1
                if RATE_LIMITED.search(e.error):
                    self.limited[e.phase] = self.limited.get(e.phase, 0) + 1
        return self

    def plus(self, other: Totals) -> Totals:
        t = Totals()
        for s in STAGE_NAMES:
            t.run[s], t.wait[s] = self.run[s].merged(other.run[s]), self.wait[s].merged(other.wait[s])
            t.spend[s] = self.spend[s] + other.spend[s]
            t.errors[s] = self.errors[s] + other.errors[s]
            t.limited[s] = self.limited[s] + other.limited[s]
        t.batches_complete = self.batches_complete + other.batches_complete
        for src in (self.requests, other.requests):
            for api, n in src.items():
                t.requests[api] = t.requests.get(api, 0) + n
        return t


def stage_seconds(episodes: Iterable[EpisodeManifest]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(run seconds, queue wait seconds) per stage, from each manifest's timings."""
    run: dict[str, list[float]] = {s: [] for s in STAGE_NAMES}
    wait: dict[str, list[float]] = {s: [] for s in STAGE_NAMES}
    for m in episodes:
        for stage in STAGE_NAMES:
            t = m.timings.get(stage)
            if t is None:
                continue
            if t.seconds is not None and m.phases.get(stage) == "done":
                run[stage].append(float(t.seconds))
            start = parse_time(t.started)
            prev = m.timings.get(PREV[stage]) if stage in PREV else None
            ready = parse_time(prev.finished) if prev is not None else parse_time(m.created_at)
            if start is not None and ready is not None and m.attempts <= 1:
                wait[stage].append(max(0.0, start - ready))  # retries wait on purpose: not queueing
    return run, wait


def render_metrics(snap: dict[str, Any], totals: Totals, rates: dict[str, dict[str, Any]],
                   *, up: bool = True) -> str:
    """`totals`: the episodes of closed batches (folded once) plus those in `snap` (recomputed)."""
    o = _Out()
    o.family("podspool_up", "gauge", "1 while the daemon runs, 0 once it stopped")
    o.sample("podspool_up", 1 if up else 0)
    o.family("podspool_episodes", "gauge", "episodes by the folder they sit in")
    for loc in LOCATIONS:
        o.sample("podspool_episodes", snap["locations"].get(loc, 0), location=loc)
    for name, key, help_ in STAGE_GAUGES:
        o.family(name, "gauge", help_)
        for stage, st in snap["stages"].items():
            o.sample(name, st[key], stage=stage)
    o.family("podspool_admitted_sessions", "gauge", "episodes in flight (admitted), all stages")
    o.sample("podspool_admitted_sessions", snap["admitted"])
    o.family("podspool_max_sessions_in_memory", "gauge", "admission limit")
    o.sample("podspool_max_sessions_in_memory", snap["max_sessions_in_memory"])
    mem = snap["memory"]
    o.family("podspool_memory_rss_bytes", "gauge", "RSS of the supervisor and its workers")
    o.sample("podspool_memory_rss_bytes", mem["rss_bytes"])
    o.family("podspool_memory_soft_limit_bytes", "gauge", "total RSS above which admission pauses")
    o.sample("podspool_memory_soft_limit_bytes", mem["soft_mb"] * 2**20)
    o.family("podspool_memory_hard_limit_bytes", "gauge", "one worker's RSS above which it is recycled")
    o.sample("podspool_memory_hard_limit_bytes", mem["hard_mb"] * 2**20)
    o.family("podspool_admission_paused", "gauge", "1 while admission is paused for memory")
    o.sample("podspool_admission_paused", 1 if mem["paused"] else 0, reason="memory")

    o.histogram("podspool_stage_duration_seconds", "successful run time of a stage", totals.run, "stage")
    o.histogram("podspool_stage_wait_seconds", "queue wait before a stage started (first attempts)", totals.wait,
                "stage")
    spend, errors, limited, requests = totals.spend, totals.errors, totals.limited, totals.requests
    o.family("podspool_spend_usd", "gauge", "USD spent by the episodes in the spool, failed attempts included")
    for s in STAGE_NAMES:
        o.sample("podspool_spend_usd", round(spend[s], 6), stage=s)
    o.family("podspool_stage_errors", "gauge", "failed episode-level attempts, by stage")
    for s in STAGE_NAMES:
        o.sample("podspool_stage_errors", errors[s], stage=s)
    o.family("podspool_stage_rate_limited_errors", "gauge", "failed attempts whose error names a 429 / rate limit")
    for s in STAGE_NAMES:
        o.sample("podspool_stage_rate_limited_errors", limited[s], stage=s)
    o.family("podspool_api_requests", "gauge", "API requests of finished phases, from their artifacts' usage")
    for api, n in sorted(requests.items()):
        o.sample("podspool_api_requests", n, api=api)
    o.family("podspool_api_calls_total", "counter",
             "HTTP attempts since the daemon started, retries inside a call included, by outcome "
             "(requests, errors, 429)")
    for key, n in sorted((snap.get("api_calls") or {}).items()):
        api, _, outcome = key.partition(":")
        o.sample("podspool_api_calls_total", n, api=api, outcome=outcome)

    o.family("podspool_rate_limit_limit", "gauge", "requests allowed per window")
    for api, r in rates.items():
        o.sample("podspool_rate_limit_limit", r["limit"], api=api)
    o.family("podspool_rate_limit_window_seconds", "gauge", "length of the rate-limit window")
    for api, r in rates.items():
        o.sample("podspool_rate_limit_window_seconds", r["window_s"], api=api)
    o.family("podspool_rate_limit_used", "gauge", "requests started in the current window, all processes")
    for api, r in rates.items():
        o.sample("podspool_rate_limit_used", r["used"], api=api)

    o.family("podspool_batches", "gauge", "batches by state")
    states: dict[str, int] = {"running": 0, "held": 0, "complete": totals.batches_complete}
    for b in snap["batches"]:
        states[b["state"]] = states.get(b["state"], 0) + 1
    for state, n in states.items():
        o.sample("podspool_batches", n, state=state)
    # per-batch series only for batches still open, so finished batches do not grow the label set forever
    active = [b for b in snap["batches"] if b["state"] != "complete"]
    o.family("podspool_batch_episodes", "gauge", "episodes of an open batch by progress state")
    for b in active:
        for key in ("completed", "in_progress", "failed", "held"):
            o.sample("podspool_batch_episodes", b[key], batch=b["batch_id"], state=key)
        o.sample("podspool_batch_episodes", b["total"], batch=b["batch_id"], state="total")
    o.family("podspool_batch_spend_usd", "gauge", "USD spent by an open batch")
    for b in active:
        o.sample("podspool_batch_spend_usd", b["costs"]["total"], batch=b["batch_id"])
    o.family("podspool_metrics_timestamp_seconds", "gauge", "when this file was written")
    o.sample("podspool_metrics_timestamp_seconds", round(float(snap["time"]), 3))
    return "\n".join(o.lines) + "\n"


def locations_of(snap: dict[str, Any]) -> list[tuple[str, EpisodeManifest]]:
    where = snap["where"]
    return [(where[m.session_id], m) for m in snap["episodes"] if m.session_id in where]


class MetricsHook(Hook):
    def __init__(self, root: Path, every_s: float = WRITE_EVERY_S) -> None:
        self.root = Path(root)
        self.every_s = every_s
        self.tally = UsageTally(self.root)
        self.closed = Totals()  # the episodes that finished while this daemon ran
        self._last = 0.0
        self._snapshot: Callable[[], dict[str, Any]] | None = None

    def write(self, snap: dict[str, Any], up: bool = True) -> None:
        live = Totals().fold(snap["episodes"])
        live.requests = self.tally.requests_by_api(locations_of(snap))
        totals = self.closed.plus(live)
        rates = snap["rate_headroom"]
        # fsio's temp name would end in ".prom" beside the target, and node_exporter globs *.prom (dot-files
        # included), so it could read half a file: write it whole under state/, then rename it in
        staged = self.root / "state" / (METRICS_FILE + ".next")
        fsio.write_text(staged, render_metrics(snap, totals, rates, up=up))
        os.replace(staged, self.root / METRICS_FILE)
        fsio.fsync_dir(self.root)

    def on_tick(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.write(snapshot())

    def _finished(self, location: str, m: EpisodeManifest) -> None:
        """A finished episode leaves the supervisor's memory: fold it in now, its artifacts read once."""
        self.closed.fold([m])
        for api, n in self.tally.take(location, m).items():
            self.closed.requests[api] = self.closed.requests.get(api, 0) + n

    def on_phase_done(self, manifest: EpisodeManifest, stage: StageName, usage: list[Usage]) -> None:
        self.tally.note(manifest.session_id, stage, usage)

    def on_episode_done(self, manifest: EpisodeManifest) -> None:
        self._finished("done", manifest)

    def on_episode_failed(self, manifest: EpisodeManifest) -> None:
        self._finished("failed", manifest)

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        self.closed.batches_complete += 1
        self._last = 0.0  # a finished batch is worth publishing now, not in 5 s

    def close(self) -> None:
        if self._snapshot is not None:
            self.write(self._snapshot(), up=False)
