"""The episode script's markdown conventions, parsed in one place for the gates and the audio stage.

Every writer (local, OpenAI-compatible, sim) produces the same shape; `SCRIPT_RULES` states it in
words a language model can follow, so a prompt and the gates cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from podspool.stages.base import Turn

SCRIPT_RULES = """\
Format the script as markdown:
- First line: "# <episode title>".
- Sections with "## " headings: "## Intro", then one "## Segment N: <label>" per point, "## Outro",
  and last "## Sources".
- Every spoken line is one paragraph of the form "**Host:** text", using only the given host names.
- Each segment cites the finding it discusses with its number in square brackets, e.g. [1] or [2, 3].
- "## Sources" is a numbered list ("1. <source path or URL> (<location>)"), one entry per finding.
- No placeholders, TODOs, template braces or angle brackets; do not repeat a paragraph."""

NON_SEGMENT_HEADINGS = ("intro", "introduction", "opening", "outro", "conclusion", "closing", "wrap",
                        "sources", "references", "citations", "show notes")
SOURCES_HEADINGS = ("sources", "references", "citations")

TURN_RE = re.compile(r"^\s*\*\*(?P<host>[^*\n]{1,60}?):\*\*\s*(?P<text>.+?)\s*$")
HEADING_RE = re.compile(r"^\s{0,3}(?P<hashes>#{1,6})\s+(?P<text>.+?)\s*$")
CITATION_RE = re.compile(r"\[(\d{1,3}(?:\s*[,;–-]\s*\d{1,3})*)\]")
SOURCE_ITEM_RE = re.compile(r"^\s*(\d{1,3})[.)]\s+\S")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)")


@dataclass
class Section:
    heading: str  # "" for text before the first "## " heading
    lines: list[str] = field(default_factory=list)

    @property
    def is_segment(self) -> bool:
        h = self.heading.lower()
        return bool(h) and not any(h.startswith(x) for x in NON_SEGMENT_HEADINGS)

    @property
    def is_sources(self) -> bool:
        return self.heading.lower().startswith(SOURCES_HEADINGS)


def sections(script: str) -> list[Section]:
    """Split on level-2 headings; the title line and anything before the first "## " form section ""."""
    out = [Section("")]
    for line in script.splitlines():
        m = HEADING_RE.match(line)
        if m and len(m["hashes"]) == 2:
            out.append(Section(m["text"].strip()))
        else:
            out[-1].lines.append(line)
    return out


def cited_numbers(text: str) -> set[int]:
    """Numbers cited as [1], [1, 2] or [2-4]."""
    found: set[int] = set()
    for m in CITATION_RE.finditer(text):
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            bounds = [int(x) for x in re.split(r"\s*[–-]\s*", part) if x]
            if len(bounds) == 2 and 0 < bounds[1] - bounds[0] < 100:
                found.update(range(bounds[0], bounds[1] + 1))
            else:
                found.update(bounds)
    return found


def source_numbers(script: str) -> set[int]:
    return {int(m.group(1)) for s in sections(script) if s.is_sources for line in s.lines
            if (m := SOURCE_ITEM_RE.match(line))}


def spoken(text: str) -> str:
    """What a listener hears of a turn: citations and markdown emphasis removed."""
    return " ".join(_EMPHASIS.sub("", CITATION_RE.sub("", text)).split())


def parse_turns(script: str) -> list[Turn]:
    """Every `**Host:** text` line, in order, as speakable text (the Sources list is never spoken)."""
    turns: list[Turn] = []
    for section in sections(script):
        if section.is_sources:
            continue
        for line in section.lines:
            m = TURN_RE.match(line)
            if m and (text := spoken(m["text"])):
                turns.append(Turn(m["host"].strip(), text))
    return turns
