"""Chapters from the script's "## " sections, timed by the first turn spoken in each.

Written as Podcasting 2.0 JSON chapters (version 1.2.0) and, by tags.py, as ID3 CHAP/CTOC frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podspool.stages.base import TurnSpan
from podspool.stages.publish.public import public_text
from podspool.stages.script.format import parse_turns, sections

JSON_CHAPTERS_VERSION = "1.2.0"


@dataclass(frozen=True)
class Chapter:
    title: str
    start: float  # seconds
    end: float
    first_turn: int


def chapters(script: str, spans: list[TurnSpan], seconds: float, episode_title: str) -> list[Chapter]:
    """One chapter per section that has spoken turns; turns before the first heading open the episode."""
    starts: list[tuple[str, int]] = []
    turn = 0
    for section in sections(script):
        if section.is_sources:
            continue
        n = len(parse_turns("\n".join(section.lines)))  # the same parser the audio stage speaks from
        if n and turn < len(spans):
            starts.append((section.heading or episode_title, turn))
        turn += n
    out: list[Chapter] = []
    for i, (title, first) in enumerate(starts):
        start = 0.0 if i == 0 else spans[first].start  # the first chapter opens the episode
        end = spans[starts[i + 1][1]].start if i + 1 < len(starts) else seconds
        out.append(Chapter(title=title, start=round(start, 3), end=round(max(start, end), 3), first_turn=first))
    return out


def json_chapters(items: list[Chapter]) -> dict[str, Any]:
    return {"version": JSON_CHAPTERS_VERSION,
            "chapters": [{"startTime": c.start, "endTime": c.end, "title": public_text(c.title)}
                         for c in items]}


def clock(seconds: float) -> str:
    """H:MM:SS or M:SS, as show notes and itunes:duration write a time."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
