"""Quality gates for an episode script: each scores 0..1 and states its rule; the episode score is the mean.

A script passes when the mean reaches `quality.threshold` and no gate's rule is broken: a mean
alone would let one fatal flaw (a template placeholder read aloud, an uncited segment) through
on the strength of the others. Each failed gate gives a reason a writer can act on in a revision.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from podspool.stages.base import ResearchOutput
from podspool.stages.script_format import (
    TURN_RE,
    cited_numbers,
    parse_turns,
    sections,
    source_numbers,
    spoken,
)
from podspool.stages.settings import StageSettings
from podspool.stages.words import flesch_reading_ease, tokens, words

READABILITY_RANGE = (30.0, 100.0)  # Flesch: below 30 is academic prose, above 100 is baby talk
COVERAGE_TOP = 5  # how many of the best findings the script must carry
COVERAGE_MIN = 0.6  # share of those top findings that must be covered
FINDING_OVERLAP = 0.5  # share of a finding's content words that must appear for it to count as covered
REPEAT_MIN_WORDS = 8  # shorter lines ("Exactly.", "Right, go on.") may recur naturally

RESIDUE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("template braces", re.compile(r"[{}]")),
    ("TODO/TBD/FIXME/XXX", re.compile(r"\b(?:TODO|TBD|FIXME|XXX)\b")),
    ("lorem ipsum", re.compile(r"\blorem\b|\bipsum\b", re.I)),
    ("bracketed placeholder", re.compile(r"\[(?!\s*\d)[^\]\n]{1,80}\]")),  # [citation needed], [insert name]
    ("angle-bracket placeholder", re.compile(r"<[^<>\n]{1,80}>")),
    ("language-model boilerplate", re.compile(r"\bas an ai\b|\blanguage model\b|\bI cannot (?:help|assist)\b", re.I)),
]


@dataclass
class Gate:
    name: str
    score: float
    passed: bool
    reason: str = ""  # why it failed, phrased as an instruction for the revision


@dataclass
class QualityReport:
    score: float
    passed: bool
    gates: list[Gate] = field(default_factory=list)
    words: int = 0

    @property
    def scores(self) -> dict[str, float]:
        return {g.name: round(g.score, 3) for g in self.gates}

    @property
    def reasons(self) -> list[str]:
        return [f"{g.name}: {g.reason}" for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 3), "passed": self.passed, "words": self.words,
                "scores": self.scores, "gates": [asdict(g) for g in self.gates], "reasons": self.reasons}


def evaluate(script: str, research: ResearchOutput, settings: StageSettings) -> QualityReport:
    """Run every gate on `script` (one episode at a time; pure, so cheap to repeat per revision)."""
    hosts = settings.production.hosts
    spoken_text = " ".join(t.text for t in parse_turns(script))
    n_words = len(words(spoken_text))
    gates = [
        length_gate(n_words, settings.production.min_words, settings.production.max_words),
        format_gate(script, hosts),
        citation_gate(script),
        residue_gate(script),
        repetition_gate(script),
        readability_gate(spoken_text),
        coverage_gate(script, research),
    ]
    score = sum(g.score for g in gates) / len(gates)
    passed = score >= settings.quality.threshold and all(g.passed for g in gates)
    return QualityReport(score=score, passed=passed, gates=gates, words=n_words)


def length_gate(n_words: int, min_words: int, max_words: int) -> Gate:
    if n_words < min_words:
        return Gate("length", n_words / min_words, False,
                    f"{n_words} spoken words, below the minimum of {min_words}: add substance from the findings")
    if n_words > max_words:
        return Gate("length", max_words / n_words, False,
                    f"{n_words} spoken words, above the maximum of {max_words}: cut the weakest segments")
    return Gate("length", 1.0, True)


def format_gate(script: str, hosts: list[str]) -> Gate:
    speakers = Counter(m["host"].strip() for line in script.splitlines() if (m := TURN_RE.match(line)))
    problems: list[str] = []
    missing = [h for h in hosts if not speakers.get(h)]
    if missing:
        problems.append(f"no '**Host:** text' lines for {', '.join(missing)}")
    strangers = sorted(set(speakers) - set(hosts))
    if strangers:
        problems.append(f"lines by unknown speakers {', '.join(strangers)} (hosts are {', '.join(hosts)})")
    score = 1.0 - len(problems) / 2
    return Gate("format", score, not problems, "; ".join(problems))


def citation_gate(script: str) -> Gate:
    secs = sections(script)
    listed = source_numbers(script)
    segments = [s for s in secs if s.is_segment]
    if not segments:  # a writer that ignored the headings: judge the script as one segment
        segments = [s for s in secs if not s.is_sources]
    uncited: list[str] = []
    dangling: set[int] = set()
    for s in segments:
        cited = cited_numbers("\n".join(s.lines))
        dangling |= cited - listed
        if not cited & listed:
            uncited.append(s.heading or "(untitled)")
    problems: list[str] = []
    if not listed:
        problems.append("there is no numbered '## Sources' list")
    if uncited:
        problems.append(f"segments without a citation of a listed source: {', '.join(uncited[:5])}")
    if dangling:
        problems.append(f"citations {sorted(dangling)[:5]} have no entry in the Sources list")
    score = (len(segments) - len(uncited)) / len(segments) if segments else 0.0
    if dangling:
        score = min(score, 0.5)
    return Gate("citations", score, not problems, "; ".join(problems))


def residue_gate(script: str) -> Gate:
    hits: list[str] = []
    for label, pattern in RESIDUE_PATTERNS:
        m = pattern.search(script)
        if m:
            hits.append(f"{label} ({m.group(0)[:30]!r})")
    if hits:
        return Gate("residue", 0.0, False, f"remove template/placeholder residue: {', '.join(hits)}")
    return Gate("residue", 1.0, True)


def _units(script: str) -> list[str]:
    """Paragraphs to compare, normalised: blank-line blocks, with each spoken line a paragraph of its own."""
    units: list[str] = []
    for block in re.split(r"\n\s*\n", script):
        lines = block.splitlines()
        pieces = lines if any(TURN_RE.match(line) for line in lines) else [block]
        for piece in pieces:
            m = TURN_RE.match(piece)
            norm = " ".join(w.lower() for w in words(spoken(m["text"] if m else piece)))
            if len(norm.split()) >= REPEAT_MIN_WORDS:
                units.append(norm)
    return units


def repetition_gate(script: str) -> Gate:
    units = _units(script)
    counts = Counter(units)
    repeated = [u for u, n in counts.items() if n > 1]
    if not repeated:
        return Gate("repetition", 1.0, True)
    extra = sum(n - 1 for n in counts.values())
    return Gate("repetition", max(0.0, 1 - extra / max(1, len(units))), False,
                f"{len(repeated)} paragraph(s) repeated, e.g. {repeated[0][:60]!r}: say each thing once")


def readability_gate(spoken_text: str) -> Gate:
    low, high = READABILITY_RANGE
    if not words(spoken_text):
        return Gate("readability", 0.0, False, "no spoken text to read")
    ease = flesch_reading_ease(spoken_text)
    if low <= ease <= high:
        return Gate("readability", 1.0, True)
    distance = low - ease if ease < low else ease - high
    hint = "use shorter sentences and plainer words" if ease < low else "write fuller sentences"
    return Gate("readability", max(0.0, 1 - distance / 40), False,
                f"Flesch reading ease {ease:.0f}, outside {low:.0f}-{high:.0f}: {hint}")


def coverage_gate(script: str, research: ResearchOutput) -> Gate:
    top = sorted(research.findings, key=lambda f: -f.score)[:COVERAGE_TOP]
    if not top:
        return Gate("coverage", 0.0, False,
                    "research has no findings to cover (not grounded): give the episode sources "
                    "or set research.sources_dir")
    script_tokens = set(tokens(script))
    missed: list[int] = []
    for i, f in enumerate(top, 1):
        needed = set(tokens(f.text))
        if needed and len(needed & script_tokens) / len(needed) < FINDING_OVERLAP:
            missed.append(i)
    score = (len(top) - len(missed)) / len(top)
    if score >= COVERAGE_MIN:
        return Gate("coverage", score, True)
    return Gate("coverage", score, False,
                f"only {len(top) - len(missed)} of the top {len(top)} findings are covered: "
                f"discuss findings {', '.join(map(str, missed))}")
