"""The episode script's shape, owned in one place: the prompt's rules, the gates and the audio stage read it here.

script.md is `# Title`, then `## ` sections of `**Host:** text` turns that cite findings as `[n]`, then a
numbered `## Sources` list that podspool writes from research.json (never the model), numbered as the
research is. `script_rules` states the same shape in words a language model can follow, built from the
same constants the gates use, so the prompt and the gates cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from podspool.stages.base import Finding, Turn
from podspool.stages.script import language
from podspool.stages.show import Format, Show, default_cast

INTRO_HEADING = "Intro"
OUTRO_HEADING = "Outro"
SEGMENT_HEADING = "Segment"  # "## Segment 2: <label>"
SOURCES_HEADING = "Sources"
COVERAGE_TOP = 5  # how many of the best findings a script should carry (the prompt names them)
COVERAGE_MIN = 0.6  # the share of those a script must discuss for full marks

NON_SEGMENT_HEADINGS = ("intro", "introduction", "opening", "outro", "conclusion", "closing", "wrap",
                        "welcome", "headlines", "sign-off", "sign off",
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


@dataclass(frozen=True)
class Shape:
    """A format's section headings: they name the episode's chapters."""

    intro: str
    segment: str  # "## <segment> N: <label>"
    outro: str


SHAPES: dict[Format, Shape] = {
    "conversation": Shape(INTRO_HEADING, SEGMENT_HEADING, OUTRO_HEADING),
    "interview": Shape("Welcome", "Question", "Wrap-up"),
    "debate": Shape("Opening statements", "Round", "Closing statements"),
    "solo": Shape(INTRO_HEADING, "Part", OUTRO_HEADING),
    "brief": Shape("Headlines", "Story", "Sign-off"),
}
INTERVIEW_GUEST_SHARE = 0.5  # an interview's guests say at least half of the words
INTERVIEW_HOST_SHARE = 0.1  # ... and its host at least this much (questions are short, but asked)
DEBATE_SIDE_SHARE = 0.25  # each side of a debate has at least this share of all the words


def segment_heading(number: int, label: str, fmt: Format = "conversation") -> str:
    return f"## {SHAPES[fmt].segment} {number}: {label}"


@dataclass(frozen=True)
class Roles:
    """Who does what in one show: every speaker's part as its format gives it."""

    format: Format
    speakers: tuple[str, ...]
    hosts: tuple[str, ...] = ()  # interview: who asks
    guests: tuple[str, ...] = ()  # interview: who answers
    moderator: str | None = None  # debate
    sides: tuple[tuple[str, ...], ...] = ()  # debate: the two sides, each one or more speakers

    @property
    def balance_min(self) -> float:
        """conversation and brief: the quietest speaker's share of the words for full marks."""
        return 0.5 / max(1, len(self.speakers))


def as_show(cast: Show | Sequence[str]) -> Show:
    """A Show, from a show or from the two host names earlier callers pass."""
    return cast if isinstance(cast, Show) else Show(cast=default_cast(list(cast)))


def show_for(show: Show, hosts: Sequence[str]) -> Show:
    """`show` with `hosts` as its cast, where a caller names other speakers than the show's."""
    return show if show.names == list(hosts) else dataclasses.replace(show, cast=as_show(hosts).cast)


def roles(show: Show | Sequence[str]) -> Roles:
    """The parts of `show`'s cast in its format; the cast's roles decide where they are given.

    An interview's guests are the cast's guests, else everyone after the first speaker; a debate's
    moderator is the cast's moderator, else the first of an odd-sized cast; the other speakers form two
    sides, alternately.
    """
    show = as_show(show)
    names = tuple(show.names)
    by_role = {r: tuple(m.name for m in show.cast if m.role == r) for r in ("host", "guest", "moderator", "narrator")}
    if show.format == "interview" and len(names) > 1:
        guests = by_role["guest"] or names[1:]
        if len(guests) == len(names):  # a cast of guests only: the first of them asks
            guests = names[1:]
        hosts = tuple(n for n in names if n not in guests)
        return Roles(show.format, names, hosts=hosts, guests=guests)
    if show.format == "debate" and len(names) > 1:
        moderator = next(iter(by_role["moderator"]), names[0] if len(names) % 2 else None)
        debaters = tuple(n for n in names if n != moderator)
        return Roles(show.format, names, moderator=moderator, sides=(debaters[0::2], debaters[1::2]))
    return Roles(show.format, names, hosts=names)


def part_problems(show: Show) -> list[str]:
    """A cast whose roles leave a format's part empty: a debate's moderator with one debater."""
    r = roles(show)
    if r.format == "debate" and r.sides and not all(r.sides):
        return [f"a debate needs a speaker on each side besides its moderator: {r.moderator} moderates, and the "
                f"cast has {len(r.speakers)}"]
    return []


def top_findings(findings: Sequence[Finding]) -> list[int]:
    """The research numbers of the findings a script must carry: the COVERAGE_TOP best, best first."""
    ranked = sorted(enumerate(findings, 1), key=lambda item: -item[1].score)
    return [n for n, _ in ranked[:COVERAGE_TOP]]


def coverage_needed(n_top: int) -> int:
    """How many of the top findings earn full marks for coverage."""
    return math.ceil(COVERAGE_MIN * n_top - 1e-9)


def _and(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def speaker_rule(show: Show | Sequence[str]) -> str:
    """Who speaks and how much, in words a model can follow; the balance and speakers gates check it."""
    r = roles(show)
    n = len(r.speakers)
    if n == 1:
        return f"{r.speakers[0]} speaks alone, as the narrator: there is no second speaker."
    if r.format == "interview":
        one = len(r.hosts) == 1
        return (f"{_and(r.hosts)} {'hosts and asks' if one else 'host and ask'} the questions; {_and(r.guests)} "
                f"{'is the guest expert' if len(r.guests) == 1 else 'are the guest experts'} and "
                f"{'answers' if len(r.guests) == 1 else 'answer'} them. The guest side says more than "
                f"{INTERVIEW_GUEST_SHARE:.0%} of the words, the host side at least {INTERVIEW_HOST_SHARE:.0%}.")
    if r.format == "debate":
        a, b = r.sides
        mod = f"{r.moderator} moderates: opens, gives the floor and closes. " if r.moderator else ""
        return (f"{mod}{_and(a)} {'argues' if len(a) == 1 else 'argue'} one side of the question, {_and(b)} "
                f"the other; each side makes its case with findings it cites, and has at least "
                f"{DEBATE_SIDE_SHARE:.0%} of the words.")
    kind = "presenters read the stories" if r.format == "brief" else "hosts talk with each other"
    return (f"The {n} {kind} and take turns; each of them has a real part: none says less than "
            f"{r.balance_min:.0%} of the words.")


def cast_lines(show: Show | Sequence[str]) -> str:
    """`- Name: part` for every speaker, the cast as the prompt lists it."""
    r = roles(show)
    part: dict[str, str] = {}
    for name in r.speakers:
        if len(r.speakers) == 1:
            part[name] = "the narrator"
        elif name in r.guests:
            part[name] = "the guest expert"
        elif r.format == "interview":
            part[name] = "the host (interviewer)"
        elif name == r.moderator:
            part[name] = "the moderator"
        elif r.sides:
            part[name] = f"side {1 if name in r.sides[0] else 2} of the debate"
        else:
            part[name] = "a presenter" if r.format == "brief" else "a host"
    return "\n".join(f"- {name}: {part[name]}" for name in r.speakers)


def language_rule(tag: str) -> str:
    if language.primary(tag) == "en":
        return "Plain spoken English: short sentences and everyday words, as people talk."
    lang = language.name(tag)
    return (f"Write every spoken word and every section label in {lang} (language tag {tag}): plain spoken "
            f"{lang}, short sentences and everyday words. Keep the `**Name:**` labels, the heading forms "
            "above and the [n] citations exactly as shown, even where the research is in another language.")


def script_rules(show: Show | Sequence[str], min_words: int, max_words: int, findings: Sequence[Finding]) -> str:
    """The script's shape as instructions; every rule here is one the gates check (tests hold them together).

    `show` decides the format's headings, the cast's parts and the language; two host names stand for a
    conversation of those two in English.
    """
    show = as_show(show)
    shape = SHAPES[show.format]
    n_findings = len(findings)
    top = top_findings(findings)
    cite = (f"Cite every fact with its finding's number in square brackets right after it, like [1] or "
            f"[1, 2]. Use only the numbers 1 to {n_findings} of the research below; never invent a number."
            if n_findings else "There is no research to cite: say so briefly and do not invent facts.")
    forms = " or ".join(f"`{turn_line(name, 'text')}`" for name in show.names)
    rules = [
        "The first line is the episode title as a markdown heading: `# <title>`.",
        f"Then these sections, each opened by its heading line: `## {shape.intro}`, one "
        f"`## {shape.segment} N: <short label>` per main finding (N = 1, 2, 3, ...), and `## {shape.outro}`.",
        f"Every spoken line has exactly the form {forms}: one turn per line, a blank line between turns.",
        speaker_rule(show),
        f"Between {min_words} and {max_words} spoken words in total.",
        "Take facts only from the research below. " + cite,
        f"Every `## {shape.segment}` section cites at least one finding. The findings that matter most "
        f"are {_numbers(top)}: discuss at least {coverage_needed(len(top))} of them, citing each.",
        f"Do not write a sources list: podspool adds `## {SOURCES_HEADING}` from the research itself.",
        "No stage directions or sound cues, no placeholders, TODOs, template braces or angle brackets, "
        "and no square brackets except citations.",
        "Say each thing once: never repeat a line.",
        language_rule(show.language),
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
