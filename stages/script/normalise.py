"""A model's reply -> the canonical script body (`# Title`, `## ` sections, `**Host:** text` turns).

Models write dialogue in many ways: `Alex: …`, `**Alex**: …`, `**Alex:**`, `ALEX (smiling): …`, list items,
generic labels (`Host A`, `HOST 1`, `Speaker 1`, `Person1`, `<Person1>…</Person1>`), a label alone on its
line with the words below it, stage directions, `<think>` blocks, a chatty preamble, a sources list of
their own. All of that is understood here; generic labels go to the cast in order of first
appearance (a role's label, `Guest` or `Moderator`, to the cast member in that part). What is not
understood (a speaker beyond the cast, a line nobody says) is never guessed at: it is
listed in `Draft.problems` with its line, and the quality gates refuse the draft with that reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from podspool.stages.script.format import (
    SHAPES,
    SOURCES_HEADINGS,
    as_show,
    roles,
    spoken,
    turn_line,
)
from podspool.stages.show import Show

THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)  # never closed: cut while thinking
THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)  # opening tag eaten by the server
TAGGED_TURN = re.compile(r"<\s*((?:person|speaker|host)\s*(?:\d+|[a-z]))\s*>(.*?)<\s*/\s*\1\s*>",
                         re.DOTALL | re.IGNORECASE)
# a name's letters, with the combining marks Indic, Thai and Arabic names carry (not \w in Python's re)
NAME_CHARS = r"\w\u0300-\u036f\u0610-\u061a\u064b-\u065f\u0900-\u0dff\u0e31-\u0e4e .'’-"
FENCE = re.compile(r"^\s*(```|~~~)")
RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
LABEL = re.compile(
    r"^\s*(?:[-+•]\s+|\*\s+(?=\*)|\d{1,3}[.)]\s+|>\s*)?"  # a list item or quote around the turn
    r"(?P<pre>[*_]{0,3})\s*"
    rf"(?P<label><?[^\W\d_][{NAME_CHARS}]{{0,30}}?>?)\s*"
    r"(?:\((?P<aside>[^)\n]{0,40})\)\s*)?"  # ALEX (smiling): the aside is a stage direction
    r"(?P<mid>[*_]{0,3})\s*[:：]\s*(?P<post>[*_]{0,3})\s*(?P<text>.*?)\s*$")
# "Alex — text", "**HOST A** - text": accepted only for a host's name or a generic label, since prose
# ("Paris - the city of light") uses dashes too
DASH_LABEL = re.compile(rf"^\s*(?:[-+•]\s+|\d{{1,3}}[.)]\s+)?(?P<pre>[*_]{{0,3}})(?P<label>[^\W\d_][{NAME_CHARS}]{{0,30}}?)"
                        r"(?P=pre)\s+[—–-]{1,2}\s+(?P<text>\S.*?)\s*$")
GENERIC = re.compile(r"(?:host|speaker|person|voice|presenter|co-?host|interviewer|guest|debater|side)\s*#?\s*"
                     r"(?:\d{1,2}|[a-z])|host|co-?host|guest|interviewer|expert|moderator|narrator|presenter",
                     re.IGNORECASE)
# a bare role's label goes to the cast member in that part, whatever order they first speak in
ROLE_LABELS = {"host": "host", "cohost": "host", "interviewer": "host", "presenter": "host", "guest": "guest",
               "expert": "guest", "moderator": "moderator", "narrator": "narrator"}
# "Fun fact: …", "Note: …" start prose, not a turn; "Music: …" is a cue; "Segment 2: …" a heading.
_NOT_SPEAKER_LIST = """note notes fact tip example examples source sources reference references title
    summary update warning disclaimer episode topic takeaway takeaways question answer recap bonus music sfx
    sound transition cue theme setting scene runtime length duration format words citation citations"""
NOT_SPEAKERS = frozenset(_NOT_SPEAKER_LIST.split())
NUMBERED_PART = re.compile(r"(?:segment|part|section|chapter|act|round|question|story)\s*\d+\b", re.I)
HEADING_WORDS = re.compile(r"^(?:segment|part|section|chapter|act|round|question|story)\s*\d+\b|^(?:intro|"
                           r"introduction|opening|outro|conclusion|closing|wrap[- ]?up|final thoughts|welcome|"
                           r"headlines|sign[- ]off)\b", re.IGNORECASE)
TITLE_LINE = re.compile(r"^\s*[*_]*\s*(?:episode\s+)?title\s*[*_]*\s*:\s*[*_]*\s*(?P<title>.+?)\s*[*_]*\s*$", re.I)
# stage directions: cues a voice must not read out ([laughs], (pause), *sighs*, [Intro music])
DIRECTION_WORDS = (r"laugh\w*|chuckl\w*|giggl\w*|sigh\w*|paus\w*|music|sound\w*|sfx|applause|beat|smil\w*|grin\w*|"
                   r"excit\w*|whisper\w*|cough\w*|clears? (?:his |her |their )?throat|jingle|transition|theme|"
                   r"fade\w*|nod\w*|gasp\w*|inhal\w*|exhal\w*|clap\w*|silence|dramatic\w*|sarcastic\w*|"
                   r"enthusiastic\w*|thoughtful\w*|curious\w*|surpris\w*|cheerful\w*|serious\w*|"
                   r"intro|outro|break|sponsor\w*|interrupt\w*")
# a cue is a short phrase around a cue word, or one adverb alone ("(softly)", "*excitedly*")
DIRECTION_INNER = re.compile(rf"^\s*(?:(?:\w+\s+){{0,3}}(?:{DIRECTION_WORDS})\b(?:\s+\w+){{0,4}}|[a-z]+ly)\s*[.!]?\s*$",
                             re.I)
PLACEHOLDER_WORDS = re.compile(r"\binsert\b|\bname\b|\bhere\b|\btodo\b|\btbd\b|\bneeded\b", re.I)
BRACKETED = re.compile(r"\[([^\]\n]{1,80})\]|\(([^)\n]{1,60})\)|(?<![*\w])\*([^*\n]{1,60})\*(?!\*)")
# "[Source 2]", "[Finding 1, 3]", "[ref 4]": a citation in other words
CITATION_VARIANT = re.compile(r"\[(?:sources?|findings?|refs?|references?|citations?|notes?)\s*#?\s*"
                              r"(\d{1,3}(?:\s*(?:,|and)\s*\d{1,3})*)\]", re.I)
WHOLE_DIRECTION = re.compile(r"^\s*(?:\[[^\]]*\]|\([^)]*\)|\*[^*]+\*|_[^_]+_)\s*$")
PLAIN_NAME = re.compile(r"[A-Z][a-z'’.-]*(?: [A-Z][a-z'’.-]*)?")
MARKUP = re.compile(r"[*_`#]")
BOLD_LINE = re.compile(r"(\*\*|__)(?P<t>[^*_]{1,80}?)\1")
WORD_CHAR = re.compile(r"\w")


@dataclass
class Draft:
    """One reply, normalised. `body` has no Sources list (podspool adds its own)."""

    raw: str
    body: str
    title_supplied: bool = False
    problems: list[str] = field(default_factory=list)  # lines not understood: the gates refuse on these
    dropped: list[str] = field(default_factory=list)  # what was removed on purpose (directions, preamble)
    speakers: dict[str, str] = field(default_factory=dict)  # label as written -> host


@dataclass
class _Section:
    heading: str
    turns: list[list[str]] = field(default_factory=list)  # [host, text]


def excerpt(line: str, n: int = 70) -> str:
    line = " ".join(line.split())
    return repr(line if len(line) <= n else line[: n - 1] + "…")


class _Speakers:
    """Labels -> the cast: names as configured (any case); a role's label to the free speaker in that
    part; other generic labels to the speakers not yet named, in order of first appearance."""

    def __init__(self, show: Show) -> None:
        self.hosts = show.names
        self.by_name = {h.casefold(): h for h in self.hosts}
        r = roles(show)
        part = {n: ("guest" if n in r.guests else "moderator" if n == r.moderator else
                    "narrator" if len(r.speakers) == 1 else "host") for n in r.speakers}
        self.in_part = {p: [n for n in self.hosts if part[n] == p] for p in set(ROLE_LABELS.values())}
        self.generic: dict[str, str] = {}
        self.named: set[str] = set()
        self.seen: dict[str, str] = {}

    def resolve(self, label: str) -> str | None:
        key = " ".join(label.strip("<> ").replace("_", " ").split()).casefold()
        host = self.by_name.get(key)
        if host is None and GENERIC.fullmatch(key):
            slot = re.sub(r"[\s#-]", "", key)
            host = self.generic.get(slot)
            if host is None:
                taken = set(self.generic.values()) | self.named
                free = [h for h in self.hosts if h not in taken]
                fitting = [h for h in self.in_part.get(ROLE_LABELS.get(slot, ""), []) if h not in taken]
                if not free:
                    return None
                host = self.generic[slot] = (fitting or free)[0]
        elif host is not None:
            self.named.add(host)
        if host is not None:
            self.seen.setdefault(label.strip(), host)
        return host


def strip_reasoning(text: str) -> tuple[str, bool]:
    """The reply without `<think>` blocks; True when reasoning was found (closed, unclosed, or half-eaten)."""
    out = THINK_BLOCK.sub("", text)
    found = out != text
    close = THINK_CLOSE.search(out)
    if close and not THINK_OPEN.search(out[: close.start()]):  # some servers strip the opening tag
        out, found = out[close.end():], True
    opened = THINK_OPEN.search(out)
    if opened:  # never closed: the rest is thinking, not script (the reply was likely cut)
        out, found = out[: opened.start()], True
    return THINK_CLOSE.sub("", out), found  # a stray closing tag left over is not speech either


def is_direction(inner: str) -> bool:
    """A stage cue to drop; a placeholder ("[insert name here]") is not one: the residue gate must see it."""
    return bool(DIRECTION_INNER.match(inner)) and not PLACEHOLDER_WORDS.search(inner)


def clean_turn_text(text: str, dropped: list[str]) -> str:
    """A turn's words without stage directions, citations as `[n]`; placeholders stay, for the residue gate."""
    text = CITATION_VARIANT.sub(lambda m: f"[{m.group(1)}]", text)

    def drop(m: re.Match[str]) -> str:
        inner = next(g for g in m.groups() if g is not None).strip("[]()*_ ")
        if inner.strip().replace(",", "").replace(" ", "").isdigit():
            return m.group(0)  # a citation
        if is_direction(inner):
            dropped.append(m.group(0))
            return " "
        return m.group(0)

    for _ in range(5):  # until nothing changes: dropping "(pause)" from "[(pause)x]" can expose another cue
        text, before = " ".join(BRACKETED.sub(drop, text).split()).strip("*_ ").strip(), text
        if text == before:
            break
    return text if WORD_CHAR.search(text) else ""  # marks alone ("##", "…") say nothing


def normalise(reply: str, cast: Show | Sequence[str], title: str) -> Draft:
    """Understand `reply` as a script of `cast` (a show, or the two host names of a conversation);
    `title` (the episode's title or topic) is used when the reply has none."""
    show = as_show(cast)
    dropped: list[str] = []
    problems: list[str] = []
    text, had_reasoning = strip_reasoning(reply)
    if had_reasoning:
        dropped.append("<think> reasoning")
    text = TAGGED_TURN.sub(lambda m: f"\n\n{m.group(1)}: {' '.join(m.group(2).split())}\n\n", text)
    speakers = _Speakers(show)
    found_title: str | None = None
    secs: list[_Section] = [_Section("")]
    pending: str | None = None  # a label alone on its line: the next prose lines are its words
    last_turn: list[str] | None = None
    blank_before = True
    in_model_sources = False
    plain_labels: dict[str, list[str]] = {}  # unknown "Name:" labels without styling, by name
    trailing: list[tuple[int, str]] = []  # unlabelled paragraphs after a turn: the speaker's, unless they end the reply

    def add_turn(host: str, words: str) -> None:
        nonlocal last_turn, trailing
        for _, held in trailing:  # paragraphs between two turns belong to the speaker before them
            secs[-1].turns.append([last_turn[0] if last_turn else host, held])
        trailing = []
        last_turn = [host, words]
        secs[-1].turns.append(last_turn)

    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if FENCE.match(line):
            continue
        if not stripped:
            blank_before = True
            continue
        was_blank, blank_before = blank_before, False
        if RULE.match(line):
            continue
        if found_title is None and not _any_turns(secs) and (t := TITLE_LINE.match(stripped)):
            found_title = _plain(t["title"]).strip("\"'“”")
            continue
        plain = _plain(stripped)  # once: the checks below each read the line without its markup
        heading = HEADING.match(line)
        bare = plain.rstrip(":").strip()
        if len(bare) <= 32 and not heading and (host := speakers.resolve(bare)) is not None:
            pending = host  # a label alone on its line ("**ALEX**", "Host A:"): its words follow
            continue
        if _is_cue_line(stripped, plain) and not in_model_sources:
            dropped.append(stripped)
            continue
        heading_text = _heading(heading, stripped, plain)
        if heading_text is not None:
            pending = None
            if heading and len(heading.group(1)) == 1 and found_title is None and not _any_turns(secs):
                found_title = heading_text
            elif heading_text.lower().rstrip(":").startswith(SOURCES_HEADINGS):
                in_model_sources = True
                dropped.append("the model's own sources list")
            else:
                in_model_sources = False
                _close_trailing(secs, trailing, last_turn)
                trailing = []
                secs.append(_Section(heading_text))
            continue
        if in_model_sources:
            continue
        label = _label(stripped, speakers)
        if label is not None:
            name, said, styled = label
            host = speakers.resolve(name)
            if host is None and (styled or GENERIC.fullmatch(name.strip("<> "))):
                problems.append(f"line {_line_in(reply, stripped, n)}: {_who(name, speakers)}: {excerpt(stripped)}")
                pending = None
                continue
            if host is None and PLAIN_NAME.fullmatch(name):
                # "Narrator: …" is a speaker if it recurs; a lone "Firstly: …" is prose with a colon
                plain_labels.setdefault(name, []).append(f"line {_line_in(reply, stripped, n)}: "
                                                         f"{_who(name, speakers)}: {excerpt(stripped)}")
            if host is not None:
                said = clean_turn_text(said, dropped)
                if said:
                    add_turn(host, said)
                    pending = None
                else:
                    pending = host
                continue
        said = clean_turn_text(stripped, dropped)
        if not said:
            continue
        if pending is not None:
            add_turn(pending, said)
            pending = None
        elif last_turn is not None and not was_blank and not trailing:
            last_turn[1] += " " + said  # a turn wrapped over several lines
        elif last_turn is not None and not was_blank:
            trailing[-1] = (trailing[-1][0], trailing[-1][1] + " " + said)
        elif last_turn is not None:
            trailing.append((n, said))
        else:
            dropped.append(f"before the first turn: {excerpt(stripped, 40)}")
    for n, held in trailing:  # after the last turn: a note to the reader ("Hope this helps!"), not speech
        dropped.append(f"after the last turn (line {n}): {excerpt(held, 40)}")
    problems += [lines[0] for lines in plain_labels.values() if len(lines) > 1]
    # "Title: [laughs]" is no title, and a title cites nothing
    title_words = found_title or ""
    for _ in range(5):
        title_words, before = spoken(clean_turn_text(title_words, dropped)).strip("[]"), title_words
        if title_words == before:
            break
    found_title = title_words if WORD_CHAR.search(title_words) else None
    return Draft(raw=reply, body=_render(found_title or title, secs, SHAPES[show.format].intro),
                 title_supplied=not found_title,
                 problems=problems, dropped=dropped, speakers=dict(speakers.seen))


def _plain(text: str) -> str:
    return " ".join(MARKUP.sub("", text).split()).strip()


def _is_cue_line(stripped: str, plain: str) -> bool:
    """A line that is only a cue: `[Intro music]`, `**(Sam laughs)**`, `*sighs*` (not `[Segment 2: …]`).
    `plain` is the line without its markup (_plain)."""
    if not WHOLE_DIRECTION.match(stripped) and not WHOLE_DIRECTION.match(plain):
        return False
    inner = plain.strip("[]() ")
    return is_direction(inner) and not NUMBERED_PART.match(inner)


def _heading(m: re.Match[str] | None, stripped: str, plain: str) -> str | None:
    """The heading a line stands for: `## Segment 1`, `**Segment 1: The dance**` alone, or a short plain
    `Segment 1: The dance` / `Intro:` line (a sentence ending in a full stop is speech, not a heading).
    `m` is the line's HEADING match and `plain` the line without its markup (_plain)."""
    if m:
        return _plain(m.group(2)).strip("[]").strip()
    bold = BOLD_LINE.fullmatch(stripped)
    if bold and not bold["t"].rstrip().endswith(":"):
        return bold["t"].strip().strip("[]").strip()
    if WHOLE_DIRECTION.match(plain):  # "[Segment 1: The Great Silence]"
        plain = plain[1:-1].strip()
    if HEADING_WORDS.match(plain) and len(plain.split()) <= 10 and not plain.endswith((".", "!", "?")):
        return plain.rstrip(":").strip()
    return None


def _line_in(reply: str, line: str, fallback: int) -> int:
    """The line's number in the reply as the model wrote it (reasoning and tags shift the working copy)."""
    return next((i for i, raw in enumerate(reply.splitlines(), 1) if line in raw), fallback)


def _any_turns(secs: list[_Section]) -> bool:
    return any(s.turns for s in secs)


def _close_trailing(secs: list[_Section], trailing: list[tuple[int, str]], last: list[str] | None) -> None:
    """Paragraphs before a new heading belong to the last speaker (it is not the reply's end)."""
    if last is not None:
        for _, held in trailing:
            secs[-1].turns.append([last[0], held])


def _label(line: str, speakers: _Speakers) -> tuple[str, str, bool] | None:
    """(label, words, styled) when the line opens with a speaker label; styled = bold/italic or CAPS."""
    m = LABEL.match(line)
    if not m:
        dash = DASH_LABEL.match(line)
        if dash and speakers.resolve(dash["label"].strip()) is not None:
            return dash["label"].strip(), dash["text"], bool(dash["pre"])
        return None
    name = m["label"].strip()
    styled = bool(m["pre"] or m["mid"] or m["post"]) or (name.isupper() and len(name) > 1)
    closing = max(0, len(m["pre"]) - len(m["mid"]))  # markers after the colon that close the label's bold
    said = m["post"][closing:] + m["text"]  # the rest opens the words: "Sam: *softly* …"
    if name.lower() in NOT_SPEAKERS or HEADING_WORDS.match(name):
        return None
    if speakers.resolve(name) is not None:
        return name, said, styled
    if len(name.split()) > 3 or not name[:1].isupper():
        return None
    return name, said, styled


def _who(name: str, speakers: _Speakers) -> str:
    n = len(speakers.hosts)
    cast = ", ".join(speakers.hosts[:-1]) + f" and {speakers.hosts[-1]}" if n > 1 else speakers.hosts[0]
    if GENERIC.fullmatch(name.strip("<> ")):
        return f"a speaker {name!r} beyond the cast, which has {n} ({cast})"
    return f"unknown speaker {name!r} (the cast is {cast})"


def _render(title: str, secs: list[_Section], intro: str) -> str:
    lines = [f"# {_plain(title)}", ""]
    headed = [s for s in secs if s.heading]
    for s in secs:
        if not s.turns:
            continue
        heading = s.heading or (intro if headed else "Conversation")
        lines += [f"## {heading}", ""]
        for host, words in s.turns:
            lines += [turn_line(host, words), ""]
    return "\n".join(lines).rstrip() + "\n"
