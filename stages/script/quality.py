"""Quality gates for an episode script: hard rules that must hold, and scored qualities that must reach the threshold.

Hard gates (complete, speakers, length, grounded, residue) are what makes an episode broken: a cut or
empty reply, a refusal, a silent speaker of the cast or a line nobody can voice, too few or too many words, a citation
of research that does not exist, a placeholder read aloud. Any one of them refuses the script whatever
its score. Soft gates (citations, coverage, repetition, readability, balance) each score 0..1, and the
episode's score is the lowest of them: `[quality] threshold` is what every scored quality must reach.
The lowest rather than the mean, because a mean lets one real weakness (a script that skips most of the
research) hide behind four perfect scores. Every reason names what to fix, with the offending line
where there is one, because it is the next draft's feedback.

The show's format decides the balance gate (a solo episode has none; an interview's favours the guest)
and adds the sides gate to a debate; its language decides how words are counted and which readability
formula applies. A gate that cannot judge a language passes and says so in its `note`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from podspool.stages.base import ResearchOutput, Turn
from podspool.stages.script import language
from podspool.stages.script.format import (
    CITATION_RE,
    DEBATE_SIDE_SHARE,
    INTERVIEW_GUEST_SHARE,
    INTERVIEW_HOST_SHARE,
    TURN_RE,
    ParsedScript,
    Roles,
    as_show,
    cited_numbers,
    coverage_needed,
    parse,
    roles,
    top_findings,
)
from podspool.stages.script.normalise import Draft, excerpt
from podspool.stages.settings import StageSettings
from podspool.stages.show import Show
from podspool.stages.words import sentences, tokens, words

READABILITY_RANGE = (30.0, 100.0)  # Flesch (and its adaptations): below 30 is academic prose, above 100 baby talk
FINDING_OVERLAP = 0.5  # share of a finding's content words that must appear for it to count as covered
CITED_OVERLAP = 0.25  # ... or this share, when the script also cites the finding (a paraphrase)
REPEAT_MIN_WORDS = 8  # shorter lines ("Exactly.", "Right, go on.") may recur naturally
WINDOW_WORDS = 200  # a script without segment headings is judged for citations in windows of this size
MAX_LISTED = 3  # offending lines quoted per reason

REFUSAL = re.compile(r"\b(?:I'?m sorry|I apologi[sz]e|I can(?:no|')t (?:help|assist|write|create|provide|comply)|"
                     r"I (?:won'?t|will not|am unable to|am not able to)|as an ai)\b", re.I)
RESIDUE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("template braces", re.compile(r"[{}]")),
    ("TODO/TBD/FIXME/XXX", re.compile(r"\b(?:TODO|TBD|FIXME|XXX)\b")),
    ("lorem ipsum", re.compile(r"\blorem\b|\bipsum\b", re.I)),
    ("bracketed placeholder", re.compile(r"\[(?!\s*\d)[^\]\n]{1,80}\]")),  # [citation needed], [insert name]
    ("angle-bracket placeholder", re.compile(r"<[^<>\n]{1,80}>")),
    ("language-model boilerplate", re.compile(r"\bas an ai\b|\blanguage model\b|\bI cannot (?:help|assist)\b", re.I)),
]
HARD = ("complete", "speakers", "length", "grounded", "residue")
SOFT = ("citations", "coverage", "repetition", "readability", "balance")  # balance: not for a solo episode
DEBATE_ONLY = ("sides",)


@dataclass
class Gate:
    name: str
    score: float
    passed: bool
    reason: str = ""  # what to fix, phrased as an instruction for the revision
    hard: bool = False
    note: str = ""  # what the gate could not judge, and so did not hold against the script


@dataclass
class QualityReport:
    score: float  # the lowest soft gate's score
    passed: bool  # every hard gate holds and score >= threshold
    gates: list[Gate] = field(default_factory=list)
    words: int = 0
    mean: float = 1.0  # the soft gates' mean, for information

    @property
    def scores(self) -> dict[str, float]:
        return {g.name: round(g.score, 3) for g in self.gates}

    @property
    def reasons(self) -> list[str]:
        """What to fix first: a broken reply alone (the other gates only echo it), else the failed hard
        gates, else the soft gates short of full marks (what would raise the score)."""
        hard = [g for g in self.gates if g.hard and not g.passed]
        if any(g.name == "complete" for g in hard):
            hard = [g for g in hard if g.name == "complete"]
        soft = [g for g in self.gates if not g.hard and g.reason]
        return [f"{g.name}: {g.reason}" for g in (hard or soft)]

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 3), "mean": round(self.mean, 3), "passed": self.passed, "words": self.words,
                "scores": self.scores, "gates": [dict(vars(g)) for g in self.gates], "reasons": self.reasons}  # flat: asdict deep-copies


def evaluate(script: str, research: ResearchOutput, settings: StageSettings, *, draft: Draft | None = None,
             incomplete: str | None = None, long_form: bool = False, show: Show | None = None) -> QualityReport:
    """Run every gate on `script` (pure and cheap, so every draft is judged the same way).

    `draft` is the normaliser's account of the model's reply (lines it could not understand);
    `incomplete` is the writer's word that the reply was cut short. `long_form` (a show with a target
    length) also judges what the segments say against each other: repeats across them, continuity.
    `show` is the episode's format, cast and language (default: a conversation of `[production] hosts`
    in English).
    """
    show = show or as_show(settings.production.hosts)
    hosts = show.names
    threshold = settings.quality.threshold
    parsed = parse(script)  # once: every gate below reads the same parts
    turns = parsed.turns
    spoken_text = " ".join(t.text for t in turns)
    n_words = language.spoken_words(spoken_text, show.language)
    parts = roles(show)
    hard = [
        complete_gate(turns, draft, incomplete),
        speakers_gate(turns, hosts, draft),
        length_gate(n_words, settings.production.min_words, settings.production.max_words),
        grounded_gate(parsed, len(research.findings)),
        residue_gate(parsed.body),
    ]
    soft = [
        citation_gate(parsed, len(research.findings)),
        coverage_gate(parsed, research, show.language),
        repetition_gate(turns, show.language),
        readability_gate(spoken_text, show.language),
    ]
    if len(hosts) > 1:  # a solo episode has no balance to keep
        soft.append(balance_gate(turns, parts))
    if parts.sides:
        soft.append(sides_gate(parsed, parts, len(research.findings)))
    if long_form:
        soft[2] = worse(soft[2], cross_repetition_gate(parsed))
        hard.append(continuity_gate(parsed, repeats=True))  # a re-introduction or a fact told twice is a flaw
    for g in hard:
        g.hard = True
    for g in soft:
        g.passed = g.score >= threshold
    score = min(g.score for g in soft)
    passed = score >= threshold and all(g.passed for g in hard)
    return QualityReport(score=score, passed=passed, gates=hard + soft, words=n_words,
                         mean=sum(g.score for g in soft) / len(soft))


def _lines_with(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [line for line in text.splitlines() if pattern.search(line)]


# ---- hard gates ---------------------------------------------------------------------------------


def complete_gate(turns: list[Turn], draft: Draft | None, incomplete: str | None) -> Gate:
    raw = draft.raw if draft else ""
    if incomplete:
        tail = " ".join(raw.split()[-12:])
        return Gate("complete", 0.0, False, f"{incomplete}; it ends with {excerpt(tail)}: write a shorter "
                    "script that is whole, outro included")
    if draft is not None and not raw.strip():
        return Gate("complete", 0.0, False, "the reply was empty: write the whole script")
    if not turns:
        first = next((line for line in raw.splitlines() if line.strip()), "")
        if REFUSAL.search(raw[:600]):
            return Gate("complete", 0.0, False, f"the model declined to write the script ({excerpt(first)}): "
                        "write the dialogue the prompt asks for")
        return Gate("complete", 0.0, False, f"no dialogue in the reply (it opens with {excerpt(first)}): "
                    "write `**Host:** text` turns")
    return Gate("complete", 1.0, True)


def speakers_gate(turns: list[Turn], hosts: list[str], draft: Draft | None) -> Gate:
    said = Counter(t.host for t in turns)
    problems: list[str] = []
    missing = [h for h in hosts if not said.get(h)]
    cast = _and(hosts)
    if missing:
        every = "both hosts take" if len(hosts) == 2 else f"every one of the cast ({cast}) takes"
        forms = " and ".join(f"`**{h}:** text`" for h in hosts)
        problems.append(f"{_and(missing)} never speak{'s' if len(missing) == 1 else ''}: {every} turns, as "
                        f"{forms} lines")
    strangers = sorted(set(said) - set(hosts))
    if strangers:
        alone = f"{hosts[0]} speaks alone" if len(hosts) == 1 else f"the cast is {cast}"
        problems.append(f"lines by unknown speakers {', '.join(strangers)} ({alone})")
    if draft and draft.problems:
        more = f" (and {len(draft.problems) - MAX_LISTED} more)" if len(draft.problems) > MAX_LISTED else ""
        problems.append("lines not understood, rewrite them as a host's turn or drop them: "
                        + "; ".join(draft.problems[:MAX_LISTED]) + more)
    return Gate("speakers", 1.0 - min(1.0, len(problems) / 2), not problems, "; ".join(problems))


def _and(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def length_gate(n_words: int, min_words: int, max_words: int) -> Gate:
    if n_words < min_words:
        return Gate("length", n_words / min_words, False,
                    f"{n_words} spoken words, below the minimum of {min_words}: add substance from the findings")
    if n_words > max_words:
        return Gate("length", max_words / n_words, False,
                    f"{n_words} spoken words, above the maximum of {max_words}: cut the weakest segments")
    return Gate("length", 1.0, True)


def grounded_gate(parsed: ParsedScript, n_findings: int) -> Gate:
    if not n_findings:
        return Gate("grounded", 0.0, False, "the research has no findings to cite (not grounded): give the "
                    "episode sources or set research.sources_dir")
    cited = parsed.cited
    invented = sorted(n for n in cited if not 1 <= n <= n_findings)
    if invented:
        bad = re.compile("|".join(rf"\[[^\]]*\b{n}\b[^\]]*\]" for n in invented))
        quoted = [excerpt("…" + line[max(0, m.start() - 50): m.end()]) for line in parsed.body.splitlines()
                  if (m := bad.search(line))]
        where = "; ".join(quoted[:MAX_LISTED])
        return Gate("grounded", 0.0, False, f"citations {invented[:5]} point at findings the research does not "
                    f"have (it has 1 to {n_findings}), in {where}: cite only 1 to {n_findings}")
    if not cited:
        return Gate("grounded", 0.0, False, f"no citations: cite the findings behind each fact as [1] to "
                    f"[{n_findings}]")
    return Gate("grounded", 1.0, True)


def residue_gate(text: str) -> Gate:
    hits: list[str] = []
    for label, pattern in RESIDUE_PATTERNS:
        if not pattern.search(text):  # a line's match is a match in the whole text too: the usual case, quick
            continue
        lines = _lines_with(text, pattern)
        if lines:
            m = pattern.search(lines[0])
            hits.append(f"{label} {m.group(0)[:30]!r} in {excerpt(lines[0])}" if m else label)
    if hits:
        return Gate("residue", 0.0, False, f"remove template/placeholder residue: {'; '.join(hits)}")
    return Gate("residue", 1.0, True)


# ---- soft gates ---------------------------------------------------------------------------------


def _citation_units(parsed: ParsedScript) -> list[tuple[str, str]]:
    """(name, text) of what must each cite: the segments, or ~WINDOW_WORDS-word runs of turns without them."""
    secs = [s for s in parsed.sections if s.is_segment]
    if len(secs) >= 2:
        return [(s.heading, "\n".join(s.lines)) for s in secs]
    units: list[tuple[str, str]] = []
    current: list[str] = []
    count = 0
    for line in parsed.body.splitlines():
        if not line.startswith("**"):
            continue
        current.append(line)
        count += len(words(CITATION_RE.sub("", line)))
        if count >= WINDOW_WORDS:
            units.append((excerpt(current[0], 40), "\n".join(current)))
            current, count = [], 0
    if current and (count >= WINDOW_WORDS // 2 or not units):
        units.append((excerpt(current[0], 40), "\n".join(current)))
    return units


def citation_gate(parsed: ParsedScript, n_findings: int) -> Gate:
    units = _citation_units(parsed)
    if not units or not n_findings:
        return Gate("citations", 0.0, False, "nothing to judge: no segments with turns, or no findings")
    uncited = [name for name, text in units if not any(1 <= n <= n_findings for n in cited_numbers(text))]
    score = (len(units) - len(uncited)) / len(units)
    if not uncited:
        return Gate("citations", score, True)
    return Gate("citations", score, False, f"{len(uncited)} of {len(units)} segments cite no finding: "
                f"{', '.join(uncited[:MAX_LISTED])}: cite the finding each one discusses")


def coverage_gate(parsed: ParsedScript, research: ResearchOutput, tag: str = "en") -> Gate:
    ranked = [(n, research.findings[n - 1]) for n in top_findings(research.findings)]
    if not ranked:
        return Gate("coverage", 0.0, False, "the research has no findings to cover")
    script_tokens = set(tokens(CITATION_RE.sub(" ", parsed.body)))
    cited = parsed.cited
    # a script in another language than its research shares few words with it: there a citation counts
    translated = language.primary(tag) != "en"
    missed: list[int] = []
    for number, f in ranked:
        needed = set(tokens(f.text))
        share = len(needed & script_tokens) / len(needed) if needed else 1.0
        if share < FINDING_OVERLAP and not (number in cited and (translated or share >= CITED_OVERLAP)):
            missed.append(number)
    score = min(1.0, (len(ranked) - len(missed)) / coverage_needed(len(ranked)))
    note = (f"a finding cited counts as discussed: the words of a {language.name(tag)} script are not compared "
            "with the research's" if translated else "")
    if not missed:
        return Gate("coverage", score, True, note=note)
    return Gate("coverage", score, False, f"{len(ranked) - len(missed)} of the top {len(ranked)} findings are "
                f"discussed, {coverage_needed(len(ranked))} needed: also discuss findings "
                f"{', '.join(map(str, sorted(missed)))}")


def _compared(text: str, tag: str) -> str:
    """A line as repetition compares it: without case or punctuation, in any script (an Indic vowel sign
    is a mark, not punctuation)."""
    if language.primary(tag) == "en":
        return " ".join(words(text)).lower()
    kept = "".join(c if c.isalnum() or unicodedata.category(c).startswith("M") else " " for c in text.casefold())
    return " ".join(kept.split())


def repetition_gate(turns: list[Turn], tag: str = "en") -> Gate:
    plain = [(_compared(t.text, tag), t) for t in turns]
    said = dict(plain)
    units = [u for u, _ in plain if language.spoken_words(u, tag) >= REPEAT_MIN_WORDS]
    counts = Counter(units)
    repeated = [u for u, n in counts.items() if n > 1]
    if not repeated:
        return Gate("repetition", 1.0, True)
    extra = sum(n - 1 for n in counts.values())
    first = said[repeated[0]]
    return Gate("repetition", max(0.0, 1 - 2 * extra / max(1, len(units))), False,
                f"{len(repeated)} line(s) said more than once, e.g. {excerpt(f'**{first.host}:** {first.text}')}: "
                "say each thing once")


def readability_gate(spoken_text: str, tag: str = "en") -> Gate:
    low, high = READABILITY_RANGE
    if not language.spoken_words(spoken_text, tag):
        return Gate("readability", 0.0, False, "no spoken text to read")
    judged = language.reading_ease(spoken_text, tag)
    if judged is None:
        return Gate("readability", 1.0, True, note=f"not judged: no readability formula for "
                    f"{language.name(tag)} ({tag}) here")
    formula, ease = judged
    if low <= ease <= high:
        return Gate("readability", 1.0, True)
    distance = low - ease if ease < low else ease - high
    hint = "use shorter sentences and plainer words" if ease < low else "write fuller sentences"
    return Gate("readability", max(0.0, 1 - distance / 40), False,
                f"{formula} {ease:.0f}, outside {low:.0f}-{high:.0f}: {hint}")


def _shares(turns: list[Turn], names: tuple[str, ...]) -> tuple[Counter[str], int]:
    said = Counter[str]()
    for t in turns:
        said[t.host] += len(t.text.split())  # words by spaces, in any language: the shares are what matter
    return said, sum(said[n] for n in names)


def balance_gate(turns: list[Turn], parts: Roles | list[str]) -> Gate:
    """Everyone has a real part (conversation, brief); an interview's guests say most; a debate's sides
    are even. A solo episode has no balance gate."""
    r = parts if isinstance(parts, Roles) else roles(parts)
    said, total = _shares(turns, r.speakers)
    if not total:
        return Gate("balance", 0.0, False, "nobody in the cast speaks")
    if r.guests:
        guest, host = sum(said[n] for n in r.guests) / total, sum(said[n] for n in r.hosts) / total
        score = min(1.0, guest / INTERVIEW_GUEST_SHARE, host / INTERVIEW_HOST_SHARE)
        if score >= 1.0:
            return Gate("balance", 1.0, True)
        if guest < INTERVIEW_GUEST_SHARE:
            return Gate("balance", score, False, f"the guest side ({_and(r.guests)}) says only {guest:.0%} of the "
                        "words: in an interview the guest answers at length, the host asks")
        return Gate("balance", score, False, f"the host side ({_and(r.hosts)}) says only {host:.0%} of the words: "
                    "let the host ask the questions and steer")
    if r.sides:
        side_share = [sum(said[n] for n in side) / total for side in r.sides]
        score = min(1.0, *(s / DEBATE_SIDE_SHARE for s in side_share))
        if score >= 1.0:
            return Gate("balance", 1.0, True)
        i = side_share.index(min(side_share))
        return Gate("balance", score, False, f"the side of {_and(r.sides[i])} has only {side_share[i]:.0%} of "
                    "the words: give both sides of the debate an even part")
    quiet = min(r.speakers, key=lambda h: said[h])
    part = said[quiet] / total
    score = min(1.0, part / r.balance_min)
    if score >= 1.0:
        return Gate("balance", 1.0, True)
    every = "both hosts" if len(r.speakers) == 2 else "every speaker"
    return Gate("balance", score, False, f"{quiet} says only {part:.0%} of the words: give {every} a real "
                "part in the conversation")


def sides_gate(parsed: ParsedScript, parts: Roles, n_findings: int) -> Gate:
    """A debate's sides each make their case from the research: each cites findings in its own turns."""
    cited: dict[str, set[int]] = {}
    for sec in parsed.sections:
        for line in sec.lines if not sec.is_sources else ():
            if m := TURN_RE.match(line):
                cited.setdefault(m["host"].strip(), set()).update(cited_numbers(m["text"]))
    uncited = [side for side in parts.sides
               if not any(1 <= n <= n_findings for name in side for n in cited.get(name, ()))]
    if not uncited:
        return Gate("sides", 1.0, True)
    return Gate("sides", 1 - len(uncited) / len(parts.sides), False,
                "; ".join(f"the side of {_and(side)} cites no finding" for side in uncited)
                + ": each side of the debate argues from the findings, citing them")


# ---- long-form gates: what the segments of a long episode say against each other ------------------

SHINGLE = 4  # content words in a row that make a repeated statement, not a shared phrase
REPEATED_SHARE = 0.7  # a sentence whose runs of SHINGLE content words mostly appeared earlier repeats it
REPEAT_MIN_TOKENS = 5
GREETING = re.compile(r"\b(?:welcome (?:back )?to (?:the|our|this) (?:show|podcast|episode)|welcome,? everyone|"
                      r"I'?m \w+,? and I'?m (?:here )?with|I'?m your host|today (?:we'?re|we are) (?:talking|looking) "
                      r"(?:about|at)|hello and welcome)\b", re.I)
FAREWELL = re.compile(r"\b(?:thanks? (?:you )?for listening|see you next time|until next time|that'?s all for "
                      r"(?:today|this episode|now)|that brings us to the end|goodbye,? everyone)\b", re.I)


def worse(a: Gate, b: Gate) -> Gate:
    """One gate's verdict from two checks of the same quality: the lower score, both reasons."""
    low = a if a.score <= b.score else b
    reason = "; ".join(r for r in (a.reason, b.reason) if r)
    return Gate(a.name, low.score, a.passed and b.passed, reason, a.hard)


def segment_sentences(parsed: ParsedScript) -> list[tuple[str, str]]:
    """(section heading, spoken sentence) in script order, Sources aside."""
    out = []
    for sec in parsed.sections:
        if sec.is_sources:
            continue
        for line in sec.lines:
            m = TURN_RE.match(line)
            if m:
                out += [(sec.heading, s) for s in sentences(CITATION_RE.sub("", m["text"]))]
    return out


def repeats_across(parsed: ParsedScript) -> list[tuple[str, str, str]]:
    """(section, sentence, section it repeats) for each sentence that says again what another section said."""
    first_seen: dict[tuple[str, ...], str] = {}
    found: list[tuple[str, str, str]] = []
    for heading, sentence in segment_sentences(parsed):
        toks = _fact_tokens(sentence)
        runs = [tuple(toks[i:i + SHINGLE]) for i in range(len(toks) - SHINGLE + 1)]
        if len(toks) >= REPEAT_MIN_TOKENS and runs:
            earlier = [first_seen[r] for r in runs if r in first_seen and first_seen[r] != heading]
            if len(earlier) >= REPEATED_SHARE * len(runs):
                found.append((heading, sentence, Counter(earlier).most_common(1)[0][0]))
        for r in runs:
            first_seen.setdefault(r, heading)
    return found


def _fact_tokens(sentence: str) -> list[str]:
    """Content words with numbers kept: "spread to 4 places" and "spread to 6 places" are two facts."""
    out: list[str] = []
    for w in words(sentence):
        out += [w] if w.isdigit() else tokens(w)
    return out


def cross_repetition_gate(parsed: ParsedScript) -> Gate:
    found = repeats_across(parsed)
    n = max(1, len(segment_sentences(parsed)))
    if not found:
        return Gate("repetition", 1.0, True)
    quoted = "; ".join(f"{excerpt(s, 60)} in {h!r} repeats {e!r}" for h, s, e in found[:MAX_LISTED])
    return Gate("repetition", max(0.0, 1 - 4 * len(found) / n), False,
                f"{len(found)} sentence(s) say again what another segment said: {quoted}: say each fact once")


def continuity_problems(parsed: ParsedScript, opens: bool = True, closes: bool = True) -> list[tuple[str, str]]:
    """(section, line) of a greeting after the intro, or a farewell before the outro. `opens`/`closes`:
    whether `parsed` begins/ends the show (a segment of a long episode may do neither)."""
    secs = [s for s in parsed.sections if s.heading and not s.is_sources]
    out = []
    for i, sec in enumerate(secs):
        opening, closing = opens and i == 0, closes and i == len(secs) - 1
        for line in sec.lines:
            m = TURN_RE.match(line)
            if not m:
                continue
            if not opening and GREETING.search(m["text"]):
                out.append((sec.heading, f"introduces the show again: {excerpt(line, 60)}"))
            elif not closing and FAREWELL.search(m["text"]):
                out.append((sec.heading, f"says goodbye before the end: {excerpt(line, 60)}"))
    return out


def continuity_gate(parsed: ParsedScript, opens: bool = True, closes: bool = True, repeats: bool = False) -> Gate:
    """The show opens once and closes once; with `repeats`, no segment tells again a fact another told."""
    found = continuity_problems(parsed, opens, closes)
    if repeats:
        found += [(h, f"tells again what {e!r} told: {excerpt(s, 60)}") for h, s, e in repeats_across(parsed)]
    if not found:
        return Gate("continuity", 1.0, True)
    listed = "; ".join(f"{h!r} {p}" for h, p in found[:MAX_LISTED])
    return Gate("continuity", max(0.0, 1 - 0.5 * len(found)), False,
                f"{listed}: the show opens once, in the intro, and closes once, in the outro, and tells each "
                "fact once")


def evaluate_segment(part: str, budget: int, tolerance: float, n_findings: int, hosts: list[str], *,
                     opens: bool, closes: bool, draft: Draft | None = None,
                     incomplete: str | None = None, lang: str = "en") -> list[Gate]:
    """The gates one segment of a long episode must pass on its own: whole, both hosts, its budget,
    grounded, no residue, and no greeting or farewell out of place. Every failure is this segment's
    feedback, so each names the segment's own lines."""
    parsed = parse(part)
    turns = parsed.turns
    n_words = language.spoken_words(" ".join(t.text for t in turns), lang)  # as the whole's length gate counts
    low, high = round(budget * (1 - tolerance)), round(budget * (1 + tolerance))
    length = length_gate(n_words, low, high)
    if not length.passed:
        length.reason = (f"{n_words} spoken words; this segment's budget is {budget} words ({low}-{high}): "
                         f"write about {budget} words")
    gates = [complete_gate(turns, draft, incomplete), speakers_gate(turns, hosts, draft), length,
             grounded_gate(parsed, n_findings), residue_gate(parsed.body), continuity_gate(parsed, opens, closes)]
    for g in gates:
        g.hard = True
        g.passed = g.passed and g.score >= 1.0
    return gates
