"""Production stage: write the two-host script, hold it to the quality gates, revise, write it whole.

The revision loop and the script's shape live here, not in a writer, so every writer (local,
OpenAI-compatible, sim) is normalised the same way, gets the same gates and the same feedback, and
never writes the Sources list itself. The sim writer is a dry run of the plumbing: its scripts are
scored but never refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

from loguru import logger
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext, StageError, StageResult, Usage
from podspool.stages.costs import cost_of
from podspool.stages.providers import registry
from podspool.stages.script import format as script_format
from podspool.stages.script import language, quality, segments
from podspool.stages.script import normalise as script_normalise
from podspool.stages.settings import StageSettings

REJECTED_MD = "script.rejected.md"  # the last refused draft, kept for the operator who reads failed/


def _reused(folder: Path) -> StageResult | None:
    """The earlier result when script.md and a passing quality.json (written last) are both there."""
    qpath = folder / artifacts.QUALITY_JSON
    if not (qpath.exists() and (folder / artifacts.SCRIPT_MD).exists()):
        return None
    q = fsio.read_json(qpath)
    if not q.get("accepted", q.get("passed")):
        return None  # a refused script: a retry is a new attempt
    return StageResult(ok=True, cost_usd=float(q.get("cost_usd", 0.0)), quality=q.get("score"),
                       quality_scores=dict(q.get("scores", {})), revisions=int(q.get("revisions", 0)),
                       reused=True)


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    earlier = _reused(folder)
    if earlier:
        return earlier
    research, _ = artifacts.load_research(folder)
    settings = ctx.settings
    hosts = episode.show.names  # the cast, in order: one to four speakers
    writer = registry.load(registry.WRITERS, settings.production.provider)
    dry_run = writer.dry_run
    if not research.findings and not dry_run:
        # the grounded gate refuses every script without findings to cite: do not pay a writer to learn it
        raise StageError("the research found nothing to write from (no findings, not grounded): give the "
                         "episode sources or set research.sources_dir", retryable=False)
    target = segments.target_words(episode.show.minutes, settings.audio.words_per_minute)
    if target is not None:
        # the target's range is the length every writer is asked for and every gate holds it to
        settings = with_length(settings, *segments.words_range(target))
        ctx = dataclasses.replace(ctx, settings=settings)
        if segments.segmented(target) and hasattr(writer, "write_segment"):
            return run_segmented(folder, episode, ctx, cast(segments.SegmentWriter, writer), research, hosts,
                                 target, dry_run)
    usage: list[Usage] = []
    history: list[dict[str, Any]] = []
    feedback: list[str] = [f"a producer rejected the last script: {note}" for note in episode.feedback]
    drafts: dict[str, int] = {}  # script -> the draft that first produced it
    stopped = ""
    for number in range(settings.quality.max_revisions + 1):
        try:
            with ctx.call_slot:
                out = writer.write(episode, research, hosts, feedback, ctx)
        except StageError as exc:
            # earlier drafts were paid for too: the attempt's cost includes them
            exc.usage = usage + exc.usage
            exc.cost_usd = cost_of(exc.usage, settings) if exc.usage else exc.cost_usd
            raise
        usage.extend(out.usage)
        # One owner of the script's shape: whatever the writer's style, script.md is the normalised
        # body plus podspool's own Sources list, numbered as the research is.
        draft = script_normalise.normalise(out.script, episode.show, episode.title or episode.topic)
        script = script_format.with_sources(draft.body, research.findings)
        if script in drafts:
            # the model answered the feedback with the same script: another call would be paid for nothing
            stopped = f"revision {number} returned the same script as draft {drafts[script]}, so revising stopped"
            history.append({"draft": number, "same_as": drafts[script]})
            break
        drafts[script] = number
        with ctx.gate_lock:
            report = quality.evaluate(script, research, settings, draft=draft, incomplete=out.incomplete,
                                      long_form=target is not None, show=episode.show)
        history.append({"draft": number, "score": round(report.score, 3), "reasons": report.reasons,
                        "dropped": draft.dropped[:20], "title_supplied": draft.title_supplied,
                        "speakers": {k: v for k, v in draft.speakers.items() if k != v}})
        if report.passed or dry_run:
            break
        logger.info("production {}: draft {} scored {:.2f}, refused: {}", episode.episode_id, number,
                    report.score, "; ".join(report.reasons))
        feedback = report.reasons
    revisions = len(history) - 1
    cost = cost_of(usage, settings)
    accepted = report.passed or dry_run
    doc = {**report.to_dict(), "accepted": accepted, "dry_run": dry_run,
           "threshold": settings.quality.threshold, "revisions": revisions, "history": history,
           "stopped_early": stopped or None, "provider": writer.name,
           "usage": [u.to_dict() for u in usage], "cost_usd": cost}
    if not accepted:
        doc["reply"] = draft.raw  # what the model actually said, for the operator reading failed/
        fsio.write_text(folder / REJECTED_MD, script)
        fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
        reasons = "; ".join(report.reasons)
        early = f"; {stopped}" if stopped else ""
        raise StageError(f"quality gates refused the script after {revisions} revision(s) "
                         f"(score {report.score:.2f}, threshold {settings.quality.threshold}{early}): {reasons}",
                         retryable=False, cost_usd=cost, usage=usage)
    # script first, quality.json last: quality.json is the marker that the phase finished
    fsio.write_text(folder / artifacts.SCRIPT_MD, script)
    fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
    return StageResult(ok=True, cost_usd=cost, usage=usage, quality=round(report.score, 3),
                       quality_scores=report.scores, revisions=revisions,
                       details={"words": report.words, "quality_passed": report.passed})


def with_length(settings: StageSettings, low: int, high: int) -> StageSettings:
    """`settings` with the script's word range set to a target's (the writers' prompts and the length gate read it)."""
    production = settings.production.model_copy(update={"min_words": low, "max_words": high})
    return settings.model_copy(update={"production": production})


def run_segmented(folder: Path, episode: EpisodeInput, ctx: StageContext, writer: segments.SegmentWriter,
                  research: ResearchOutput, hosts: list[str], target: int, dry_run: bool) -> StageResult:
    """A long episode: an outline, one call per segment, gates per segment and on the whole, and
    revisions that re-ask only the segments that failed, each with its own reasons."""
    settings = ctx.settings
    title = episode.title or episode.topic
    findings = research.findings
    usage: list[Usage] = []

    def paid(exc: StageError) -> StageError:
        # earlier calls were paid for too: the attempt's cost includes them
        exc.usage = usage + exc.usage
        exc.cost_usd = cost_of(exc.usage, settings) if exc.usage else exc.cost_usd
        return exc

    outline = segments.kept_outline(folder, target, research)
    if outline is None:
        planned = segments.plan_outline(title, findings, target, episode.show.format)
        try:
            with ctx.call_slot:
                outline, used = writer.outline(episode, research, hosts, planned, ctx)
        except StageError as exc:
            raise paid(exc) from None
        usage.extend(used)
        segments.save_outline(folder, outline, research, used)
    numbers = [s.number for s in outline.segments]
    kept = segments.kept_drafts(folder, outline, research, hosts)
    parts: dict[int, str] = {n: str(d["text"]) for n, d in kept.items()}
    passed = set(kept)
    # a person's note on the last script (review): every segment hears it on its first ask
    notes = [f"a producer rejected the last script: {note}" for note in getattr(episode, "feedback", ())]
    feedback: dict[int, list[str]] = {n: list(notes) for n in numbers if notes}
    history: list[dict[str, Any]] = []
    asked = 0
    report: quality.QualityReport | None = None
    for round_ in range(settings.quality.max_revisions + 1):
        for seg in [s for s in outline.segments if s.number not in passed]:
            request = segments.SegmentRequest(outline, seg, segments.summary(parts, outline, seg.number),
                                              feedback.get(seg.number, []), parts.get(seg.number))
            try:
                with ctx.call_slot:
                    out = writer.write_segment(episode, research, hosts, request, ctx)
            except StageError as exc:
                raise paid(exc) from None
            asked += 1
            usage.extend(out.usage)
            draft = script_normalise.normalise(out.script, episode.show, title)
            part = segments.split_reply(draft.body, request)
            with ctx.gate_lock:
                gates = quality.evaluate_segment(part, seg.words, segments.SEGMENT_TOLERANCE, len(findings), hosts,
                                                 opens=request.first, closes=request.last, draft=draft,
                                                 incomplete=out.incomplete, lang=episode.show.language)
            reasons = [f"{g.name}: {g.reason}" for g in gates if not g.passed]
            ok = dry_run or not reasons
            parts[seg.number] = part
            (passed.add if ok else passed.discard)(seg.number)
            feedback[seg.number] = reasons
            segments.save_draft(folder, seg.number, {
                "key": segments.draft_key(outline, seg, research, hosts), "passed": ok, "reasons": reasons,
                "round": round_, "text": part, "reply": None if ok else draft.raw})
            history.append({"round": round_, "segment": seg.number, "budget": seg.words,
                            "words": _spoken_words(part, episode.show.language), "passed": ok, "reasons": reasons})
        script = script_format.with_sources(segments.assemble(title, parts, outline), findings)
        with ctx.gate_lock:
            report = quality.evaluate(script, research, settings, long_form=True, show=episode.show)
        if dry_run or (report.passed and passed.issuperset(numbers)):
            break
        blamed = blame(report, script, outline, parts, research, settings, episode)
        for n, reasons in blamed.items():
            feedback[n] = feedback.get(n, []) + reasons
            passed.discard(n)
        failing = [n for n in numbers if n not in passed]
        logger.info("production {}: round {} scored {:.2f}; segments to rewrite: {}", episode.episode_id, round_,
                    report.score, failing or "none the gates can name")
        if not failing:
            break  # the whole falls short in a way no one segment explains: another round would repeat it
    assert report is not None
    accepted = dry_run or (report.passed and passed.issuperset(numbers))
    cost = cost_of(usage, settings)
    revisions = max((h["round"] for h in history), default=0)
    doc = {**report.to_dict(), "accepted": accepted, "dry_run": dry_run, "threshold": settings.quality.threshold,
           "revisions": revisions, "target_words": target, "segments_asked": asked,
           "outline": outline.to_json(), "history": history, "provider": writer.name,
           "usage": [u.to_dict() for u in usage], "cost_usd": cost}
    if not accepted:
        failing = [n for n in numbers if n not in passed]
        reasons = report.reasons + [f"segment {n}: {r}" for n in failing for r in feedback.get(n, [])]
        doc["reasons"] = reasons
        fsio.write_text(folder / REJECTED_MD, script)
        fsio.write_json(folder / artifacts.QUALITY_JSON, doc)
        raise StageError(f"quality gates refused the script after {revisions} revision(s) (score {report.score:.2f}, "
                         f"threshold {settings.quality.threshold}; segments failing: {failing or 'none'}): "
                         + "; ".join(reasons[:8]), retryable=False, cost_usd=cost, usage=usage)
    fsio.write_text(folder / artifacts.SCRIPT_MD, script)
    fsio.write_json(folder / artifacts.QUALITY_JSON, doc)  # last: the marker that the phase finished
    segments.clear_drafts(folder)
    return StageResult(ok=True, cost_usd=cost, usage=usage, quality=round(report.score, 3),
                       quality_scores=report.scores, revisions=revisions,
                       details={"words": report.words, "quality_passed": report.passed,
                                "segments": len(numbers), "segments_asked": asked})


def _spoken_words(part: str, lang: str) -> int:
    return language.spoken_words(" ".join(t.text for t in script_format.parse_turns(part)), lang)


def blame(report: quality.QualityReport, script: str, outline: segments.Outline, parts: dict[int, str],
          research: ResearchOutput, settings: StageSettings, episode: EpisodeInput) -> dict[int, list[str]]:
    """The segments behind each failed whole-script gate, with what each must change."""
    failed = {g.name for g in report.gates if not g.passed}
    out: dict[int, list[str]] = {}
    by_heading = {outline.heading(s)[3:]: s.number for s in outline.segments}
    first, last = outline.segments[0].number, outline.segments[-1].number

    def segment_of(heading: str) -> int | None:
        low = heading.lower()
        if low.startswith(("intro", outline.intro_heading[3:].lower())):
            return first
        if low.startswith(("outro", outline.outro_heading[3:].lower())):
            return last
        return by_heading.get(heading)

    parsed = script_format.parse(script)
    if "length" in failed:
        low, high = settings.production.min_words, settings.production.max_words
        total = report.words
        off = sorted(((_spoken_words(parts[s.number], episode.show.language) - s.words, s) for s in outline.segments),
                     key=lambda x: x[0] if total > high else -x[0], reverse=total > high)
        goal = (low + high) // 2
        for diff, s in off:
            if (total > high and diff <= 0) or (total < low and diff >= 0) or (low <= total <= high):
                break
            out.setdefault(s.number, []).append(
                f"length: the episode has {total} spoken words for a target of {goal} ({low}-{high}); this "
                f"segment has {s.words + diff} of its {s.words}-word budget: write about {s.words} words")
            total -= diff
    if failed & {"repetition", "continuity"}:
        seen: dict[str, str] = {}
        for sec in parsed.sections:  # whole lines said again, in the same or another segment
            for line in sec.lines:
                m = script_format.TURN_RE.match(line)
                said = " ".join(quality.words(m["text"])).lower() if m else ""
                if len(said.split()) < quality.REPEAT_MIN_WORDS:
                    continue
                if said in seen and (n := segment_of(sec.heading)) is not None:
                    out.setdefault(n, []).append(f"repetition: {quality.excerpt(line, 80)} repeats a line of "
                                                 f"{seen[said]!r}: say something new instead")
                seen.setdefault(said, sec.heading)
        for heading, sentence, earlier in quality.repeats_across(parsed):
            n = segment_of(heading)
            if n is not None:
                out.setdefault(n, []).append(f"repetition: {quality.excerpt(sentence, 80)} repeats what {earlier!r} "
                                             "already says: say something new instead")
    if "continuity" in failed:  # its repeated facts are blamed with repetition's, below
        for heading, problem in quality.continuity_problems(parsed):
            n = segment_of(heading)
            if n is not None:
                out.setdefault(n, []).append(f"continuity: this segment {problem}: the show opens once and closes once")
    if "coverage" in failed:
        text = set(quality.tokens(parsed.body))
        for n in script_format.top_findings(research.findings):
            need = set(quality.tokens(research.findings[n - 1].text))
            if need and len(need & text) / len(need) < quality.FINDING_OVERLAP and n not in parsed.cited:
                owner = next((s.number for s in outline.segments if n in s.findings), None)
                if owner is not None:
                    out.setdefault(owner, []).append(f"coverage: discuss finding {n} and cite it as [{n}]")
    if "citations" in failed:
        for sec in parsed.sections:
            if sec.is_segment and not script_format.cited_numbers("\n".join(sec.lines)):
                n = segment_of(sec.heading)
                if n is not None:
                    out.setdefault(n, []).append("citations: this segment cites no finding: cite the findings "
                                                 "it discusses, as [n]")
    # the rest (balance, readability, a format's own gates) each segment has on its own: judge each
    alone = failed - {"length", "repetition", "continuity", "coverage", "citations", "complete", "speakers",
                      "grounded", "residue"}
    if alone:
        for s in outline.segments:
            own = quality.evaluate(parts[s.number], research, settings, show=episode.show)
            for g in own.gates:
                if g.name in alone and g.score < settings.quality.threshold:
                    out.setdefault(s.number, []).append(f"{g.name}: {g.reason}")
    return out
