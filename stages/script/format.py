"""The episode script's shape, owned in one place: the prompt's rules, the gates and the audio stage read it here.

script.md is `# Title`, then `## ` sections of `**Host:** text` turns that cite findings as `[n]`, then a
numbered `## Sources` list that podspool writes from research.json (never the model), numbered as the
research is. `script_rules` states the same shape in words a language model can follow, built from the
same constants the gates use, so the prompt and the gates cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from podspool.stages.base import Finding, Turn

INTRO_HEADING = "Intro"
OUTRO_HEADING = "Outro"
SEGMENT_HEADING = "Segment"  # "## Segment 2: <label>"
SOURCES_HEADING = "Sources"
COVERAGE_TOP = 5  # how many of the best findings a script should carry (the prompt names them)
COVERAGE_MIN = 0.6  # the share of those a script must discuss for full marks

NON_SEGMENT_HEADINGS = ("intro", "introduction", "opening", "outro", "conclusion", "closing", "wrap",
                        "sources", "references", "citations", "show notes")
SOURCES_HEADINGS = ("sources", "references", "citations", "bibliography")

# the text runs to the end of the line: spoken() drops trailing spaces (a lazy `.+?\s*$` costs a step a char)
TURN_RE = re.compile(r"^\s*\*\*(?P<host>[^*\n]{1,60}?):\*\*\s*(?P<text>.+)")
HEADING_RE = re.compile(r"^\s{0,3}(?P<hashes>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
CITATION_RE = re.compile(r"\[(\d{1,3}(?:\s*[,;–-]\s*\d{1,3})*)\]")
SOURCE_ITEM_RE = re.compile(r"^\s*(\d{1,3})[.)]\s+\S")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)")
_LIST_SEPARATOR = re.compile(r"\s*[,;]\s*")  # [1, 2]
_RANGE_DASH = re.compile(r"\s*[–-]\s*")  # [2-4]
_UNSAFE_IN_LIST = re.compile(r"[\[\]<>{}*_`]")


def turn_line(host: str, text: str) -> str:
    return f"**{host}:** {text}"


def segment_heading(number: int, label: str) -> str:
    return f"## {SEGMENT_HEADING} {number}: {label}"


def top_findings(findings: Sequence[Finding]) -> list[int]:
    """The research numbers of the findings a script must carry: the COVERAGE_TOP best, best first."""
    ranked = sorted(enumerate(findings, 1), key=lambda item: -item[1].score)
    return [n for n, _ in ranked[:COVERAGE_TOP]]


def coverage_needed(n_top: int) -> int:
    """How many of the top findings earn full marks for coverage."""
    return math.ceil(COVERAGE_MIN * n_top - 1e-9)


def script_rules(hosts: Sequence[str], min_words: int, max_words: int, findings: Sequence[Finding]) -> str:
    """The script's shape as instructions; every rule here is one the gates check (tests hold them together)."""
    a, b = hosts[0], hosts[1]
    n_findings = len(findings)
    top = top_findings(findings)
    cite = (f"Cite every fact with its finding's number in square brackets right after it, like [1] or "
            f"[1, 2]. Use only the numbers 1 to {n_findings} of the research below; never invent a number."
            if n_findings else "There is no research to cite: say so briefly and do not invent facts.")
    rules = [
        "The first line is the episode title as a markdown heading: `# <title>`.",
        f"Then these sections, each opened by its heading line: `## {INTRO_HEADING}`, one "
        f"`## {SEGMENT_HEADING} N: <short label>` per main finding (N = 1, 2, 3, ...), and `## {OUTRO_HEADING}`.",
        f"Every spoken line has exactly the form `{turn_line(a, 'text')}` or `{turn_line(b, 'text')}`: one turn "
        "per line, a blank line between turns, and the two hosts take turns.",
        f"Between {min_words} and {max_words} spoken words in total.",
        "Take facts only from the research below. " + cite,
        f"Every `## {SEGMENT_HEADING}` section cites at least one finding. The findings that matter most "
        f"are {_numbers(top)}: discuss at least {coverage_needed(len(top))} of them, citing each.",
        f"Do not write a sources list: podspool adds `## {SOURCES_HEADING}` from the research itself.",
        "No stage directions or sound cues, no placeholders, TODOs, template braces or angle brackets, "
        "and no square brackets except citations.",
        "Say each thing once: never repeat a line.",
        "Plain spoken English: short sentences and everyday words, as two people talk.",
    ]
    return "\n".join(f"- {r}" for r in rules)


def _numbers(ns: Sequence[int]) -> str:
    return ", ".join(map(str, ns[:-1])) + f" and {ns[-1]}" if len(ns) > 1 else "".join(map(str, ns))


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
        m = HEADING_RE.match(line) if "#" in line else None  # most lines are turns: skip the regex
        if m and len(m["hashes"]) == 2:
            out.append(Section(m["text"].strip()))
        else:
            out[-1].lines.append(line)
    return out


def body(script: str) -> str:
    """The script without its Sources list: what the model wrote (after normalising), what is spoken."""
    return _body(sections(script))


def _body(secs: list[Section]) -> str:
    return "\n".join(line for s in secs if not s.is_sources
                     for line in ([f"## {s.heading}"] if s.heading else []) + s.lines)


def cited_numbers(text: str) -> set[int]:
    """Numbers cited as [1], [1, 2] or [2-4]."""
    found: set[int] = set()
    for m in CITATION_RE.finditer(text):
        for part in _LIST_SEPARATOR.split(m.group(1)):
            bounds = [int(x) for x in _RANGE_DASH.split(part) if x]
            if len(bounds) == 2 and 0 < bounds[1] - bounds[0] < 100:
                found.update(range(bounds[0], bounds[1] + 1))
            else:
                found.update(bounds)
    return found


def source_numbers(script: str) -> set[int]:
    return {int(m.group(1)) for s in sections(script) if s.is_sources for line in s.lines
            if (m := SOURCE_ITEM_RE.match(line))}


def _list_safe(text: str) -> str:
    return " ".join(_UNSAFE_IN_LIST.sub("", text).split())


def source_entry(number: int, finding: Finding) -> str:
    """`3. <title>: <path or URL> (<location>)`, the one format of a Sources item."""
    title = _list_safe(finding.title or "")
    where = f" ({_list_safe(finding.location)})" if finding.location else ""
    return f"{number}. {title + ': ' if title else ''}{finding.source.strip()}{where}"


def sources_section(findings: Sequence[Finding]) -> str:
    """The `## Sources` list, numbered as the research is (the prompt numbers findings the same way)."""
    items = [source_entry(i, f) for i, f in enumerate(findings, 1)] or ["(no sources were found)"]
    return "\n".join([f"## {SOURCES_HEADING}", "", *items]) + "\n"


def with_sources(script_body: str, findings: Sequence[Finding]) -> str:
    """A normalised body plus podspool's own Sources list: the whole of script.md."""
    return script_body.rstrip() + "\n\n" + sources_section(findings)


_SPOKEN_CITATION = re.compile(r"\s*" + CITATION_RE.pattern)  # with the space before it: "fact [1]." -> "fact."


def spoken(text: str) -> str:
    """What a listener hears of a turn: citations and markdown emphasis removed."""
    return " ".join(_EMPHASIS.sub("", _SPOKEN_CITATION.sub("", text)).split())


def parse_turns(script: str) -> list[Turn]:
    """Every `**Host:** text` line, in order, as speakable text (the Sources list is never spoken)."""
    return _turns(sections(script))


def _turns(secs: list[Section]) -> list[Turn]:
    turns: list[Turn] = []
    for section in secs:
        if section.is_sources:
            continue
        for line in section.lines:
            m = TURN_RE.match(line)
            if m and (text := spoken(m["text"])):
                turns.append(Turn(m["host"].strip(), text))
    return turns


@dataclass(frozen=True)
class ParsedScript:
    """A script split once into the parts its readers use (the quality gates read each part several times)."""

    sections: list[Section]
    body: str  # without the Sources list
    turns: list[Turn]
    cited: set[int]  # the numbers the body cites


def parse(script: str) -> ParsedScript:
    secs = sections(script)
    text = _body(secs)
    return ParsedScript(sections=secs, body=text, turns=_turns(secs), cited=cited_numbers(text))
