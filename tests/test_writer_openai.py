"""The OpenAI-compatible writer against loopback models: the prompt and the gates agree, every common
style is understood, bad replies fail with a clear reason, and each local-server difference is handled."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, Reply, Request, error
from loopback_writers import (
    BAD,
    STYLES,
    Answer,
    Prompt,
    chat_handler,
    chat_server,
    obedient,
    sloppy_then_fixed,
)
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, StageError, StageResult
from podspool.stages.costs import cost_of
from podspool.stages.providers.local.research import LocalResearch
from podspool.stages.providers.openai.writer import OpenAIWriter, build_prompt
from podspool.stages.registry import run_stage
from podspool.stages.script import quality
from podspool.stages.script.format import parse_turns, script_rules, source_numbers, with_sources
from podspool.stages.script.normalise import normalise
from podspool.stages.settings import ResearchSettings, StageSettings

REPO = Path(__file__).resolve().parents[1]
HOSTS = ["Alex", "Sam"]
RESEARCH = ResearchOutput(provider="local", findings=[Finding(text="Bees dance. They point at food.",
                                                              source="notes/bees.md")], citations=[], searched=[])


def settings_for(fake: FakeApi, **openai: Any) -> StageSettings:
    s = StageSettings(research=ResearchSettings(source_roots=[str(REPO)]))
    s.production.provider = "openai"
    p = s.providers.openai
    p.base_url = fake.base_url + "/v1"
    p.timeout_s, p.max_attempts, p.max_retry_time_s = 2.0, 2, 1.0
    for k, v in openai.items():
        setattr(p, k, v)
    return s


def episode(source: str = "honeybees", number: int = 1, title: str | None = None) -> EpisodeInput:
    topic = source.replace("_", " ").capitalize()
    return EpisodeInput(episode_id=f"ep_{number:03d}_w", batch_id="w", number=number, topic=topic, title=title,
                        sources=(f"examples/sources/{source}.md",))


def produce(tmp: Path, fake: FakeApi, ep: EpisodeInput | None = None, **openai: Any) -> StageResult:
    ep = ep or episode()
    ctx = StageContext(settings=settings_for(fake, **openai))
    research = run_stage("research", tmp, ep, ctx)
    assert research.ok, research.error
    return run_stage("production", tmp, ep, ctx)


# ---- the prompt and the gates agree --------------------------------------------------------------


@pytest.mark.parametrize("source,title", [("honeybees", None), ("fermi_paradox", "Where is everybody?"),
                                          ("tides", None), ("penicillin", "The mould that changed medicine")])
def test_a_model_that_follows_the_prompt_passes_on_the_first_draft(tmp_path: Path, source: str,
                                                                   title: str | None) -> None:
    with chat_server(obedient) as fake:
        result = produce(tmp_path, fake, episode(source, title=title))
    assert result.ok, result.error
    assert len(fake.requests) == 1 and result.revisions == 0
    q = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    assert q["passed"] and q["score"] == 1.0 and all(g["passed"] for g in q["gates"]), q["reasons"]
    prompt = fake.requests[0].json()["messages"][1]["content"]
    research, _ = artifacts.load_research(tmp_path)
    assert script_rules(HOSTS, 300, 2500, research.findings) in prompt  # the gates' own rules
    assert "sources list" in prompt and "## Sources" in prompt  # ... which say podspool writes the list


@pytest.mark.parametrize("hosts", [["Alex", "Sam"], ["Ada", "Grace"], ["José", "Zoë"]])
def test_the_prompt_and_the_gates_agree_for_every_example(tmp_path: Path, hosts: list[str]) -> None:
    """In process, no server: every example episode, any host names; the rules in the prompt are enough."""
    settings = StageSettings(research=ResearchSettings(source_roots=[str(REPO)]))
    settings.production.hosts = hosts
    for path in sorted((REPO / "examples" / "sources").glob("*.md")):
        ep = episode(path.stem)
        research = LocalResearch().research(ep, StageContext(settings=settings))
        prompt = build_prompt(ep, research, hosts, [], 300, 2500)
        reply = obedient(Prompt.read([{"role": "user", "content": prompt}])).content or ""
        draft = normalise(reply, hosts, ep.topic)
        report = quality.evaluate(with_sources(draft.body, research.findings), research, settings, draft=draft)
        assert report.passed and all(g.passed for g in report.gates), (path.stem, report.reasons)
        assert not draft.dropped and not draft.title_supplied  # nothing to repair: the rules were enough


def test_the_sources_list_is_podspools_numbered_as_the_research(tmp_path: Path) -> None:
    with chat_server(STYLES["speaker_list"]) as fake:  # a model that writes a sources list of its own
        assert produce(tmp_path, fake).ok
    script = (tmp_path / artifacts.SCRIPT_MD).read_text()
    research, _ = artifacts.load_research(tmp_path)
    assert "Research note" not in script  # the model's list is gone
    assert source_numbers(script) == set(range(1, len(research.findings) + 1))
    sources = script.split("## Sources\n\n", 1)[1].splitlines()
    for n, f in enumerate(research.findings, 1):
        assert sources[n - 1] == f"{n}. {f.title}: {f.source} ({f.location})"


# ---- any style -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_common_style_is_understood(tmp_path: Path, style: str) -> None:
    with chat_server(STYLES[style]) as fake:
        result = produce(tmp_path, fake)
    assert result.ok, result.error
    assert len(fake.requests) == 1  # understood on the first draft, not argued into shape
    script = (tmp_path / artifacts.SCRIPT_MD).read_text()
    turns = parse_turns(script)
    assert {t.host for t in turns} == set(HOSTS)
    assert all(re.fullmatch(r"\*\*(Alex|Sam):\*\* \S.*", line) for line in script.split("## Sources")[0]
               .splitlines() if line and not line.startswith("#"))
    assert not re.search(r"laughs|\(pause\)|sighs|think>|HOST [AB]|Speaker \d|Person\d|```", script)
    assert script.startswith("# ") and "\n## " in script


# ---- bad replies ---------------------------------------------------------------------------------

BAD_REASONS = {
    "empty": "complete: the reply was empty",
    "cut": "complete: the reply was cut at the token limit (4096 tokens, finish_reason 'length')",
    "one_speaker": "speakers: Sam never speaks",
    "invented": "grounded: citations [17, 42] point at findings the research does not have",
    "refusal": "complete: the model declined to write the script (\"I'm sorry",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_replies_fail_with_a_clear_reason(tmp_path: Path, kind: str) -> None:
    with chat_server(BAD[kind]) as fake:
        result = produce(tmp_path, fake)
    assert not result.ok and not result.retryable
    assert result.error and result.error.startswith("quality gates refused the script")
    assert BAD_REASONS[kind] in result.error
    # the same reply to the feedback stops the revisions: two calls, not max_revisions + 1
    assert len(fake.requests) == 2 and "returned the same script as draft 0" in result.error
    assert not (tmp_path / artifacts.SCRIPT_MD).exists()
    doc = fsio.read_json(tmp_path / artifacts.QUALITY_JSON)
    assert doc["accepted"] is False and "reply" in doc  # what the model said, for the operator
    if kind == "refusal":
        assert doc["reply"].startswith("I'm sorry, but I can't help")


def test_a_revision_sees_its_draft_and_the_lines_to_fix(tmp_path: Path) -> None:
    with chat_server(sloppy_then_fixed) as fake:
        result = produce(tmp_path, fake)
    assert result.ok and result.revisions == 1 and len(fake.requests) == 2
    messages = fake.requests[1].json()["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "## Segment 1" in messages[2]["content"] and not re.search(r"\[\d+\]", messages[2]["content"])
    assert "grounded: no citations" in messages[3]["content"]


def test_a_model_that_keeps_failing_differently_uses_every_revision(tmp_path: Path) -> None:
    drafts = iter(range(1, 10))

    def wrong(p: Prompt) -> Answer:
        return Answer((obedient(p).content or "").replace("[1]", f"[{40 + next(drafts)}]"))

    with chat_server(wrong) as fake:
        result = produce(tmp_path, fake)
    assert not result.ok and len(fake.requests) == 3 and "after 2 revision(s)" in (result.error or "")


# ---- local servers: each difference on the wire ---------------------------------------------------


def _writer_call(fake: FakeApi, **openai: Any) -> Any:
    ctx = StageContext(settings=settings_for(fake, **openai))
    return OpenAIWriter().write(episode(), RESEARCH, HOSTS, [], ctx), ctx


def test_max_completion_tokens_after_a_400_naming_max_tokens() -> None:
    """OpenAI's newer models refuse max_tokens; the writer switches once and remembers it."""
    ok = chat_handler(obedient, model_name="o4-mini")

    def server(req: Request) -> Reply:
        if "max_tokens" in req.json():
            return error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                         "'max_completion_tokens' instead.", type_="invalid_request_error",
                         code="unsupported_parameter")
        return ok(req)

    with FakeApi(server) as fake:
        writer = OpenAIWriter()
        ctx = StageContext(settings=settings_for(fake, model="o4-mini", max_tokens=3000))
        out = writer.write(episode(), RESEARCH, HOSTS, [], ctx)
        writer.write(episode(number=2), RESEARCH, HOSTS, [], ctx)
    bodies = [r.json() for r in fake.requests]
    assert "max_tokens" in bodies[0] and bodies[1]["max_completion_tokens"] == 3000
    assert "max_tokens" not in bodies[2] and bodies[2]["max_completion_tokens"] == 3000  # remembered
    assert len(bodies) == 3 and "**Alex:**" in out.script


def test_a_configured_token_param_is_sent_as_configured() -> None:
    with FakeApi(chat_handler(obedient)) as fake:
        _writer_call(fake, token_param="max_completion_tokens", max_tokens=777)
    body = fake.requests[0].json()
    assert body["max_completion_tokens"] == 777 and "max_tokens" not in body


def test_an_old_server_refusing_max_completion_tokens_is_not_retried_when_configured() -> None:
    refusal = error(400, "Unrecognized request argument supplied: max_completion_tokens")
    with FakeApi(refusal) as fake, pytest.raises(StageError, match="HTTP 400.*max_completion_tokens"):
        _writer_call(fake, token_param="max_completion_tokens")
    assert len(fake.requests) == 1


def test_a_400_about_the_context_length_is_not_a_parameter_problem() -> None:
    vllm = error(400, "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context "
                 "length is 4096 tokens and your request has 1057 input tokens (4096 > 4096 - 1057).")
    with FakeApi(vllm) as fake, pytest.raises(StageError, match="maximum context length"):
        _writer_call(fake)
    assert len(fake.requests) == 1


def test_missing_usage_is_estimated_so_a_priced_model_is_not_free() -> None:
    with FakeApi(chat_handler(obedient, usage=False, model_name="gpt-4o-mini")) as fake:
        out, ctx = _writer_call(fake, model="gpt-4o-mini")
    (u,) = out.usage
    assert u.input_tokens > 100 and u.output_tokens > 50 and cost_of(out.usage, ctx.settings) > 0


def test_finish_reason_length_marks_the_reply_incomplete() -> None:
    with FakeApi(chat_handler(BAD["cut"])) as fake:
        out, _ = _writer_call(fake, max_tokens=512)
    assert out.incomplete and "cut at the token limit (512 tokens, finish_reason 'length')" in out.incomplete


def test_reasoning_in_a_field_or_in_think_tags_never_reaches_the_script() -> None:
    def with_field(p: Prompt) -> Answer:
        return Answer(obedient(p).content, message_extra={"reasoning_content": "**Alex:** secret plan [9]"})

    def with_tags(p: Prompt) -> Answer:
        return Answer("<think>\n**Alex:** secret plan [9]\n</think>\n" + (obedient(p).content or ""))

    for model in (with_field, with_tags):
        with FakeApi(chat_handler(model)) as fake:
            out, _ = _writer_call(fake)
        script = normalise(out.script, HOSTS, "Bees").body  # as the production stage sees it
        assert "secret" not in script and out.incomplete is None and "**Sam:**" in script


def test_a_reply_spent_on_reasoning_is_incomplete_with_a_reason(tmp_path: Path) -> None:
    def thinker(p: Prompt) -> Answer:
        return Answer(None, finish_reason="length", message_extra={"reasoning_content": "Let me think... " * 50})

    with chat_server(thinker) as fake:
        result = produce(tmp_path, fake)
    assert not result.ok and "while still reasoning, before any script" in (result.error or "")


def test_a_server_with_no_choices_is_retried_as_malformed() -> None:
    with FakeApi(chat_handler(obedient)) as fake:
        fake.queue(Reply(body={"object": "chat.completion"}))
        out, _ = _writer_call(fake)
    assert len(fake.requests) == 2 and "**Alex:**" in out.script


def test_content_parts_and_a_refusal_field() -> None:
    def parts(p: Prompt) -> Answer:
        text = obedient(p).content or ""
        return Answer([{"type": "text", "text": text[:100]}, {"type": "text", "text": text[100:]}])  # type: ignore[arg-type]

    with FakeApi(chat_handler(parts)) as fake:
        out, _ = _writer_call(fake)
    assert out.script.startswith("# Honeybees") and "**Sam:**" in out.script

    def refuses(p: Prompt) -> Answer:
        return Answer(None, message_extra={"refusal": "I'm sorry, I cannot help with that request."})

    with FakeApi(chat_handler(refuses)) as fake:
        out, _ = _writer_call(fake)
    assert out.script.startswith("I'm sorry")  # judged, and refused, by the complete gate
