"""Long-form episodes: the target length in words, the outline, each segment's budget, and the drafts kept.

An episode with a target beyond one call's reach is planned first (segments, each with its findings
and a word budget adding up to the target), then written segment by segment; the first segment also
opens the show and the last one closes it, so the calls are the outline plus one per segment. Each
segment call gets the outline, a short summary of what the other segments say, its findings and its
budget in words. What passed is kept in the episode folder (`draft_*.json`, written whole), keyed by
what it was written from, so a retry of the stage asks only for what is missing or failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from podspool.stages import fsio
from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, Usage, WriterOutput
from podspool.stages.script.format import SHAPES, sections, segment_heading
from podspool.stages.show import Format
from podspool.stages.sources.passages import split_sentences
from podspool.stages.words import words

TOLERANCE = 0.10  # the whole script: the target's words +/- 10% are on target
SEGMENT_TOLERANCE = 0.20  # one segment may miss its budget by more; the whole is what a listener hears
# A reply of more than about this many words loses the thread, cuts at the token limit, and costs a
# whole script when one passage is weak: beyond it the episode is written in segments.
SINGLE_CALL_WORDS = 1200
SEGMENT_WORDS = 650  # each segment call's budget, about four minutes of speech
INTRO_WORDS, OUTRO_WORDS = 90, 70
SUMMARY_WORDS = 28  # per segment in the "already said" summary: enough to avoid repeats, short for the prompt
MATERIAL_MARGIN = 1.15  # findings' words per target word that research gathers, so the writer can choose
MAX_FINDINGS = 400  # findings research may keep for the longest episode (180 minutes is about 30,000 words)
OUTLINE_JSON = "draft_outline.json"
_UNSAFE_LABEL = re.compile(r"[\[\]{}<>*#`\"]")  # a heading is spoken and printed: no markup, no placeholders
DRAFT_PREFIX = "draft_segment_"


def target_words(minutes: float | None, words_per_minute: int) -> int | None:
    """The spoken words of a `minutes`-long episode, or None when the show sets no target."""
    return None if minutes is None else max(1, round(minutes * words_per_minute))


def words_range(target: int, tolerance: float = TOLERANCE) -> tuple[int, int]:
    return math.ceil(target * (1 - tolerance)), math.floor(target * (1 + tolerance))


def segmented(target: int | None) -> bool:
    return target is not None and target > SINGLE_CALL_WORDS


def enough_findings(ranked: Sequence[Finding], target: int, at_least: int) -> list[Finding]:
    """The best findings, as many as a `target`-word episode needs: their words make the target with
    MATERIAL_MARGIN to choose from (a longer episode needs more to say), and never fewer than `at_least`."""
    out: list[Finding] = []
    total = 0
    for f in ranked:
        if len(out) >= at_least and total >= target * MATERIAL_MARGIN:
            break
        out.append(f)
        total += len(words(f.text))
    return out


def segment_count(target: int) -> int:
    return max(2, round((target - INTRO_WORDS - OUTRO_WORDS) / SEGMENT_WORDS))


@dataclass
class SegmentPlan:
    number: int  # from 1
    label: str
    findings: list[int]  # research numbers this segment discusses
    words: int  # its budget; the first carries the intro's words too, the last the outro's


@dataclass
class Outline:
    title: str
    target: int
    segments: list[SegmentPlan]
    planned_by: str = "podspool"  # "podspool" (from the findings) or the writer that planned it
    notes: list[str] = field(default_factory=list)  # what was changed in a model's outline, and why
    format: Format = "conversation"  # its headings are the format's (they name the chapters)

    def heading(self, segment: SegmentPlan) -> str:
        return segment_heading(segment.number, segment.label, self.format)

    @property
    def intro_heading(self) -> str:
        return f"## {SHAPES[self.format].intro}"

    @property
    def outro_heading(self) -> str:
        return f"## {SHAPES[self.format].outro}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outline:
        fmt = doc.get("format", "conversation")
        return cls(title=str(doc["title"]), target=int(doc["target"]), planned_by=str(doc.get("planned_by", "")),
                   segments=[SegmentPlan(**s) for s in doc["segments"]], notes=list(doc.get("notes", [])),
                   format=fmt if fmt in SHAPES else "conversation")

    def text(self) -> str:
        """The outline as the segment prompts show it."""
        lines = []
        for s in self.segments:
            frame = " (opens the show)" if s.number == 1 else " (closes the show)" if s.number == len(self.segments) else ""
            cites = ", ".join(map(str, s.findings)) or "none"
            lines.append(f"{s.number}. {s.label}{frame}: findings {cites}; about {s.words} words")
        return "\n".join(lines)


def plan_outline(title: str, findings: Sequence[Finding], target: int, fmt: Format = "conversation") -> Outline:
    """An outline from the findings alone: research order split into equal runs, budgets adding up to `target`."""
    k = segment_count(target)
    numbers = list(range(1, len(findings) + 1))
    groups: list[list[int]] = [[] for _ in range(k)]
    for i, n in enumerate(numbers):
        groups[i * k // max(1, len(numbers))].append(n)
    if numbers:
        for i, g in enumerate(groups):  # fewer findings than segments: each segment still has one to discuss
            if not g:
                g.append(numbers[i % len(numbers)])
    plans = [SegmentPlan(i + 1, _label(findings, g, i + 1), g, 0) for i, g in enumerate(groups)]
    return Outline(title=title, target=target, segments=budgets(plans, target), format=fmt)


def budgets(plans: list[SegmentPlan], target: int) -> list[SegmentPlan]:
    """Budgets in proportion to the ones given (equal when none are), summing to `target` exactly,
    the intro's and outro's words on the first and last segment."""
    body = max(len(plans) * 50, target - INTRO_WORDS - OUTRO_WORDS)
    weights = [max(1, p.words) for p in plans] if all(p.words > 0 for p in plans) else [1] * len(plans)
    total = sum(weights)
    shares = [body * w // total for w in weights]
    if max(shares) > 2 * SEGMENT_WORDS:  # a writer's lopsided plan: no segment beyond a call's reach
        shares = [body // len(plans)] * len(plans)
    shares[-1] += body - sum(shares)
    out = [SegmentPlan(p.number, p.label, list(p.findings), s) for p, s in zip(plans, shares, strict=True)]
    out[0].words += INTRO_WORDS
    out[-1].words += OUTRO_WORDS
    out[-1].words += target - sum(p.words for p in out)  # rounding, and a target below the framing's words
    return out


def _label(findings: Sequence[Finding], numbers: list[int], i: int) -> str:
    if not numbers:
        return f"Part {i}"
    f = findings[numbers[0] - 1]
    text = f.title if f.title and len(f.title.split()) <= 8 else " ".join(words(f.text)[:5])
    return " ".join(text.split())[:60] or f"Part {i}"


def outline_from_reply(doc: Any, planned: Outline, n_findings: int) -> Outline:
    """A writer's outline, checked: its labels and finding groups where they hold, podspool's plan where
    they do not; the segment count and the budgets' sum are podspool's (they follow from the target)."""
    notes: list[str] = []
    raw = doc.get("segments") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        return Outline(planned.title, planned.target, planned.segments, "podspool",
                       ["the writer's outline had no segments: podspool's own plan was used"], planned.format)
    k = len(planned.segments)
    if len(raw) != k:
        notes.append(f"the writer planned {len(raw)} segments; the target needs {k}")
    plans: list[SegmentPlan] = []
    for i in range(k):
        item = raw[i] if i < len(raw) and isinstance(raw[i], dict) else {}
        ours = planned.segments[i]
        label = " ".join(_UNSAFE_LABEL.sub("", str(item.get("label") or "")).split())[:60].strip(" .:-")
        if sum(c.isalpha() for c in label) < 3:  # no label at all, or a placeholder's remains
            label = ours.label
        cited = item.get("findings")
        good = sorted({int(n) for n in cited if isinstance(n, int) and 1 <= n <= n_findings}) if isinstance(cited, list) else []
        if not good:
            notes.append(f"segment {i + 1}: no valid findings in the writer's outline, podspool's used")
        words_ = item.get("words")
        plans.append(SegmentPlan(i + 1, label, good or ours.findings,
                                 int(words_) if isinstance(words_, int) and 50 <= words_ <= 5000 else 0))
    covered = {n for p in plans for n in p.findings}
    missing = [n for n in range(1, n_findings + 1) if n not in covered]
    for j, n in enumerate(missing):  # every finding belongs somewhere: the coverage gate asks for it
        plans[j * k // len(missing)].findings.append(n)
    if missing:
        notes.append(f"findings {missing[:10]} were in no segment: added")
    return Outline(planned.title, planned.target, budgets(plans, planned.target), "writer", notes, planned.format)


# ---- what a segment call is given ---------------------------------------------------------------


@dataclass
class SegmentRequest:
    outline: Outline
    segment: SegmentPlan
    summary: str  # what the other segments already say
    feedback: list[str] = field(default_factory=list)  # this segment's failed gates, for a revision
    previous: str | None = None  # its last draft, when revising

    @property
    def first(self) -> bool:
        return self.segment.number == 1

    @property
    def last(self) -> bool:
        return self.segment.number == len(self.outline.segments)

    @property
    def heading(self) -> str:
        return self.outline.heading(self.segment)


class SegmentWriter(Protocol):
    """A writer that can plan and write a long episode in parts (the model writers)."""

    name: str

    def outline(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str], planned: Outline,
                ctx: StageContext) -> tuple[Outline, list[Usage]]: ...

    def write_segment(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
                      request: SegmentRequest, ctx: StageContext) -> WriterOutput: ...


def summary(parts: dict[int, str], outline: Outline, exclude: int) -> str:
    """What the segments other than `exclude` say, a line each: their findings and opening sentences."""
    lines = []
    for s in outline.segments:
        text = parts.get(s.number)
        if s.number == exclude or not text:
            continue
        said: list[str] = []
        for sentence in split_sentences(" ".join(_spoken_lines(text))):
            if len(words(" ".join(said))) >= SUMMARY_WORDS:
                break
            said.append(sentence)
        lines.append(f"- Segment {s.number} ({s.label}, findings {', '.join(map(str, s.findings))}): "
                     + " ".join(" ".join(said).split()[:SUMMARY_WORDS + 10]))
    return "\n".join(lines) or "(nothing yet: this is the first segment written)"


def _spoken_lines(text: str) -> list[str]:
    return [line.split(":**", 1)[1] for line in text.splitlines() if line.startswith("**") and ":**" in line]


# ---- assembling and keeping segments --------------------------------------------------------------


def split_reply(body: str, request: SegmentRequest) -> str:
    """A normalised reply as this segment's part of the script: its heading over its turns, with the
    intro before it (first segment) and the outro after it (last), whatever headings the writer used."""
    intro: list[str] = []
    main: list[str] = []
    outro: list[str] = []
    outline = request.outline
    opening = (outline.intro_heading[3:].lower(), "intro", "opening", "welcome", "headlines")
    closing = (outline.outro_heading[3:].lower(), "outro", "closing", "conclusion", "wrap", "sign")
    for sec in sections(body):
        turns = [line for line in sec.lines if line.startswith("**")]
        h = sec.heading.lower()
        if request.first and h.startswith(opening) and not main:
            intro += turns
        elif request.last and h.startswith(closing):
            outro += turns
        else:
            main += turns
    out: list[str] = []
    if intro:
        out += [outline.intro_heading, "", *_spaced(intro)]
    out += [request.heading, "", *_spaced(main)]
    if outro:
        out += [outline.outro_heading, "", *_spaced(outro)]
    return "\n".join(out).rstrip() + "\n"


def _spaced(turns: list[str]) -> list[str]:
    return [x for t in turns for x in (t, "")]


def assemble(title: str, parts: dict[int, str], outline: Outline) -> str:
    """The script body: the title, then every segment's part in order."""
    return "\n".join([f"# {title}", "", *(parts[s.number].rstrip() + "\n" for s in outline.segments)])


def draft_key(outline: Outline, segment: SegmentPlan, research: ResearchOutput, hosts: Sequence[str]) -> str:
    """What a segment was written from: a kept draft is reused only when all of it is the same."""
    doc = {"outline": outline.to_json(), "segment": segment.number, "hosts": list(hosts),
           "findings": [f.text for f in research.findings]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def draft_path(folder: Path, number: int) -> Path:
    return folder / f"{DRAFT_PREFIX}{number:03d}.json"


def save_draft(folder: Path, number: int, doc: dict[str, Any]) -> None:
    fsio.write_json(draft_path(folder, number), doc)


def kept_drafts(folder: Path, outline: Outline, research: ResearchOutput, hosts: Sequence[str]) -> dict[int, dict[str, Any]]:
    """The drafts of an earlier attempt that passed their gates and were written from the same inputs."""
    out: dict[int, dict[str, Any]] = {}
    for s in outline.segments:
        path = draft_path(folder, s.number)
        try:
            doc = fsio.read_json(path)
        except (OSError, ValueError):
            continue
        if doc.get("passed") and doc.get("key") == draft_key(outline, s, research, hosts):
            out[s.number] = doc
    return out


def kept_outline(folder: Path, target: int, research: ResearchOutput) -> Outline | None:
    try:
        doc = fsio.read_json(folder / OUTLINE_JSON)
        if doc.get("target") != target or doc.get("findings") != _findings_key(research):
            return None
        return Outline.from_json(doc["outline"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_outline(folder: Path, outline: Outline, research: ResearchOutput, usage: list[Usage]) -> None:
    fsio.write_json(folder / OUTLINE_JSON, {"target": outline.target, "findings": _findings_key(research),
                                            "outline": outline.to_json(), "usage": [u.to_dict() for u in usage]})


def _findings_key(research: ResearchOutput) -> str:
    return hashlib.sha256("\n".join(f.text for f in research.findings).encode()).hexdigest()[:20]


def clear_drafts(folder: Path) -> None:
    """Once script.md and quality.json (which keeps the outline) are written the drafts have served."""
    for path in [*folder.glob(f"{DRAFT_PREFIX}*.json"), folder / OUTLINE_JSON]:
        fsio.unlink_quietly(path)

