"""What every speech provider shares: text cut to a request's size, and a timeline that joins audio and
measures where each turn lies in it (voices: providers/voices.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podspool.stages import fsio, pcm
from podspool.stages.base import SpeechOutput, StageError, Turn, TurnSpan, Usage
from podspool.stages.script.format import spoken

SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
TAKE_NAME = "speech.pcm"  # the take's work file in the episode folder, under an fsio temp name
SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[.,;:!?…])")  # "there [1]." loses its marker, then the space

__all__ = ["Piece", "Timeline", "pieces_of", "speakable", "split_text"]


def speakable(text: str) -> str:
    """What a voice should read: the listener's text (`spoken`), without a space left before punctuation."""
    return SPACE_BEFORE_PUNCT.sub("", spoken(text))


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut between sentences, else between words."""
    parts = (part for sentence in SENTENCE_END.split(text.strip()) for part in _cut_long(sentence, limit))
    return _pack(parts, limit)


def _cut_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    # a "word" longer than a request is cut hard
    return _pack((word[i:i + limit] for word in sentence.split() for i in range(0, len(word), limit)), limit)


def _pack(parts: Iterable[str], limit: int) -> list[str]:
    """Join parts with spaces into as few pieces of at most `limit` characters as order allows."""
    out: list[str] = []
    current = ""
    for part in parts:
        if current and len(current) + 1 + len(part) > limit:
            out.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    if current:
        out.append(current)
    return out


@dataclass(frozen=True)
class Piece:
    """Part of one turn small enough for one request; `first` is False for a turn's continuation."""

    turn: int
    host: str
    text: str
    first: bool


def pieces_of(turns: Sequence[Turn], limit: int, api: str) -> list[Piece]:
    """Every turn's speakable text, cut at sentences into pieces of at most `limit` characters."""
    out = [Piece(i, t.host, text, j == 0)
           for i, t in enumerate(turns) for j, text in enumerate(split_text(speakable(t.text), limit)) if text]
    if not out:
        raise StageError(f"{api}: the script has no spoken lines", retryable=False)
    return out


class Timeline:
    """Audio joined in order, with a pause between turns, and each turn's span measured in it.

    Spans come from the lengths of the audio each turn produced, or from times the API reported
    within one clip; a turn spread over several clips spans from its first start to its last end.
    Every clip is brought to the timeline's rate as it arrives (a clip at another rate is resampled on
    its own), and with a `folder` the audio goes to a work file there instead of memory: an hour of
    speech never sits in a worker (pcm.TakeWriter).
    """

    def __init__(self, sample_rate: int, pause_ms: int, folder: Path | None = None) -> None:
        self.sample_rate = sample_rate
        self._gap = b"\x00\x00" * (sample_rate * pause_ms // 1000)
        self._out = pcm.TakeWriter(sample_rate, fsio.temp_name_for(folder / TAKE_NAME) if folder else None)
        self._spans: dict[int, tuple[float, float]] = {}

    @property
    def seconds(self) -> float:
        return self._out.n_bytes / 2 / self.sample_rate

    def pause(self) -> None:
        """The silence between two turns (none before the first)."""
        if self._out.n_bytes:
            self._out.write(self._gap)

    def append(self, audio: bytes, turn: int | None = None,
               times: Mapping[int, tuple[float, float]] | None = None, rate: int | None = None) -> None:
        """Add a clip (at `rate`, default the timeline's): all of it is `turn`, or `times` maps
        turn -> (start, end) in seconds within the clip."""
        if rate is not None and rate != self.sample_rate:
            audio = pcm.resample(audio, rate, self.sample_rate)  # seconds, and so the times, stay true
        offset = self.seconds
        length = len(audio) / 2 / self.sample_rate
        self._out.write(audio)
        marks = {turn: (0.0, length)} if turn is not None else dict(times or {})
        for t, (start, end) in marks.items():
            start, end = offset + max(0.0, min(start, length)), offset + max(0.0, min(end, length))
            if t in self._spans:
                start, end = min(start, self._spans[t][0]), max(end, self._spans[t][1])
            self._spans[t] = (start, max(start, end))

    def pcm(self) -> bytes:
        """The audio in memory (a timeline without a folder)."""
        return self._out.take().data

    def spans(self) -> list[TurnSpan]:
        return [TurnSpan(turn=t, start=round(s, 4), end=round(e, 4)) for t, (s, e) in sorted(self._spans.items())]

    def output(self, usage: list[Usage]) -> SpeechOutput:
        """The finished take as a provider returns it: in memory, or as its file (the audio stage's to remove)."""
        take = self._out.take()
        self._out.close()
        return SpeechOutput(pcm=take.data, sample_rate=self.sample_rate, usage=usage, spans=self.spans(),
                            path=take.path)

    def discard(self) -> None:
        """Remove the work file of a take that will not be finished (a failed attempt)."""
        self._out.discard()
