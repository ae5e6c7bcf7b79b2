"""The transcript as WebVTT: one cue per turn, voiced with the speaker's name, timed from the audio."""

from __future__ import annotations

from podspool.stages.base import Turn, TurnSpan
from podspool.stages.publish.public import public_text


def timestamp(seconds: float) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _escape(text: str) -> str:
    # WebVTT cue text is markup: & and < must be escaped, and "-->" may not appear at all
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt(turns: list[Turn], spans: list[TurnSpan]) -> str:
    lines = ["WEBVTT", ""]
    for turn, span in zip(turns, spans, strict=True):
        end = max(span.end, span.start + 0.001)
        speaker = _escape(turn.host)
        lines += [str(span.turn + 1), f"{timestamp(span.start)} --> {timestamp(end)}",
                  f"<v {speaker}>{_escape(public_text(turn.text))}", ""]
    return "\n".join(lines)
