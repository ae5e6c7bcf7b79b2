"""Long episodes: a target length reached in segments, each call given its budget, gates on every
segment and on the whole, and revisions that re-ask only what failed (counted at a loopback server)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, error
from loopback_writers import SegmentAsk, asked, budget_turns, daemon_config, keeps_budget, long_form_handler
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, StageResult
from podspool.stages.registry import run_stage
from podspool.stages.script import segments
from podspool.stages.script.format import parse_turns
from podspool.stages.settings import StageSettings
from podspool.stages.show import CastMember, Show
from podspool.stages.words import words
from podspool_helpers import cli, write_manifest

WPM = 165
PLACES = ("harbor town", "hill fort", "river delta", "salt marsh", "stone quarry", "mill village", "coast road",
          "pine ridge", "lake shore", "market square", "iron mine", "glass works")
TRADES = ("weavers", "potters", "smiths", "fishers", "millers", "carters", "brewers", "masons", "tanners", "coopers")
CHANGES = ("water wheels", "printed ledgers", "night shifts", "shared kilns", "paid holidays", "new looms",
           "guild schools", "canal boats", "steam pumps", "glass lamps")

THIRD = ("Site {i} is still known for its {trade}.", "A museum tells the story of site {i} today.",
         "Letters from site {i} call its {trade} proud.", "Site {i} later counted {k} {trade}.")


def findings(n: int, seed: int = 7) -> list[Finding]:
    """Research with `n` distinct findings of three sentences each."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        place, trade, change = rng.choice(PLACES), rng.choice(TRADES), rng.choice(CHANGES)
        year = 1700 + rng.randrange(300)
        out.append(Finding(
            text=(f"At the {place} in {year}, the {trade} of site {i} took up {change}. "
                  f"Within {rng.randrange(2, 30)} years, {rng.randrange(20, 90)} families there had {rng.choice(CHANGES)} too. "
                  + THIRD[i % len(THIRD)].format(i=i, trade=rng.choice(TRADES), k=rng.randrange(100, 900))),
            source=f"notes/site_{i}.md", location=f"paragraph {i}", score=round(1 / i, 4), title=None))
    return out


def settings_for(fake: FakeApi, **quality: Any) -> StageSettings:
    s = StageSettings()
    s.production.provider = "openai"
    p = s.providers.openai
    p.base_url = fake.base_url + "/v1"
    p.timeout_s, p.max_attempts, p.max_retry_time_s = 5.0, 2, 2.0
    for k, v in quality.items():
        setattr(s.quality, k, v)
    return s


def produce(folder: Path, fake: FakeApi, minutes: float | None, n_findings: int = 24,
            **quality: Any) -> StageResult:
    research = ResearchOutput(provider="local", findings=findings(n_findings), citations=[], searched=["notes"])
    artifacts.save_research(folder, research, 0.0)
    ep = EpisodeInput(episode_id="ep_001_long", batch_id="long", number=1, topic="How work changed in the towns",
                      show=Show(minutes=minutes))
    return run_stage("production", folder, ep, StageContext(settings=settings_for(fake, **quality)))


def spoken_words(folder: Path) -> int:
    script = (folder / artifacts.SCRIPT_MD).read_text()
    return sum(len(words(t.text)) for t in parse_turns(script))


@pytest.mark.parametrize("minutes", [5, 15, 30, 60])
def test_a_model_that_keeps_its_budget_lands_within_ten_percent_in_segments_plus_one_calls(
        tmp_path: Path, minutes: int) -> None:
    with FakeApi(long_form_handler()) as fake:
        result = produce(tmp_path, fake, minutes)
    assert result.ok, result.error
    target = minutes * WPM
    n = spoken_words(tmp_path)
    assert abs(n - target) <= 0.10 * target, (n, target)
    q = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    assert q["passed"] and q["revisions"] == 0, q["reasons"]
    kinds = asked(fake)
    if segments.segmented(target):
        k = len(q["outline"]["segments"])
        assert k == segments.segment_count(target)
        assert len(fake.requests) <= k + 1
        assert kinds == ["outline", *(f"segment {i}" for i in range(1, k + 1))]
        assert {"continuity", "repetition"} <= {g["name"] for g in q["gates"]}
        assert not list(tmp_path.glob("draft_*.json"))  # the drafts have served once script.md is written
    else:
        assert kinds == ["script"]


def test_structured_output_is_asked_for_and_the_turns_come_back_as_json(tmp_path: Path) -> None:
    with FakeApi(long_form_handler(accepts=("response_format",))) as fake:
        result = produce(tmp_path, fake, 12)
    assert result.ok, result.error
    bodies = [r.json() for r in fake.requests]
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)
    segment_schema = bodies[1]["response_format"]["json_schema"]["schema"]
    assert segment_schema["required"] == ["intro", "turns"]  # the first segment opens the show
    assert segment_schema["properties"]["turns"]["items"]["properties"]["speaker"]["enum"] == ["Alex", "Sam"]
    assert "## Intro" in (tmp_path / artifacts.SCRIPT_MD).read_text()


def test_a_reasoning_model_thinking_before_its_json_keeps_the_schema(tmp_path: Path) -> None:
    with FakeApi(long_form_handler(accepts=("response_format",), thinks=True)) as fake:
        result = produce(tmp_path, fake, 12)
    assert result.ok, result.error
    assert all("response_format" in r.json() for r in fake.requests)  # found to work once, then kept
    assert "<think>" not in (tmp_path / artifacts.SCRIPT_MD).read_text()


@pytest.mark.parametrize("form", ["json_schema", "guided_json", "format"])
def test_each_servers_own_schema_form_is_found_once_and_remembered(tmp_path: Path, form: str) -> None:
    """A server that refuses the forms before its own (HTTP 400) costs one refused request per form, once."""
    with FakeApi(long_form_handler(accepts=(form,), refuses_others=True)) as fake:
        result = produce(tmp_path, fake, 12)
    assert result.ok, result.error
    sent = [next(f for f in ("response_format", "json_schema", "guided_json", "format") if f in r.json())
            for r in fake.requests]
    order = ["response_format", "json_schema", "guided_json", "format"]
    refused = order[: order.index(form)]
    assert sent[: len(refused)] == refused  # each refused once, on the first call
    assert set(sent[len(refused):]) == {form}  # then only the form that works


def test_a_server_that_ignores_every_schema_is_asked_for_text(tmp_path: Path) -> None:
    with FakeApi(long_form_handler(accepts=())) as fake:
        result = produce(tmp_path, fake, 15)
    assert result.ok, result.error
    bodies = [r.json() for r in fake.requests]
    tried = [next((f for f in ("response_format", "json_schema", "guided_json", "format") if f in b), "text")
             for b in bodies]
    assert tried[:5] == ["response_format", "json_schema", "guided_json", "format", "text"]
    assert set(tried[5:]) <= {"text"}
    target = 15 * WPM
    assert abs(spoken_words(tmp_path) - target) <= 0.1 * target


def short_then_fixed(ask: SegmentAsk) -> list[tuple[str, list[tuple[int, str]]]]:
    """Segment 2 comes back at a third of its budget on the first ask; right when told."""
    parts = keeps_budget(ask)
    if ask.number == 2 and not ask.revising:
        return [(name, budget_turns(ask.findings, ask.words // 3, "short") if name == "turns" else turns)
                for name, turns in parts]
    return parts


def repeats_segment_one(ask: SegmentAsk) -> list[tuple[str, list[tuple[int, str]]]]:
    """Segment 3 says again, word for word, a passage of segment 1, until told not to."""
    parts = keeps_budget(ask)
    if ask.number == 3 and not ask.revising:
        first = budget_turns([], 60, "the same passage")  # what segment 1 also says (below)
        return [(n, first + t[len(first):]) if n == "turns" else (n, t) for n, t in parts]
    if ask.number == 1:
        first = budget_turns([], 60, "the same passage")
        return [(n, t[:1] + first + t[1 + len(first):]) if n == "turns" else (n, t) for n, t in parts]
    return parts


@pytest.mark.parametrize("model,bad", [(short_then_fixed, 2), (repeats_segment_one, 3)])
def test_a_revision_re_asks_only_the_failing_segment(tmp_path: Path, model: Any, bad: int) -> None:
    with FakeApi(long_form_handler(model)) as fake:
        result = produce(tmp_path, fake, 20)
    assert result.ok, result.error
    q = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    k = len(q["outline"]["segments"])
    kinds = asked(fake)
    assert kinds == ["outline", *(f"segment {i}" for i in range(1, k + 1)), f"segment {bad}"]
    revision = fake.requests[-1].json()["messages"]
    assert revision[-1]["role"] == "user" and "failed these quality checks" in revision[-1]["content"]
    assert revision[-2]["role"] == "assistant"  # its own last draft, so the reasons can point at its lines
    assert q["revisions"] == 1 and q["passed"]


def test_a_segment_the_model_will_not_write_fails_the_episode_naming_the_segment_and_why(tmp_path: Path) -> None:
    def declines_two(ask: SegmentAsk) -> list[tuple[str, list[tuple[int, str]]]] | str:
        return "I'm sorry, but I can't help with that part." if ask.number == 2 else keeps_budget(ask)

    with FakeApi(long_form_handler(declines_two)) as fake:
        result = produce(tmp_path, fake, 15, max_revisions=1)
    assert not result.ok and not result.retryable
    assert "segments failing: [2]" in (result.error or "")
    assert "segment 2: complete: the model declined" in (result.error or ""), result.error
    assert asked(fake).count("segment 2") == 2 and asked(fake).count("segment 1") == 1
    assert (tmp_path / "script.rejected.md").exists()


def test_a_400_about_something_else_is_not_taken_for_a_refused_schema(tmp_path: Path) -> None:
    with FakeApi(error(400, "model 'llama3.1' is not loaded on this server")) as fake:
        result = produce(tmp_path, fake, 15)
    assert not result.ok and "not loaded" in (result.error or "")
    assert len(fake.requests) == 1  # no other schema form tried: the reason is the server's own


def test_a_retry_reuses_the_outline_and_the_segments_that_passed(tmp_path: Path) -> None:
    """A stage killed after some segments passed: the next attempt asks only for the rest."""
    down = [True]

    def dies_at_four(ask: SegmentAsk) -> list[tuple[str, list[tuple[int, str]]]]:
        if ask.number == 4 and down[0]:
            raise RuntimeError("the server fell over")  # the connection drops: the writer's call fails
        return keeps_budget(ask)

    with FakeApi(long_form_handler(dies_at_four)) as fake:
        first = produce(tmp_path, fake, 30)
        assert not first.ok
        assert (tmp_path / segments.OUTLINE_JSON).exists() and segments.draft_path(tmp_path, 3).exists()
        n_before = len(fake.requests)
        down[0] = False
        second = produce(tmp_path, fake, 30)
    assert second.ok, second.error
    again = asked(fake)[n_before:]
    assert "outline" not in again and "segment 1" not in again and again[0] == "segment 4"


# ---- refused before anything runs -----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def short_batch(tmp: Path, minutes: object, where: str = "episode") -> Path:
    (tmp / "notes.md").write_text("# Tides\n\n" + (REPO / "examples/sources/tides.md").read_text())
    episode: dict[str, Any] = {"number": 3, "topic": "Ocean tides", "sources": ["notes.md"]}
    doc: dict[str, Any] = {"batch_id": "short", "episodes": [episode]}
    (episode if where == "episode" else doc)["minutes"] = minutes
    return write_manifest(tmp / "batch.json", doc)


@pytest.mark.parametrize("command", ["validate", "submit", "plan"])
def test_a_target_beyond_the_offline_material_is_refused_naming_what_it_supports(tmp_path: Path, command: str) -> None:
    manifest = short_batch(tmp_path, 20)
    spool = tmp_path / "spool"
    extra = ["--spool", str(spool)] if command in ("submit", "plan") else []
    out = cli(command, str(manifest), *extra, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert re.search(r"sources of episode 3 support about 2\.\d minutes; target 20\b", out.stderr), out.stderr
    assert not (spool / "inbox").exists() or not list((spool / "inbox").iterdir())  # nothing placed


def test_a_target_the_material_holds_is_accepted_and_the_example_is_valid(tmp_path: Path) -> None:
    ok = cli("validate", str(short_batch(tmp_path, 2, where="batch")), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    example = cli("validate", str(REPO / "examples" / "long_batch.json"), cwd=REPO)
    assert example.returncode == 0, example.stderr


@pytest.mark.parametrize("minutes,where", [(0, "episode"), (-5, "batch"), (181, "episode"), ("twenty", "batch"),
                                           (True, "episode")])
def test_bad_minutes_are_refused_at_validation_with_the_field_named(tmp_path: Path, minutes: object,
                                                                    where: str) -> None:
    out = cli("validate", str(short_batch(tmp_path, minutes, where)), cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert "minutes" in out.stderr, out.stderr


# ---- the plan ---------------------------------------------------------------------------------------


def test_plan_counts_an_outline_and_a_call_per_segment_for_each_length(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.toml"
    cfg.write_text('[research]\nprovider = "sim"\n[production]\nprovider = "sim"\n[audio]\nprovider = "sim"\n'
                   "[providers.sim]\nlatency_ms = 100\ncost_per_call_usd = 0.5\n")
    mixed = write_manifest(tmp_path / "mixed.json", {"batch_id": "mixed", "minutes": 60, "episodes": [
        {"number": 1, "topic": "a"}, {"number": 2, "topic": "b", "minutes": 5}, {"number": 3, "topic": "c", "minutes": 30}]})
    out = cli("plan", str(mixed), "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)["batches"][0]
    writer = [1 + segments.segment_count(60 * WPM), 1, 1 + segments.segment_count(30 * WPM)]
    assert writer == [16, 1, 8]
    assert p["calls"] == {"sim": 3 + sum(writer) + 3}  # research and speech: one call each an episode
    assert p["cost_usd"]["production"] == pytest.approx(0.5 * sum(writer))


def test_plan_of_a_long_episode_with_a_model_writer_and_dialogue_speech(tmp_path: Path) -> None:
    cfg = tmp_path / "paid.toml"
    cfg.write_text('[research]\nprovider = "perplexity"\n[production]\nprovider = "openai"\nminutes = 30\n'
                   '[audio]\nprovider = "elevenlabs"\n')
    batch = write_manifest(tmp_path / "b.json", {"batch_id": "paid", "topics": ["a", "b"]})
    p = json.loads(cli("plan", str(batch), "--config", str(cfg), "--json").stdout)["batches"][0]
    k = segments.segment_count(30 * WPM)
    assert p["calls"]["openai"] == 2 * (k + 1)
    assert p["calls"]["perplexity"] == 2
    # dialogue requests of at most 2,000 characters: about half a request per minute of speech
    assert p["calls"]["elevenlabs"] / (2 * 30) <= 0.55
    assert any(f"{k} segments" in n for n in p["notes"])


@pytest.mark.soak
def test_plan_matches_dry_runs_of_long_episodes() -> None:
    """benchmarks/plan_bench.py --long: 5, 30 and 60 minutes against the real daemon with the sim."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plan_bench.py"), "--long", "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert r["done"] == r["episodes"] and r["calls_predicted"] == r["calls_measured"], r
        assert abs(r["error_pct"]) <= 15, r


# ---- offline: the long-form example -----------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2])
def test_the_long_example_reaches_twenty_minutes_offline_with_every_gate_passing(tmp_path: Path, number: int) -> None:
    """Local research and the local writer on examples/long_batch.json: no model, no network."""
    doc = json.loads((REPO / "examples" / "long_batch.json").read_text())
    ep = next(e for e in doc["episodes"] if e["number"] == number)
    settings = StageSettings()
    settings.research.source_roots = [str(REPO / "examples")]
    episode = EpisodeInput(episode_id=f"ep_{number:03d}_long", batch_id="long", number=number, topic=ep["topic"],
                           title=ep.get("title"), sources=tuple(ep["sources"]), show=Show(minutes=doc["minutes"]))
    ctx = StageContext(settings=settings)
    for stage in ("research", "production"):
        result = run_stage(stage, tmp_path, episode, ctx)
        assert result.ok, result.error
    target = doc["minutes"] * WPM
    assert abs(spoken_words(tmp_path) - target) <= 0.10 * target
    q = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    gates = {g["name"]: g for g in q["gates"]}
    assert gates["repetition"]["passed"] and gates["continuity"]["passed"] and q["passed"], q["reasons"]


# ---- through the daemon ------------------------------------------------------------------------------


def test_minutes_from_the_manifest_and_the_config_reach_the_writer_through_the_daemon(tmp_path: Path) -> None:
    """Episode 1 takes the config's 12 minutes, episode 2 its own 20: each an outline and a call a segment."""
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    episodes = [{"number": 1, "topic": "Ocean tides", "sources": ["examples/sources/tides.md"]},
                {"number": 2, "topic": "How GPS works", "sources": ["examples/sources/gps.md"], "minutes": 20}]
    with FakeApi(long_form_handler()) as fake:
        (spool / "podspool.toml").write_text(daemon_config(REPO, fake.base_url, production="minutes = 12\n"))
        (spool / "inbox" / "l.json").write_text(json.dumps({"batch_id": "l", "episodes": episodes}))
        run = cli("run", "--once", "--spool", str(spool), cwd=REPO)
        kinds = asked(fake)
    assert run.returncode == 0, run.stderr[-3000:]
    for number, minutes in ((1, 12), (2, 20)):
        folder = spool / "done" / f"ep_{number:03d}_l"
        assert folder.is_dir(), list((spool / "failed").glob("*"))
        target = minutes * WPM
        assert abs(spoken_words(folder) - target) <= 0.10 * target
        assert json.loads((folder / "manifest.json").read_text())["show"]["minutes"] in (None, minutes)
    k12, k20 = segments.segment_count(12 * WPM), segments.segment_count(20 * WPM)
    assert kinds.count("outline") == 2 and len(kinds) == k12 + k20 + 2


def test_a_long_interview_keeps_its_formats_headings_and_chapters(tmp_path: Path) -> None:
    research = ResearchOutput(provider="local", findings=findings(24), citations=[], searched=["notes"])
    artifacts.save_research(tmp_path, research, 0.0)
    show = Show(format="interview", cast=(CastMember(name="Ana", role="host"), CastMember(name="Ben", role="guest")),
                minutes=12)
    ep = EpisodeInput(episode_id="ep_001_long", batch_id="long", number=1, topic="Work in the towns", show=show)
    with FakeApi(long_form_handler()) as fake:
        result = run_stage("production", tmp_path, ep, StageContext(settings=settings_for(fake)))
        kinds = asked(fake)
    assert result.ok, result.error
    headings = [line for line in (tmp_path / artifacts.SCRIPT_MD).read_text().splitlines() if line.startswith("## ")]
    k = segments.segment_count(12 * WPM)
    assert headings[0] == "## Welcome" and headings[-2:] == ["## Wrap-up", "## Sources"]
    assert [h.split(":")[0] for h in headings[1:-2]] == [f"## Question {i}" for i in range(1, k + 1)]
    assert kinds == ["outline", *(f"segment {i}" for i in range(1, k + 1))]


def test_a_writers_outline_is_checked_against_the_target() -> None:
    fs = findings(19)
    planned = segments.plan_outline("T", fs, 30 * WPM)
    k = len(planned.segments)
    assert sum(s.words for s in planned.segments) == 30 * WPM and k == segments.segment_count(30 * WPM)
    lopsided = {"segments": [{"label": "All of it", "findings": [1], "words": 4000},
                             *({"label": "[x]", "findings": [99], "words": 100} for _ in range(k + 2))]}
    o = segments.outline_from_reply(lopsided, planned, len(fs))
    assert len(o.segments) == k and sum(s.words for s in o.segments) == 30 * WPM
    assert max(s.words for s in o.segments) <= 2 * segments.SEGMENT_WORDS + segments.INTRO_WORDS
    assert {n for s in o.segments for n in s.findings} == set(range(1, 20))  # every finding placed
    assert o.segments[1].label == planned.segments[1].label  # "[x]" is no label; 99 is no finding
    assert any("planned" in n for n in o.notes) and o.planned_by == "writer"
    assert segments.outline_from_reply("not json", planned, len(fs)).segments == planned.segments


def test_the_outline_sees_each_findings_opening_and_its_segment_the_whole_finding() -> None:
    from podspool.stages.providers.openai.writer import OUTLINE_FINDING_WORDS, outline_prompt, segment_prompt

    long_text = " ".join(f"word{i}" for i in range(200))
    research = ResearchOutput(provider="local", findings=[*findings(11), Finding(text=long_text, source="n.md")],
                              citations=[], searched=[])
    ep = EpisodeInput(episode_id="e", batch_id="b", number=1, topic="Towns")
    outline = segments.plan_outline("Towns", research.findings, 30 * WPM)
    planning = outline_prompt(ep, research, ["Alex", "Sam"], outline, WPM)
    assert f"word{OUTLINE_FINDING_WORDS - 1} ..." in planning and f"word{OUTLINE_FINDING_WORDS}" not in planning
    owner = next(s for s in outline.segments if 12 in s.findings)
    request = segments.SegmentRequest(outline, owner, "(nothing yet)")
    assert "word199" in segment_prompt(ep, research, ["Alex", "Sam"], request, structured=True)
