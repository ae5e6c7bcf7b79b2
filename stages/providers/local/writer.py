"""The local writer (the default): a deterministic two-host script built only from the findings.

No model, no network: the hosts take turns reading each finding, with an intro, transitions and an
outro around them, and every segment cites its finding by its research number (the production stage
adds the Sources list). It adds no facts of its own, so a script
is exactly as good as the research; with no findings it says so instead of making things up.
"""

from __future__ import annotations

import math
import re

from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, Usage, WriterOutput
from podspool.stages.script.format import turn_line
from podspool.stages.sources.passages import split_sentences
from podspool.stages.words import words

# Openers and replies rotate by segment number; each carries the segment's label, so no two
# paragraphs of a script come out the same however many segments there are.
OPENERS = (
    "Let's start here: {label}",
    "Next up: {label}",
    "Let's turn to this: {label}",
    "Here's another piece of the picture: {label}",
    "Now for something else: {label}",
    "Moving on: {label}",
    "Our next point: {label}",
    "One more thread to pull on: {label}",
)
REPLIES = (
    "And there's more to it than that.",
    "Right, and here's the part that stayed with me.",
    "There's a second half to this.",
    "What makes this interesting is the detail.",
    "And it goes further.",
    "Here's the follow-up.",
)
REACTIONS = (
    "That's a striking point, and worth a moment to sink in: {label}",
    "That turns out to matter more than it first seems: {label}",
    "I like how concrete that makes it. Remember this one: {label}",
    "That reframes things quite a bit. Let's keep it in mind: {label}",
)
_PARAGRAPH = re.compile(r"paragraph (\d+)")
_NOT_SPEAKABLE = re.compile(r"\[[^\]]*\]|[{}<>]")  # source-side citations and markup must not leak


class LocalWriter:
    name = "local"
    dry_run = False

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        a, b = hosts[0], hosts[1]
        settings = ctx.settings.production
        budget = int(settings.max_words * 0.9)
        if any(f.startswith("length:") and "above" in f for f in feedback):
            budget = int(settings.max_words * 0.75)  # a revision that was too long: make room
        title = _clean(episode.title or episode.topic)
        lines = [f"# {title}", ""]
        if not research.findings:
            lines += _no_findings(episode, a, b)
            return WriterOutput(script="\n".join(lines) + "\n", usage=[Usage(api="local", model="template")])
        findings = _reading_order(_within_budget(research.findings, budget))
        # citations carry the research's own numbers: podspool writes the Sources list from research.json
        number = {id(f): n for n, f in enumerate(research.findings, 1)}
        lines += _intro(episode, findings, a, b)
        for i, finding in enumerate(findings, 1):
            lines += _segment(i, finding, _label(finding, i), (a, b) if i % 2 else (b, a), number[id(finding)])
        lines += _outro(episode, len(findings), a, b)
        script = "\n".join(lines) + "\n"
        return WriterOutput(script=script, usage=[Usage(api="local", model="template",
                                                        output_tokens=len(words(script)))])


def _clean(text: str) -> str:
    return " ".join(_NOT_SPEAKABLE.sub("", text).split())


def _within_budget(findings: list[Finding], budget: int) -> list[Finding]:
    """The best findings whose text fits in `budget` words (framing included, roughly)."""
    kept: list[Finding] = []
    used = 120  # intro and outro
    for f in findings:
        n = len(words(f.text)) + 30  # the finding plus its opener and reply
        if kept and used + n > budget:
            break
        kept.append(f)
        used += n
    return kept


def _reading_order(findings: list[Finding]) -> list[Finding]:
    """The chosen findings in the order their sources tell them: a story, not a relevance list."""
    first_seen = {src: n for n, src in reversed(list(enumerate(f.source for f in findings)))}

    def key(item: tuple[int, Finding]) -> tuple[int, int, int]:
        rank, f = item
        m = _PARAGRAPH.search(f.location)
        return first_seen[f.source], int(m.group(1)) if m else rank, rank

    return [f for _, f in sorted(enumerate(findings), key=key)]


def _label(finding: Finding, i: int) -> str:
    """A short spoken name for the segment, as a sentence: the source's heading, else its first words."""
    if finding.title and len(finding.title.split()) <= 10:
        text = _clean(finding.title)
    else:
        text = " ".join(_clean(finding.text).split()[:6]).rstrip(",;:.") + "..."
    text = text or f"Point {i}"
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _count(n: int) -> str:
    words_ = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words_[n] if 0 <= n < len(words_) else str(n)


def _mid_sentence(text: str) -> str:
    """'The Fermi paradox' -> 'the Fermi paradox' inside a sentence; other words may be names."""
    first, _, rest = text.partition(" ")
    return f"{first.lower()} {rest}" if first in ("The", "A", "An") and rest else text


def _intro(episode: EpisodeInput, findings: list[Finding], a: str, b: str) -> list[str]:
    n_sources = len({f.source for f in findings})
    topic = _mid_sentence(_clean(episode.topic))
    lead = f"**{a}:** Welcome to the show. I'm {a}, and I'm here with {b}. Today we're talking about {topic}."
    if episode.title and episode.title.strip() != episode.topic.strip():
        title = _clean(episode.title)
        lead += f" We've called this one: {title}" + ("" if title.endswith((".", "!", "?")) else ".")
    noun = "source" if n_sources == 1 else "sources"
    second = (f"**{b}:** Thanks, {a}. We went through {_count(n_sources)} {noun} for this episode and pulled "
              f"out the {_count(len(findings))} points that matter most, so everything you hear today comes from our notes.")
    if episode.notes:
        second += f" Our angle today: {_clean(episode.notes)}"
    return ["## Intro", "", lead, "", second, ""]


def _segment(i: int, finding: Finding, label: str, speakers: tuple[str, str], cite: int) -> list[str]:
    first, second = speakers
    sentences = split_sentences(_clean(finding.text)) or [_clean(finding.text)]
    half = math.ceil(len(sentences) / 2)
    opener = OPENERS[0] if i == 1 else OPENERS[1 + (i - 2) % (len(OPENERS) - 1)]
    lines = [f"## Segment {i}: {label.rstrip('.')}", "",
             turn_line(first, f"{opener.format(label=label)} {' '.join(sentences[:half])} [{cite}]"), ""]
    if sentences[half:]:
        reply = REPLIES[(i - 1) % len(REPLIES)]
        lines += [f"**{second}:** {reply} {' '.join(sentences[half:])}", ""]
    else:
        lines += [f"**{second}:** {REACTIONS[(i - 1) % len(REACTIONS)].format(label=label)}", ""]
    return lines


def _outro(episode: EpisodeInput, n_points: int, a: str, b: str) -> list[str]:
    topic = _mid_sentence(_clean(episode.topic))
    points = "one point" if n_points == 1 else f"{_count(n_points)} points"
    return ["## Outro", "",
            f"**{b}:** That brings us to the end of our look at {topic}: {points}, each one straight from "
            "our sources.", "",
            f"**{a}:** Thanks for listening, and thanks to {b} for walking through it with me. Every point we "
            "made is listed with its source in the show notes. Until next time!", ""]


def _no_findings(episode: EpisodeInput, a: str, b: str) -> list[str]:
    return ["## Intro", "",
            f"**{a}:** This episode was meant to be about {_mid_sentence(_clean(episode.topic))}, but our research found "
            "no sources we could check.", "",
            f"**{b}:** And we do not make things up, so there is nothing to report yet.", ""]
