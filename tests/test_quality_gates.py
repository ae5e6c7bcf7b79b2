"""Quality gates: a good local script passes; each crafted flaw is refused by its own gate; revisions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from podspool.stages import artifacts, fsio
from podspool.stages.base import (
    EpisodeInput,
    Finding,
    ResearchOutput,
    StageContext,
    StageResult,
    WriterOutput,
)
from podspool.stages.providers import registry
from podspool.stages.providers.local.writer import LocalWriter
from podspool.stages.registry import run_stage
from podspool.stages.script import format as script_format
from podspool.stages.script import quality
from podspool.stages.script.normalise import normalise
from podspool.stages.settings import ProductionSettings, QualitySettings, StageSettings

FACTS = [
    "Honeybees tell their nestmates where food is by dancing on the comb. The Austrian scientist Karl von "
    "Frisch worked out the meaning of these dances and shared a Nobel Prize in 1973 for the work.",
    "The angle of the waggle run compared with straight up on the comb shows the angle between the food "
    "and the sun. A bee that waggles straight up is pointing towards the sun.",
    "The length of the waggle run tells the distance to the food. Roughly one second of waggling stands "
    "for about one kilometre of flight, though colonies differ in their exact scale.",
    "For food very close to the hive, bees perform a round dance instead. Recruits then find the flowers "
    "partly by their scent, which the dancer carries on her body.",
]
RESEARCH = ResearchOutput(
    provider="local",
    findings=[Finding(text=t, source="notes/bees.md", location=f"paragraph {i}", score=10.0 - i,
                      title=f"Bee fact {i}") for i, t in enumerate(FACTS, 1)],
    citations=["notes/bees.md"], searched=["notes/bees.md"])
EPISODE = EpisodeInput(episode_id="ep_001_q", batch_id="q", number=1, topic="The honeybee waggle dance",
                       sources=("notes/bees.md",))


def _settings(threshold: float = 0.8, **production: object) -> StageSettings:
    limits = ProductionSettings.model_validate({"min_words": 100, "max_words": 1000, **production})
    return StageSettings(production=limits,
                         quality=QualitySettings(threshold=threshold, max_revisions=2))


def _shaped(reply: str) -> str:
    """What the production stage makes of a reply: normalised, with podspool's own Sources list."""
    return script_format.with_sources(normalise(reply, ["Alex", "Sam"], EPISODE.topic).body, RESEARCH.findings)


def _local_reply(settings: StageSettings) -> str:
    return LocalWriter().write(EPISODE, RESEARCH, ["Alex", "Sam"], [], StageContext(settings=settings)).script


def _good_script(settings: StageSettings) -> str:
    return _shaped(_local_reply(settings))


def _failed(script: str, settings: StageSettings | None = None) -> set[str]:
    report = quality.evaluate(script, RESEARCH, settings or _settings())
    assert not report.passed
    return {g.name for g in report.gates if not g.passed}


def _gate(script: str, name: str, settings: StageSettings | None = None) -> quality.Gate:
    report = quality.evaluate(script, RESEARCH, settings or _settings())
    return next(g for g in report.gates if g.name == name)


def test_the_local_script_passes_every_gate() -> None:
    settings = _settings()
    script = _good_script(settings)
    report = quality.evaluate(script, RESEARCH, settings)
    assert report.passed, report.reasons
    assert report.score == 1.0 and all(g.passed for g in report.gates)
    assert set(report.scores) == set(quality.HARD) | set(quality.SOFT)
    assert re.search(r"^\*\*Alex:\*\* ", script, re.M) and re.search(r"^\*\*Sam:\*\* ", script, re.M)
    # the Sources list is podspool's, numbered as the research is, with title and path
    assert "## Sources\n\n1. Bee fact 1: notes/bees.md (paragraph 1)\n" in script
    assert "4. Bee fact 4: notes/bees.md (paragraph 4)" in script


def test_the_local_writer_leaves_the_sources_to_podspool() -> None:
    assert "## Sources" not in _local_reply(_settings())


def test_length_gate() -> None:
    assert _failed(_good_script(_settings()), _settings(min_words=900)) == {"length"}
    assert "length" in _failed(_good_script(_settings()), _settings(max_words=120))


def test_a_missing_citation_lowers_the_score_and_threshold_decides() -> None:
    script = _good_script(_settings()).replace(" [2]", "")
    gate = _gate(script, "citations")
    assert gate.score == 0.75 and not gate.hard and "Segment" in gate.reason
    assert quality.evaluate(script, RESEARCH, _settings(threshold=0.7)).passed
    assert _failed(script, _settings(threshold=0.8)) == {"citations"}


def test_threshold_is_what_every_scored_gate_must_reach() -> None:
    script = _good_script(_settings()).replace(" [2]", "").replace(" [3]", "")
    report = quality.evaluate(script, RESEARCH, _settings())
    soft = [g.score for g in report.gates if not g.hard]
    assert report.score == min(soft) == 0.5 and report.mean > 0.8
    assert all(g.passed for g in report.gates if g.hard)
    for threshold in (0.3, report.score):
        assert quality.evaluate(script, RESEARCH, _settings(threshold=threshold)).passed
    assert not quality.evaluate(script, RESEARCH, _settings(threshold=report.score + 0.01)).passed


def test_a_hard_gate_refuses_whatever_the_threshold() -> None:
    script = _good_script(_settings()).replace(" [3]", " [9]")
    assert _failed(script, _settings(threshold=0.0)) == {"grounded"}
    gate = _gate(script, "grounded")
    assert gate.hard and "[9]" in gate.reason and "1 to 4" in gate.reason and "…" in gate.reason


def test_citations_are_needed_at_all() -> None:
    script = re.sub(r" \[\d\]", "", _good_script(_settings()))
    assert "grounded" in _failed(script, _settings(threshold=0.0))


@pytest.mark.parametrize("residue", ["{guest_name}", "TODO", "lorem ipsum", "[citation needed]",
                                     "<insert joke here>", "As an AI language model"])
def test_residue_gate(residue: str) -> None:
    script = _good_script(_settings()).replace("Let's start here:", f"Let's start here: {residue}", 1)
    assert _failed(script) == {"residue"}
    assert "Let's start here" in _gate(script, "residue").reason  # the line is quoted


def test_repetition_lowers_the_score_and_a_loop_is_refused() -> None:
    script = _good_script(_settings())
    line = next(x for x in script.splitlines() if x.startswith("**Sam:** Thanks"))
    once = script.replace("## Outro\n", f"## Outro\n\n{line}\n", 1)
    gate = _gate(once, "repetition")
    assert 0 < gate.score < 1 and "Thanks" in gate.reason
    body = script.split("## Sources")[0]
    looped = body + body.split("\n", 1)[1] + "## Sources" + script.split("## Sources")[1]
    assert "repetition" in _failed(looped)


def test_readability_gate() -> None:
    dense = ("Notwithstanding multidimensional epistemological considerations, institutionalised "
             "interdisciplinary methodological heterogeneity necessitates comprehensive operationalisation "
             "of unprecedentedly sophisticated organisational characterisations")
    script = re.sub(r"^(\*\*\w+:\*\*) .*?( \[\d\])?$", lambda m: f"{m[1]} {dense}{m[2] or ''}",
                    _good_script(_settings()), flags=re.M)
    assert "readability" in _failed(script)
    assert quality.readability_gate(dense).score < 1.0


def test_coverage_gate() -> None:
    script = _good_script(_settings())
    for fact in FACTS:
        for sentence in fact.split(". "):
            script = script.replace(sentence.rstrip("."), "We talked about something else entirely here")
    assert "coverage" in _failed(script)


def test_speakers_gate_wants_both_hosts_and_no_strangers() -> None:
    assert "speakers" in _failed(_good_script(_settings()).replace("**Sam:**", "**Bob:**"))
    assert "speakers" in _failed(_good_script(_settings()).replace("**Sam:**", "**Alex:**"))


def test_lines_not_understood_are_named_in_the_reason() -> None:
    reply = _local_reply(_settings()).replace("## Outro\n", "## Outro\n\n**Narrator:** And so it ends.\n", 1)
    draft = normalise(reply, ["Alex", "Sam"], EPISODE.topic)
    script = script_format.with_sources(draft.body, RESEARCH.findings)
    report = quality.evaluate(script, RESEARCH, _settings(), draft=draft)
    assert not report.passed and report.reasons[0].startswith("speakers: lines not understood")
    assert "'Narrator'" in report.reasons[0] and "And so it ends" in report.reasons[0]


class _Writer:
    """Returns the scripts given, one per call, and records the feedback it was given."""

    name = "local"
    dry_run = False

    def __init__(self, *scripts: str) -> None:
        self.scripts = list(scripts)
        self.feedback: list[list[str]] = []

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        self.feedback.append(list(feedback))
        return WriterOutput(script=self.scripts.pop(0))


def _production(tmp_path: Path, writer: _Writer, monkeypatch: pytest.MonkeyPatch,
                settings: StageSettings | None = None) -> StageResult:
    artifacts.save_research(tmp_path, RESEARCH, 0.0)
    monkeypatch.setattr(registry, "load", lambda table, name: writer)
    return run_stage("production", tmp_path, EPISODE, StageContext(settings=settings or _settings()))


def test_a_bad_draft_is_revised_with_the_gate_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _local_reply(_settings())
    writer = _Writer(good.replace("Let's start here:", "TODO Let's start here:"), good)
    result = _production(tmp_path, writer, monkeypatch)
    assert result.ok, result.error
    assert result.revisions == 1 and result.quality == 1.0 and result.quality_scores["residue"] == 1.0
    assert writer.feedback[0] == [] and writer.feedback[1][0].startswith("residue:")
    assert "TODO Let's start here" in writer.feedback[1][0]  # the line to fix is named
    assert (tmp_path / artifacts.SCRIPT_MD).read_text() == _shaped(good)
    doc = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    assert doc["accepted"] and doc["revisions"] == 1 and len(doc["history"]) == 2


def test_exhausted_revisions_fail_without_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _local_reply(_settings())
    drafts = [good.replace(" [1]", f" [{n}]") for n in (7, 8, 9)]  # three different invented citations
    writer = _Writer(*drafts)
    result = _production(tmp_path, writer, monkeypatch)
    assert not result.ok and not result.retryable
    assert "grounded" in (result.error or "") and "2 revision" in (result.error or "")
    assert "[9]" in (result.error or "")
    assert not (tmp_path / artifacts.SCRIPT_MD).exists()
    assert (tmp_path / "script.rejected.md").exists()
    assert fsio.read_json(tmp_path / artifacts.QUALITY_JSON)["accepted"] is False
    # a refused script is not reused: a retry writes again
    writer2 = _Writer(good)
    assert _production(tmp_path, writer2, monkeypatch).ok and writer2.feedback == [[]]


def test_a_revision_returning_the_same_script_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _local_reply(_settings()).replace(" [1]", " [9]")
    writer = _Writer(bad, bad + "\n", bad)  # the same script, up to white space
    result = _production(tmp_path, writer, monkeypatch)
    assert not result.ok and len(writer.scripts) == 1  # the third draft was never asked for
    assert "revision 1 returned the same script as draft 0" in (result.error or "")
    doc = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    assert doc["stopped_early"] and doc["history"][-1] == {"draft": 1, "same_as": 0}


def test_sim_writer_is_scored_but_never_refused(tmp_path: Path) -> None:
    artifacts.save_research(tmp_path, RESEARCH, 0.0)
    settings = _settings(provider="sim")
    settings.providers.sim.latency_ms = 0
    result = run_stage("production", tmp_path, EPISODE, StageContext(settings=settings))
    assert result.ok and result.revisions == 0 and result.quality is not None and result.quality < 1.0
    assert fsio.read_json(tmp_path / artifacts.QUALITY_JSON)["dry_run"] is True


def test_finished_production_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _production(tmp_path, _Writer(_good_script(_settings())), monkeypatch).ok
    again = _production(tmp_path, _Writer(), monkeypatch)  # a writer call would fail: no scripts left
    assert again.ok and again.reused and again.quality == 1.0


def test_no_findings_fails_before_any_writer_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = ResearchOutput(provider="local", findings=[], citations=[], searched=[], grounded=False)
    artifacts.save_research(tmp_path, empty, 0.0)
    writer = _Writer()
    monkeypatch.setattr(registry, "load", lambda table, name: writer)
    result = run_stage("production", tmp_path, EPISODE, StageContext(settings=_settings()))
    assert not result.ok and not result.retryable and "nothing to write from" in (result.error or "")
    assert writer.feedback == []  # never called


def test_a_cited_paraphrase_counts_as_coverage_an_uncited_one_does_not() -> None:
    findings = [Finding(text="Karl von Frisch decoded the honeybee dance language and won a Nobel Prize in 1973.",
                        source="a.md", score=1.0)]
    research = ResearchOutput(provider="local", findings=findings, citations=[], searched=[])
    paraphrase = "**Alex:** A scientist named von Frisch cracked how bees talk, and the Nobel committee noticed."
    assert quality.coverage_gate(script_format.parse(paraphrase + " [1]"), research).score == 1.0
    assert quality.coverage_gate(script_format.parse(paraphrase), research).score == 0.0
