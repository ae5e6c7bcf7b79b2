"""`batches/<batch_id>/timeline.svg`: every episode of a batch across its stages, drawn when it ends.

One row per episode; a solid bar per stage run, and a pale bar before it for the time the episode
sat in that stage's queue, so an operator sees at a glance where the pipeline waited. Self-contained
SVG (no script, no external font or stylesheet), written whole. Only the last attempt of a phase
has timings in the manifest, so an earlier failed attempt shows up as queue wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from podspool.daemon.core.batch_views import parse_time
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.observers.hooks import Hook
from podspool.stages import fsio
from podspool.stages.base import STAGE_NAMES

COLORS = {"research": "#4e79a7", "production": "#f28e2b", "audio": "#59a14f"}
WAIT_COLOR = "#d9d9d9"
FAILED_COLOR = "#e15759"
LABEL_W, PLOT_W, ROW_H, TOP, BOTTOM = 230, 820, 18, 64, 40
PREV = {"production": "research", "audio": "production"}


def _bars(m: EpisodeManifest) -> list[tuple[str, str, float, float]]:
    """(kind, stage, start, end) in unix seconds: kind is "wait", "run" or "failed"."""
    out: list[tuple[str, str, float, float]] = []
    ends: dict[str, float | None] = {}  # a phase's end is the next one's ready time: parsed once
    for stage in STAGE_NAMES:
        t = m.timings.get(stage)
        start = parse_time(t.started) if t else None
        if t is None or start is None:
            continue
        prev = m.timings.get(PREV[stage]) if stage in PREV else None
        if prev is None:
            ready = parse_time(m.created_at)
        else:
            ready = ends[PREV[stage]] if PREV[stage] in ends else parse_time(prev.finished)
        if ready is not None and start > ready:
            out.append(("wait", stage, ready, start))
        end = ends[stage] = parse_time(t.finished)
        if end is not None:
            out.append(("run", stage, start, end))
        elif m.phases.get(stage) == "failed":
            end = parse_time(m.finished_at) or start
            out.append(("failed", stage, start, max(end, start)))
    return out


def _tick_step(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200):
        if span / step <= 10:
            return float(step)
    return 86400.0


def _fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


@dataclass(frozen=True)
class _Row:
    number: int
    topic: str
    episode_id: str
    failed: bool


def svg_lines(batch_id: str, episodes: Iterable[EpisodeManifest]) -> Iterator[str]:
    """The timeline's lines, made as they are written. One pass over `episodes`, kept as small rows: a
    10,000-episode batch need not be held whole, nor its SVG (60,000 bars)."""
    bars: dict[str, list[tuple[str, str, float, float]]] = {}
    eps: list[_Row] = []
    for m in episodes:
        bars[m.session_id] = _bars(m)
        eps.append(_Row(m.episode_number, m.topic, m.session_id, m.status == "failed"))
    eps.sort(key=lambda r: r.number)
    times = [t for bs in bars.values() for _, _, a, b in bs for t in (a, b)]
    t0 = min(times) if times else 0.0
    span = max(1e-3, (max(times) - t0) if times else 1.0)
    height = TOP + ROW_H * max(1, len(eps)) + BOTTOM
    width = LABEL_W + PLOT_W + 20

    def x(t: float) -> float:
        return LABEL_W + (t - t0) / span * PLOT_W

    waits: dict[str, float] = {s: 0.0 for s in STAGE_NAMES}
    runs: dict[str, float] = {s: 0.0 for s in STAGE_NAMES}
    for bs in bars.values():
        for kind, stage, a, b in bs:
            (waits if kind == "wait" else runs)[stage] += b - a
    yield (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">')
    yield f"<title>{escape(f'podspool timeline of batch {batch_id}')}</title>"
    yield f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
    yield (f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(f"Batch {batch_id}")}: '
           f"{len(eps)} episodes over {escape(_fmt(round(span, 1)))}</text>")
    summary = "   ".join(f"{s}: run {runs[s]:.1f}s, queued {waits[s]:.1f}s" for s in STAGE_NAMES)
    yield f'<text x="10" y="36">{escape(summary)}</text>'
    lx = 10
    for name, color in [*COLORS.items(), ("queue wait", WAIT_COLOR), ("failed", FAILED_COLOR)]:
        yield (f'<rect x="{lx}" y="44" width="10" height="10" fill="{color}"/>'
               f'<text x="{lx + 14}" y="53">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    step = _tick_step(span)
    k = 0
    while k * step <= span + 1e-9:
        tx = x(t0 + k * step)
        yield (f'<line x1="{tx:.1f}" y1="{TOP - 4}" x2="{tx:.1f}" y2="{height - BOTTOM + 4}" stroke="#eeeeee"/>'
               f'<text x="{tx:.1f}" y="{height - BOTTOM + 18}" text-anchor="middle" fill="#555">'
               f"{escape(_fmt(round(k * step, 1)))}</text>")
        k += 1
    # the rows are most of the file: its episode id escaped once per row (the rest of a tooltip is a
    # stage, a kind and a number: nothing to escape)
    bar_tail = f'" height="{ROW_H - 6}" fill="'
    for i, row in enumerate(eps):
        y = TOP + i * ROW_H
        failed = row.failed
        label = f"{row.number:03d} {row.topic}"[:38]
        yield f'<text x="10" y="{y + 13}" fill="{FAILED_COLOR if failed else "#222"}">{escape(label)}</text>'
        head = f'" y="{y + 3}" width="'
        eid = escape(row.episode_id)
        for kind, stage, a, b in bars[row.episode_id]:
            color = WAIT_COLOR if kind == "wait" else FAILED_COLOR if kind == "failed" else COLORS[stage]
            xa = x(a)
            w = max(1.0, x(b) - xa)
            yield (f'<rect x="{xa:.1f}{head}{w:.1f}{bar_tail}{color}"><title>{eid} {stage} '
                   f"{'queued' if kind == 'wait' else kind} {b - a:.2f}s</title></rect>")
    yield "</svg>"


class TimelineHook(Hook):
    def __init__(self, batches_dir: Path) -> None:
        self.batches_dir = Path(batches_dir)

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        bid = session["batch_id"]
        fsio.write_lines(self.batches_dir / bid / "timeline.svg", svg_lines(bid, episodes))


__all__ = ["TimelineHook", "svg_lines"]
