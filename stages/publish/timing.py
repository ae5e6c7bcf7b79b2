"""Where each turn lies in the episode's audio: measured by the provider, else found, else estimated.

Chapters and the transcript are timed from these spans. A provider that synthesises turn by turn knows
them exactly (SpeechOutput.spans). When it gives none, the pauses the provider put between turns are
looked for in the audio (each at least `pause_ms` of near silence); only when their number does not
match the turns are the spans shared out in proportion to each turn's words, and marked "estimated".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from podspool.stages.base import Turn, TurnSpan
from podspool.stages.words import words

Method = Literal["measured", "detected", "estimated"]
QUIET = 64  # about -54 dBFS in 16-bit samples: a pause, not speech


def quiet_runs(samples: np.ndarray, rate: int, min_s: float) -> list[tuple[int, int]]:
    """(start, end) sample indices of every run of near silence at least `min_s` long."""
    quiet = np.abs(samples.astype(np.int32)) <= QUIET
    edges = np.diff(np.concatenate(([0], quiet.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = (ends - starts) >= int(min_s * rate)
    return list(zip(starts[keep].tolist(), ends[keep].tolist(), strict=True))


def detect(samples: np.ndarray, rate: int, n_turns: int, pause_ms: int) -> list[TurnSpan] | None:
    """Spans bounded by the pauses between turns, or None when the pauses do not match the turns."""
    if n_turns < 1 or samples.size == 0 or pause_ms <= 0:
        return None
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > QUIET)
    if loud.size == 0:
        return None
    first, last = int(loud[0]), int(loud[-1]) + 1
    # a resampled pause loses a sample or two at each edge; sentence pauses inside a turn are shorter
    gaps = [(a, b) for a, b in quiet_runs(samples, rate, pause_ms / 1000 - 0.003) if a > first and b < last]
    if len(gaps) != n_turns - 1:
        return None
    bounds = [first, *(x for gap in gaps for x in gap), last]
    return [TurnSpan(i, bounds[2 * i] / rate, bounds[2 * i + 1] / rate) for i in range(n_turns)]


def estimate(turns: list[Turn], seconds: float, pause_s: float) -> list[TurnSpan]:
    """Spans in proportion to each turn's words, with the pauses between them."""
    n = len(turns)
    speech = max(0.0, seconds - pause_s * max(0, n - 1))
    counts = [max(1, len(words(t.text))) for t in turns]
    total = sum(counts)
    spans, at = [], 0.0
    for i, c in enumerate(counts):
        length = speech * c / total
        spans.append(TurnSpan(i, at, min(seconds, at + length)))
        at += length + pause_s
    return spans


def turn_spans(turns: list[Turn], given: list[TurnSpan], samples: np.ndarray, rate: int,
               pause_ms: int) -> tuple[list[TurnSpan], Method]:
    seconds = samples.size / rate if rate else 0.0
    if given and [s.turn for s in given] == list(range(len(turns))):  # one per turn, in order: usable as is
        return [TurnSpan(s.turn, min(s.start, seconds), min(max(s.start, s.end), seconds)) for s in given], "measured"
    found = detect(samples, rate, len(turns), pause_ms)
    if found is not None:
        return found, "detected"
    return estimate(turns, seconds, pause_ms / 1000), "estimated"
