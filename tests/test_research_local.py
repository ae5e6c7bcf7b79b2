"""Local research: real files, BM25 ranking, locations, publishable names, no invented findings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from loguru import logger
from podspool.stages import artifacts
from podspool.stages.base import EpisodeInput, StageContext
from podspool.stages.registry import run_stage
from podspool.stages.settings import ResearchSettings, StageSettings
from podspool.stages.sources.passages import html_passages, text_passages

TIDES = """# Tides

## The Moon

Tides are caused mainly by the gravity of the Moon pulling on the oceans of the Earth.

## Unrelated

Bread is baked from flour, water, yeast and salt in a hot oven for most of an hour.

## Spring tides

When the Sun and the Moon line up, their tides add together into larger spring tides.
"""


def _ctx(root: Path, **research: object) -> StageContext:
    settings = ResearchSettings.model_validate({"source_roots": [str(root)], **research})
    return StageContext(settings=StageSettings(research=settings))


def _episode(*sources: str, topic: str = "Ocean tides and the Moon") -> EpisodeInput:
    return EpisodeInput(episode_id="ep_001_t", batch_id="t", number=1, topic=topic, sources=sources)


def test_text_passages_keep_headings_and_line_numbers() -> None:
    ps = text_passages(TIDES, "t.md")
    assert [p.heading for p in ps] == ["The Moon", "Unrelated", "Spring tides"]
    assert ps[0].location == "paragraph 1, line 5"
    assert ps[2].location.startswith("paragraph 3")


def test_html_is_reduced_to_text_blocks() -> None:
    html = ("<html><head><title>x</title><script>var a = 'no';</script></head><body><h2>Moon</h2>"
            "<p>The <b>Moon</b> raises tides &amp; so does the Sun, more weakly than the Moon.</p>"
            "<div>Second block of text that is long enough to count.</div></body></html>")
    ps = html_passages(html, "t.html")
    assert [p.text for p in ps] == ["The Moon raises tides & so does the Sun, more weakly than the Moon.",
                                    "Second block of text that is long enough to count."]
    assert ps[0].heading == "Moon" and ps[0].location == "paragraph 1"


def test_research_ranks_relevant_paragraphs_first(tmp_path: Path) -> None:
    (tmp_path / "tides.md").write_text(TIDES)
    folder = tmp_path / "ep"
    folder.mkdir()
    result = run_stage("research", folder, _episode("tides.md"), _ctx(tmp_path, max_findings=2))
    assert result.ok, result.error
    out, doc = artifacts.load_research(folder)
    assert out.provider == "local" and out.grounded
    assert len(out.findings) == 2
    assert all("Bread" not in f.text for f in out.findings)
    assert out.findings[0].source == "tides.md" and out.findings[0].location.startswith("paragraph")
    assert out.citations == ["tides.md"]
    assert out.searched == ["tides.md"] and doc["sources"][0]["name"] == "tides.md"
    assert doc["cost_usd"] == 0.0 and doc["usage"][0]["api"] == "local"


def test_sources_dir_adds_only_matching_passages(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "tides.md").write_text(TIDES)
    (lib / "cats.txt").write_text("Cats sleep for most of the day and hunt at dawn and dusk.\n")
    folder = tmp_path / "ep"
    folder.mkdir()
    assert run_stage("research", folder, _episode(), _ctx(tmp_path, sources_dir=str(lib))).ok
    out, _ = artifacts.load_research(folder)
    assert {f.source for f in out.findings} == {"tides.md"}  # named within the folder, never by its path
    assert "cats.txt" in out.searched


def test_sources_dir_is_confined_by_what_its_files_are(tmp_path: Path) -> None:
    """A link out of the folder (to a file or a folder) and a FIFO are left out, never read or waited on."""
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "ledger.md").write_text("# Ledger\n\nThe moon tides ledger balance is PRIVATE-LEDGER-42.\n")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "tides.md").write_text(TIDES)
    (lib / "linked.md").symlink_to(secret / "ledger.md")
    (lib / "shelf").symlink_to(secret, target_is_directory=True)
    os.mkfifo(lib / "pipe.md")
    folder = tmp_path / "ep"
    folder.mkdir()
    warnings = _warnings_of(folder, _ctx(tmp_path, sources_dir=str(lib)))
    text = (folder / "research.json").read_text()
    assert "PRIVATE-LEDGER" not in text and "tides.md" in text
    assert any("linked.md" in w and "left out" in w for w in warnings)
    assert any("pipe.md" in w for w in warnings)


def _warnings_of(folder: Path, ctx: StageContext) -> list[str]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        assert run_stage("research", folder, _episode(), ctx).ok
    finally:
        logger.remove(sink)
    return lines


def test_no_sources_is_not_grounded_and_invents_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    folder.mkdir()
    result = run_stage("research", folder, _episode(), _ctx(tmp_path))
    assert result.ok and result.details["grounded"] is False
    out, _ = artifacts.load_research(folder)
    assert out.findings == [] and out.citations == [] and not out.grounded


def test_ungrounded_research_is_a_warning_but_not_in_a_dry_run(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "sim").mkdir()
    assert any("no grounded findings" in w for w in _warnings_of(tmp_path / "local", _ctx(tmp_path)))
    # sim's findings are made up by design: a warning on every dry-run episode would only be noise
    assert _warnings_of(tmp_path / "sim", _ctx(tmp_path, provider="sim")) == []


def test_a_source_outside_the_roots_fails_without_retry(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    folder.mkdir()
    result = run_stage("research", folder, _episode("/etc/hostname.md"), _ctx(tmp_path))
    assert not result.ok and not result.retryable
    assert "outside the allowed source roots" in (result.error or "")
    assert not (folder / artifacts.RESEARCH_JSON).exists()


def test_finished_research_is_reused_not_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tides.md").write_text(TIDES)
    folder = tmp_path / "ep"
    folder.mkdir()
    assert run_stage("research", folder, _episode("tides.md"), _ctx(tmp_path)).ok
    (tmp_path / "tides.md").unlink()  # a provider call now would fail
    again = run_stage("research", folder, _episode("tides.md"), _ctx(tmp_path))
    assert again.ok and again.reused and again.cost_usd == 0.0
