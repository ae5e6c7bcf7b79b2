"""The local writer (the default): a deterministic script built only from the findings, in every format.

No model, no network: the cast takes turns reading each finding (a conversation's hosts in rotation, an
interview's host asking and guest answering, a debate's sides in rounds, a narrator alone, presenters
reading a brief), with an intro, transitions and an outro around them, and every segment cites its
finding by its research number (the production stage adds the Sources list). It adds no facts of its own,
so a script is exactly as good as the research; with no findings it says so instead of making things up.
Its framing sentences are English templates: it writes English only, and validation refuses other
languages for it (`languages`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from podspool.stages.base import (
    EpisodeInput,
    Finding,
    ResearchOutput,
    StageContext,
    StageError,
    Usage,
    WriterOutput,
)
from podspool.stages.script import language
from podspool.stages.script.format import SHAPES, Roles, parse_turns, roles, show_for, turn_line
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
QUESTIONS = (
    "Let's start with this: {label} What do the sources tell us?",
    "Next question: {label} How does that work?",
    "Let's turn to this: {label} What should listeners know?",
    "Here's another one: {label} Walk us through it.",
    "Now this: {label} What did the research find?",
    "And one more: {label} What's the story there?",
)
REBUTTALS = (
    "That is only half of it, and the rest of the evidence matters.",
    "I'd weigh that differently, because the sources go on.",
    "The same research points the other way as well.",
    "Hold on, the record has more to say.",
)
ROUND_OPENERS = (
    "Round {i}: {label} The first word goes to {name}.",
    "On to round {i}: {label} {name}, you open.",
)
# a long episode keeps the findings of one section of a source in one segment (one chapter): the
# second and later ones go on from the one before instead of announcing a new point
CONTINUES = (
    "Staying with this a little longer.",
    "There's more on the same thread.",
    "And the story goes on from there.",
    "Here's the next part of it.",
    "Another piece of the same picture.",
    "That leads straight into the next thing.",
)
_PARAGRAPH = re.compile(r"paragraph (\d+)")
_NOT_SPEAKABLE = re.compile(r"\[[^\]]*\]|[{}<>]")  # source-side citations and markup must not leak


class LocalWriter:
    name = "local"
    dry_run = False
    languages = frozenset({"en"})  # the primary language subtags its templates are written in

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        show = show_for(episode.show, hosts)
        if language.primary(show.language) not in self.languages:  # validation refuses this before any run
            raise StageError(f"the local writer writes English only, not {language.name(show.language)} "
                             f"({show.language}): set [production] provider = \"openai\" (a model that writes "
                             "it), or language \"en\"", retryable=False)
        cast = roles(show)
        a, b = hosts[0], hosts[1 % len(hosts)]
        settings = ctx.settings.production
        budget = int(settings.max_words * 0.9)
        if any(f.startswith("length:") and "above" in f for f in feedback):
            budget = int(settings.max_words * 0.75)  # a revision that was too long: make room
        title = _clean(episode.title or episode.topic)
        lines = [f"# {title}", ""]
        if not research.findings:
            lines += _no_findings(episode, a, b)
            return WriterOutput(script="\n".join(lines) + "\n", usage=[Usage(api="local", model="template")])
        # citations carry the research's own numbers: podspool writes the Sources list from research.json
        number = {id(f): n for n, f in enumerate(research.findings, 1)}

        def build(chosen: list[Finding]) -> str:
            findings = _reading_order(chosen)
            body = list(lines)
            if len(hosts) == 2 and show.format == "conversation":
                body += _intro(episode, findings, a, b)
                sections, last = 0, b
                for i, finding in enumerate(findings, 1):
                    # with a target, one segment a section of the source, so chapters are minutes long
                    goes_on = (episode.show.minutes is not None and i > 1 and finding.title is not None
                               and finding.title == findings[i - 2].title and finding.source == findings[i - 2].source)
                    sections += not goes_on
                    # with a target the host who did not speak last takes up the next finding
                    pair = ((a, b) if last == b else (b, a)) if episode.show.minutes is not None else \
                        (a, b) if i % 2 else (b, a)
                    last = pair[1]
                    body += _segment(i, finding, _label(finding, i), pair, number[id(finding)],
                                     heading=None if goes_on else sections if episode.show.minutes is not None else 0)
                body += _outro(episode, len(findings), a, b)
            else:
                body += _cast_script(episode, findings, number, cast)
            return "\n".join(body) + "\n"

        if episode.show.minutes is None:
            script = build(_within_budget(research.findings, budget))
        else:  # a target length (its range is min/max_words): as near its middle as the findings allow
            def spoken(script: str) -> int:  # counted as the length gate counts
                return language.spoken_words(" ".join(t.text for t in parse_turns(script)), show.language)

            script = _near_target(research.findings, settings.min_words, settings.max_words, build, spoken)
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


def _near_target(ranked: list[Finding], low: int, high: int, build: Callable[[list[Finding]], str],
                 spoken: Callable[[str], int]) -> str:
    """The script of the best findings that brings its spoken words nearest (low + high) / 2 without
    passing `high`: findings are taken best first, a finding too long to fit is passed over."""
    goal = (low + high) // 2
    chosen: list[Finding] = []
    script = build(chosen[:1] or ranked[:1])
    for f in ranked:
        trial = build([*chosen, f])
        n = spoken(trial)
        if n > high:
            continue
        chosen, script = [*chosen, f], trial
        if n >= goal:
            break
    return script


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


def _segment(i: int, finding: Finding, label: str, speakers: tuple[str, str], cite: int,
             heading: int | None = 0) -> list[str]:
    """One finding's turns under `## Segment <heading or i>`; `heading=None` continues the segment before."""
    first, second = speakers
    sentences = split_sentences(_clean(finding.text)) or [_clean(finding.text)]
    half = math.ceil(len(sentences) / 2)
    opener = OPENERS[0] if i == 1 else OPENERS[1 + (i - 2) % (len(OPENERS) - 1)]
    lead = opener.format(label=label) if heading is not None else CONTINUES[(i - 1) % len(CONTINUES)]
    lines = ([f"## Segment {heading or i}: {label.rstrip('.')}", ""] if heading is not None else [])
    lines += [turn_line(first, f"{lead} {' '.join(sentences[:half])} [{cite}]"), ""]
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


def _and(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def _halves(finding: Finding) -> tuple[str, str]:
    sentences = split_sentences(_clean(finding.text)) or [_clean(finding.text)]
    half = math.ceil(len(sentences) / 2)
    return " ".join(sentences[:half]), " ".join(sentences[half:])


def _cast_script(episode: EpisodeInput, findings: list[Finding], number: dict[int, int], cast: Roles) -> list[str]:
    """Every format but a two-host conversation (kept word for word as it always was): intro, one
    section per finding, outro, with the parts the cast plays in the format."""
    shape = SHAPES[cast.format]
    names = cast.speakers
    n = len(names)
    topic = _mid_sentence(_clean(episode.topic))
    n_sources = len({f.source for f in findings})
    noun = "source" if n_sources == 1 else "sources"
    gathered = (f"We went through {_count(n_sources)} {noun} and pulled out the {_count(len(findings))} points "
                "that matter most, so everything you hear comes from our notes.")
    lines = [f"## {shape.intro}", ""]
    say = lines.append

    said = dict.fromkeys(names, 0)  # words so far, by speaker

    def turn(name: str, text: str) -> None:
        said[name] += len(text.split())
        say(turn_line(name, text))
        say("")

    def quietest(*besides: str) -> str:
        """The speaker who has said least so far (the cast's order breaks ties): with fewer findings than
        speakers, rotating would leave the last of them almost silent."""
        return min((m for m in names if m not in besides), key=lambda m: said[m])

    debaters = [m for side in cast.sides for m in side]
    lead = cast.moderator or (cast.hosts[0] if cast.hosts else names[0])
    others = [m for m in names if m != lead]
    if n == 1:
        turn(lead, f"Welcome to the show. I'm {lead}, and today I'm talking about {topic}. I went through "
             f"{_count(n_sources)} {noun} and pulled out the {_count(len(findings))} points that matter most, so "
             "everything you hear comes from my notes.")
    elif cast.sides:
        a_side, b_side = cast.sides
        turn(lead, f"Welcome to the debate. Today's question: {topic}. On one side, {_and(a_side)}; on the other, "
             f"{_and(b_side)}." + (" I'll keep time." if cast.moderator else ""))
        for name in debaters:
            if name != lead:
                turn(name, f"Thanks. I'm {name}, and I'll argue from the evidence, point by point.")
        turn(others[0], gathered)
    else:
        company = (f"my guest{'s' if len(cast.guests) > 1 else ''} today {'are' if len(cast.guests) > 1 else 'is'} "
                   f"{_and(cast.guests)}" if cast.guests else f"I'm here with {_and(others)}")
        turn(lead, f"Welcome to the show. I'm {lead}, and {company}. Today we're talking about {topic}.")
        turn(others[0], f"Thanks, {lead}. {gathered}")
        for name in others[1:]:
            turn(name, f"And I'm {name}. Glad to be part of this one.")
    for i, finding in enumerate(findings, 1):
        label = _label(finding, i)
        cite = number[id(finding)]
        first, second = _halves(finding)
        say(f"## {shape.segment} {i}: {label.rstrip('.')}")
        say("")
        opener = OPENERS[0] if i == 1 else OPENERS[1 + (i - 2) % (len(OPENERS) - 1)]
        if n == 1:
            turn(lead, f"{opener.format(label=label)} {' '.join(p for p in (first, second) if p)} [{cite}]")
        elif cast.guests:
            host, guest = cast.hosts[(i - 1) % len(cast.hosts)], cast.guests[(i - 1) % len(cast.guests)]
            turn(host, QUESTIONS[(i - 1) % len(QUESTIONS)].format(label=label))
            turn(guest, f"{first} {REPLIES[(i - 1) % len(REPLIES)] + ' ' + second if second else ''}".strip()
                 + f" [{cite}]")
        elif cast.sides:
            side, other = cast.sides[(i - 1) % 2], cast.sides[i % 2]
            speaker, answer = side[(i - 1) // 2 % len(side)], other[(i - 1) // 2 % len(other)]
            if cast.moderator:
                turn(cast.moderator, ROUND_OPENERS[(i - 1) % len(ROUND_OPENERS)].format(i=i, label=label, name=speaker))
            turn(speaker, f"{opener.format(label=label) if not cast.moderator else ''} {first} [{cite}]".strip())
            turn(answer, f"{REBUTTALS[(i - 1) % len(REBUTTALS)]} {second} [{cite}]" if second else
                 f"{REACTIONS[(i - 1) % len(REACTIONS)].format(label=label)} [{cite}]")
        elif cast.format == "brief":
            reader = quietest()
            turn(reader, f"{label} {first} [{cite}]")
            if second:
                turn(quietest(reader), f"{second} [{cite}]")
        else:
            first_name = quietest()
            second_name = quietest(first_name)
            turn(first_name, f"{opener.format(label=label)} {first} [{cite}]")
            turn(second_name, f"{REPLIES[(i - 1) % len(REPLIES)]} {second}" if second else
                 REACTIONS[(i - 1) % len(REACTIONS)].format(label=label))
            if n > 2:
                turn(quietest(first_name, second_name), f"So the point to keep from part {_count(i)}: {label}")
    say(f"## {shape.outro}")
    say("")
    points = "one point" if len(findings) == 1 else f"{_count(len(findings))} points"
    if n == 1:
        turn(lead, f"That brings us to the end of our look at {topic}: {points}, each one straight from our "
             "sources. Every point is listed with its source in the show notes. Thanks for listening, and until "
             "next time!")
        return lines
    if cast.sides:
        for side in cast.sides:
            turn(side[0], f"My closing word: the {points} we heard on {topic} come straight from the sources, "
                 "and the listener can weigh them." if side is cast.sides[0] else
                 "And mine: weigh the evidence on both sides, it is all listed in the show notes.")
    else:
        turn(others[0], f"That brings us to the end of our look at {topic}: {points}, each one straight from "
             "our sources.")
    turn(lead, f"Thanks for listening, and thanks to {_and(others)} for walking through it with me. Every point we "
         "made is listed with its source in the show notes. Until next time!")
    return lines


def _no_findings(episode: EpisodeInput, a: str, b: str) -> list[str]:
    return ["## Intro", "",
            f"**{a}:** This episode was meant to be about {_mid_sentence(_clean(episode.topic))}, but our research found "
            "no sources we could check.", "",
            f"**{b}:** And we do not make things up, so there is nothing to report yet.", ""]
