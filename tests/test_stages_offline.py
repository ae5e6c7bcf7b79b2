"""research -> production -> audio for one example episode, offline, on real files."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, StageContext, StageError
from podspool.stages.providers.sim import SimProvider
from podspool.stages.registry import run_stage
from podspool.stages.settings import ProvidersSettings, ResearchSettings, SimSettings, StageSettings
from podspool.stages.sources.resolve import check_sources

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "examples" / "small_batch.json"


def test_example_manifest_names_ten_readable_sources() -> None:
    doc = json.loads(MANIFEST.read_text())
    assert doc["strategy"] == "small_batch" and len(doc["episodes"]) == 10
    specs = [s for e in doc["episodes"] for s in e["sources"]]
    assert check_sources(specs, [REPO / "examples"]) == []  # relative to the manifest, as submit reads them


@pytest.mark.parametrize("number", [1])
def test_one_example_episode_end_to_end(tmp_path: Path, number: int) -> None:
    entry = next(e for e in json.loads(MANIFEST.read_text())["episodes"] if e["number"] == number)
    episode = EpisodeInput(episode_id=f"ep_{number:03d}_example_small", batch_id="example_small",
                           number=number, topic=entry["topic"], title=entry.get("title"),
                           sources=tuple(entry["sources"]))
    ctx = StageContext(settings=StageSettings(research=ResearchSettings(source_roots=[str(REPO / "examples")])))

    research = run_stage("research", tmp_path, episode, ctx)
    assert research.ok and research.details["grounded"], research.error
    out, _ = artifacts.load_research(tmp_path)
    name = Path(entry["sources"][0]).name  # a source is published by its file name, never its path
    assert out.findings and all(f.source == name for f in out.findings)

    production = run_stage("production", tmp_path, episode, ctx)
    assert production.ok, production.error
    assert production.quality is not None and production.quality >= ctx.settings.quality.threshold
    script = (tmp_path / artifacts.SCRIPT_MD).read_text()
    assert "**Alex:**" in script and "**Sam:**" in script and name in script
    assert fsio.read_json(tmp_path / artifacts.QUALITY_JSON)["passed"] is True

    audio = run_stage("audio", tmp_path, episode, ctx)
    assert audio.ok, audio.error
    with wave.open(str(tmp_path / artifacts.AUDIO_WAV)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds > 60  # a real episode, not a beep
    assert fsio.read_json(tmp_path / artifacts.AUDIO_JSON)["seconds"] == pytest.approx(seconds, abs=0.01)

    # a restart after every phase finished pays for nothing again
    again = [run_stage(s, tmp_path, episode, ctx) for s in ("research", "production", "audio")]
    assert all(r.ok and r.reused and r.cost_usd == 0.0 for r in again)


def _sim_failures(error_rate: float, seed: int | None, n: int = 40) -> list[bool]:
    """Which of n episodes' sim research calls fail by injection."""
    sim = SimSettings(latency_ms=0, error_rate=error_rate, seed=seed)
    ctx = StageContext(settings=StageSettings(providers=ProvidersSettings(sim=sim)))
    provider, failed = SimProvider(), []
    for i in range(n):
        episode = EpisodeInput(episode_id=f"ep_{i:03d}", batch_id="b", number=i + 1, topic=f"Topic {i}")
        try:
            provider.research(episode, ctx)
            failed.append(False)
        except StageError:
            failed.append(True)
    return failed


def test_sim_injected_failures_follow_the_error_rate_and_the_seed() -> None:
    assert not any(_sim_failures(0.0, seed=7)) and not any(_sim_failures(0.0, seed=None))
    assert all(_sim_failures(1.0, seed=7)) and all(_sim_failures(1.0, seed=None))
    drawn = _sim_failures(0.5, seed=7)
    assert any(drawn) and not all(drawn)
    assert _sim_failures(0.5, seed=7) == drawn  # seeded per episode and call: the same draw again
