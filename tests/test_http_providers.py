"""Research and writer HTTP providers against a real HTTP server on 127.0.0.1: wire format, retries, errors,
costs (speech providers: test_speech_*.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeApi, Reply, error, http_date
from podspool.daemon.ratelimit import SharedLimiter
from podspool.stages.base import Finding, ResearchOutput, StageError, Usage
from podspool.stages.costs import cost_of
from podspool.stages.providers.openai.writer import OpenAIWriter
from podspool.stages.providers.perplexity.research import PerplexityResearch
from podspool.stages.providers.websearch import WebSearchResearch
from podspool.stages.script.normalise import normalise
from podspool.stages.settings import StageSettings
from provider_helpers import EPISODE, KEY, RecordingLimiter, make_ctx


def sonar_body(cost: float | None = 0.0065) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    if cost is not None:
        usage["cost"] = {"input_tokens_cost": 0.001, "output_tokens_cost": 0.0005, "request_cost": 0.005,
                         "total_cost": cost}
    return {
        "id": "abc", "model": "sonar-pro",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": (
            "<think>plan the answer</think>Dark matter makes up about 27% of the universe.[1] "
            "Galaxy rotation curves stay flat far from the centre. [2][1]\n"
            "- Vera Rubin measured those curves in the 1970s [3].\nUncited filler sentence here.")}}],
        "citations": ["https://a.example/dm", "https://b.example/rot", "https://c.example/rubin"],
        "search_results": [{"title": "Dark matter", "url": "https://a.example/dm", "date": "2024-01-01"},
                           {"title": "Rotation", "url": "https://b.example/rot"}],
        "usage": usage,
    }


# ---- Perplexity -------------------------------------------------------------------------------


def test_perplexity_wire_format_findings_and_reported_cost() -> None:
    with FakeApi(Reply(body=sonar_body())) as fake:
        ctx = make_ctx(fake, "perplexity", api="sonar", model="sonar-pro", search_context_size="high",
                       search_recency_filter="month", search_domain_filter=["nasa.gov"])
        out = PerplexityResearch().research(EPISODE, ctx)
    (req,) = fake.requests
    assert req.method == "POST" and req.path == "/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = req.json()
    assert body["model"] == "sonar-pro"
    assert body["web_search_options"] == {"search_context_size": "high"}
    assert body["search_recency_filter"] == "month" and body["search_domain_filter"] == ["nasa.gov"]
    assert "Dark matter" in body["messages"][1]["content"] and "galaxy rotation" in body["messages"][1]["content"]
    assert [(f.text, f.source) for f in out.findings] == [
        ("Dark matter makes up about 27% of the universe.", "https://a.example/dm"),
        ("Galaxy rotation curves stay flat far from the centre.", "https://b.example/rot"),
        ("Vera Rubin measured those curves in the 1970s.", "https://c.example/rubin"),
    ]
    assert out.findings[0].title == "Dark matter" and out.findings[1].location == "[2][1]"
    assert out.citations == sonar_body()["citations"] and out.grounded
    assert "<think>" not in (out.answer or "")
    (usage,) = out.usage
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.cost_usd) == ("sonar-pro", 1000, 500, 0.0065)
    assert cost_of(out.usage, ctx.settings) == 0.0065  # the server's figure wins


def test_perplexity_price_table_matches_the_servers_bill_for_sonar() -> None:
    """Without a reported cost, 1000 in + 500 out tokens of sonar at low context cost what the fake billed."""
    body = sonar_body(cost=None)
    body["model"] = "sonar"
    with FakeApi(Reply(body=body)) as fake:
        ctx = make_ctx(fake, "perplexity", api="sonar")
        out = PerplexityResearch().research(EPISODE, ctx)
    assert out.usage[0].cost_usd is None
    assert cost_of(out.usage, ctx.settings) == pytest.approx(0.0065)  # 0.001 + 0.0005 + 0.005 fee


def test_retry_after_seconds_pauses_the_api_then_succeeds() -> None:
    limiter = RecordingLimiter()
    with FakeApi(Reply(body=sonar_body())) as fake:
        fake.queue(error(429, "rate limited", type_="rate_limit_exceeded", headers={"Retry-After": "0.4"}))
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=limiter))
    first, second = fake.requests
    assert second.arrived - first.arrived >= 0.4
    assert limiter.paused == [("perplexity", 0.4)]
    assert len(limiter.acquired) == 2  # the retry spent the shared budget too


def test_retry_after_http_date_is_honoured() -> None:
    limiter = RecordingLimiter()
    with FakeApi(Reply(body=sonar_body())) as fake:
        fake.queue(Reply(status=503, body={"detail": "overloaded"}, headers={"Retry-After": http_date(2)}))
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=limiter))
    (api, seconds), = limiter.paused
    assert api == "perplexity" and 0.5 < seconds <= 2.0  # an HTTP date has whole seconds
    assert fake.requests[1].arrived - fake.requests[0].arrived >= seconds - 0.05


def test_retry_after_pauses_every_process_sharing_the_limiter(tmp_path: Path) -> None:
    rates = {"perplexity": (100, 1.0)}
    with FakeApi(Reply(body=sonar_body())) as fake:
        fake.queue(error(429, "slow down", headers={"Retry-After": "1"}))
        seen_by_other: list[float] = []

        def other_worker() -> None:  # a second limiter over the same files = another process's view
            time.sleep(0.3)
            seen_by_other.append(SharedLimiter(tmp_path, rates).try_acquire("perplexity"))

        t = threading.Thread(target=other_worker)
        t.start()
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=SharedLimiter(tmp_path, rates)))
        t.join()
    assert 0.3 < seen_by_other[0] <= 0.75


@pytest.mark.parametrize("first", [
    Reply(status=500, body={"error": {"message": "internal", "type": "server_error"}}),
    Reply(status=502, body="<html>Bad gateway</html>", content_type="text/html"),
    Reply(status=200, body='{"choices": [', content_type="application/json"),  # malformed JSON
    Reply(status=200, body={"unexpected": "shape"}),
    Reply(drop=True),  # the connection is closed without an answer
    Reply(delay=2.5, body=sonar_body()),  # past timeout_s=1
], ids=["500", "502-html", "malformed-json", "wrong-shape", "dropped", "timeout"])
def test_transient_failures_are_retried(first: Reply) -> None:
    limiter = RecordingLimiter()
    with FakeApi(Reply(body=sonar_body())) as fake:
        fake.queue(first)
        out = PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=limiter, timeout_s=1.0))
    assert len(out.findings) == 3
    assert len(fake.requests) == 2 and len(limiter.acquired) == 2


def test_persistent_malformed_body_is_a_clear_retryable_error() -> None:
    garbage = Reply(status=200, body="not json at all", content_type="application/json")
    with FakeApi(garbage) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", max_attempts=3))
    assert info.value.retryable
    assert "malformed JSON body" in str(info.value) and "3 attempt(s)" in str(info.value)
    assert len(fake.requests) == 3


def test_retries_stop_within_the_time_budget() -> None:
    with FakeApi(Reply(status=503, body={"error": "busy"})) as fake:
        t0 = time.monotonic()
        with pytest.raises(StageError) as info:
            PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", max_attempts=20, max_retry_time_s=1.0))
    assert time.monotonic() - t0 < 1.5
    assert info.value.retryable and "HTTP 503" in str(info.value)


def test_a_retry_after_beyond_the_budget_gives_up_at_once_but_still_pauses() -> None:
    limiter = RecordingLimiter()
    later = error(429, "later", headers={"Retry-After": "60"})
    with FakeApi(later) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=limiter))
    assert len(fake.requests) == 1 and info.value.retryable
    assert limiter.paused == [("perplexity", 60.0)]


def test_wrong_key_fails_at_once_and_never_shows_the_key() -> None:
    echo = error(401, f"Invalid API key provided: {KEY}. Authorization: Bearer {KEY}",
                 type_="invalid_request_error", code="invalid_api_key")
    with FakeApi(echo) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar"))
    message = str(info.value)
    assert not info.value.retryable and len(fake.requests) == 1
    assert "HTTP 401" in message and "check the API key" in message and "invalid_api_key" in message
    assert KEY not in message and KEY[:12] not in message.replace("***", "")


@pytest.mark.parametrize("reply", [
    error(429, "You exceeded your current quota", type_="insufficient_quota", code="insufficient_quota"),
    Reply(status=401, body={"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota"}}),
], ids=["openai-shape", "elevenlabs-shape"])
def test_quota_exhausted_fails_at_once(reply: Reply) -> None:
    with FakeApi(reply) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar"))
    assert not info.value.retryable and len(fake.requests) == 1
    assert "out of quota" in str(info.value)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, {"error": {"message": "Invalid model 'sonar-x'", "type": "invalid_model"}}, "Invalid model 'sonar-x' [invalid_model]"),
    (404, {"detail": "Not Found"}, "Not Found"),
    (403, {"message": "Forbidden for this plan"}, "Forbidden for this plan"),
    (422, {"detail": [{"loc": ["body", "query"], "msg": "field required"}]}, "field required"),
    (400, {"error": "bad request text"}, "bad request text"),
])
def test_client_errors_fail_at_once_with_the_servers_reason(status: int, body: Any, expected: str) -> None:
    with FakeApi(Reply(status=status, body=body)) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar"))
    assert not info.value.retryable and len(fake.requests) == 1
    assert f"HTTP {status}" in str(info.value) and expected in str(info.value)


def test_missing_key_names_the_variable_and_sends_nothing() -> None:
    with FakeApi() as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", key=None))
    assert "PERPLEXITY_API_KEY" in str(info.value) and not info.value.retryable
    assert fake.requests == []


# ---- Tavily-compatible web search ---------------------------------------------------------------


def test_websearch_wire_format_findings_and_cost() -> None:
    body = {"query": "x", "answer": "Short answer.", "results": [
        {"title": "Low", "url": "https://low.example", "content": "Less relevant text.", "score": 0.2},
        {"title": "High", "url": "https://high.example", "content": "Most relevant text.", "score": 0.9},
        {"title": "No url", "content": "dropped"},
    ]}
    with FakeApi(Reply(body=body)) as fake:
        ctx = make_ctx(fake, "websearch", search_depth="advanced", max_results=7)
        out = WebSearchResearch().research(EPISODE, ctx)
    (req,) = fake.requests
    assert req.path == "/search" and req.headers["authorization"] == f"Bearer {KEY}"
    sent = req.json()
    assert sent["search_depth"] == "advanced" and sent["max_results"] == 7 and sent["include_answer"] is True
    assert "Dark matter" in sent["query"]
    assert [(f.source, f.score, f.title) for f in out.findings] == [
        ("https://high.example", 0.9, "High"), ("https://low.example", 0.2, "Low")]
    assert out.answer == "Short answer." and out.findings[0].text == "Most relevant text."
    assert cost_of(out.usage, ctx.settings) == pytest.approx(0.016)  # 2 credits at $0.008


def test_websearch_rate_limit_then_success() -> None:
    limiter = RecordingLimiter()
    ok = Reply(body={"results": [{"title": "T", "url": "https://u.example", "content": "text", "score": 1}]})
    with FakeApi(ok) as fake:
        fake.queue(Reply(status=429, body={"detail": {"error": "rate limit"}}, headers={"Retry-After": "0.2"}))
        out = WebSearchResearch().research(EPISODE, make_ctx(fake, "websearch", limiter=limiter))
    assert len(out.findings) == 1 and limiter.paused == [("websearch", 0.2)]


# ---- OpenAI-compatible writer ---------------------------------------------------------------------

RESEARCH = ResearchOutput(provider="perplexity", findings=[
    Finding(text="Dark matter is 27% of the universe.", source="https://a.example", title="DM"),
    Finding(text="Rotation curves are flat.", source="https://b.example")], citations=[], searched=[])


def chat(content: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2000, "completion_tokens": 1000, "total_tokens": 3000}}


def test_openai_writer_wire_format_normalised_script_and_cost() -> None:
    content = "```markdown\n# Dark matter\n\n**Alex**: Welcome! [1]\n\nSAM (laughing): Flat curves [2].\n```"
    with FakeApi(Reply(body=chat(content))) as fake:
        ctx = make_ctx(fake, "openai", base_path="/v1", model="gpt-4o-mini", temperature=0.3, max_tokens=999)
        out = OpenAIWriter().write(EPISODE, RESEARCH, ["Alex", "Sam"], [], ctx)
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    body = req.json()
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4o-mini", 0.3, 999)
    prompt = body["messages"][-1]["content"]
    assert "[1] Dark matter is 27% of the universe." in prompt and "https://b.example" in prompt
    assert "**Alex:**" in prompt and "failed these quality checks" not in prompt
    assert out.script == content  # the reply as written: the production stage normalises every writer's
    assert "**Alex:** Welcome! [1]\n\n**Sam:** Flat curves [2].\n" in normalise(out.script, ["Alex", "Sam"], "").body
    assert (out.usage[0].input_tokens, out.usage[0].output_tokens) == (2000, 1000)
    assert cost_of(out.usage, ctx.settings) == pytest.approx(0.0009)  # 2000 * 0.15/M + 1000 * 0.60/M


def test_openai_revision_carries_feedback_and_local_server_needs_no_key() -> None:
    with FakeApi(Reply(body=chat("**Alex:** hi [1]\n**Sam:** hello", model="llama3.1"))) as fake:
        ctx = make_ctx(fake, "openai", key=None)
        out = OpenAIWriter().write(EPISODE, RESEARCH, ["Alex", "Sam"],
                                   ["too short: 40 words, need 300", "uncited claim in turn 2"], ctx)
    req = fake.requests[0]
    assert "authorization" not in req.headers
    prompt = req.json()["messages"][-1]["content"]
    assert "- too short: 40 words, need 300\n- uncited claim in turn 2" in prompt
    assert cost_of(out.usage, ctx.settings) == 0.0  # a local model is free


def test_openai_local_server_busy_loading_is_retried() -> None:
    with FakeApi(Reply(body=chat("**Alex:** hi [1]\n**Sam:** ok"))) as fake:
        fake.queue(Reply(status=503, body={"error": "server busy, loading model"}),
                   Reply(status=503, body={"error": {"message": "Loading model", "type": "unavailable_error"}}))
        out = OpenAIWriter().write(EPISODE, RESEARCH, ["Alex", "Sam"], [], make_ctx(fake, "openai", key=None))
    assert len(fake.requests) == 3 and out.script.startswith("**Alex:** hi")


class SlowLimiter(RecordingLimiter):
    """A shared limiter busy with other workers: every acquire queues for a while."""

    def acquire(self, api: str) -> None:
        time.sleep(0.4)
        super().acquire(api)


def test_time_queued_behind_the_limiter_does_not_eat_the_retry_budget() -> None:
    with FakeApi(Reply(body=sonar_body())) as fake:
        fake.queue(Reply(status=500, body={"error": "hiccup"}))
        out = PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="sonar", limiter=SlowLimiter(),
                                                              max_retry_time_s=0.5))
    assert len(fake.requests) == 2 and out.findings


def test_configured_prices_override_the_defaults() -> None:
    settings = StageSettings.model_validate({"pricing": {"elevenlabs": {"eleven_multilingual_v2": {
        "per_thousand_characters": 0.30}}}})
    usage = [Usage(api="elevenlabs", model="eleven_multilingual_v2", characters=2000),
             Usage(api="elevenlabs", model="eleven_flash_v2_5", characters=2000),  # still the default
             Usage(api="perplexity", model="sonar", input_tokens=10, cost_usd=0.25)]  # reported wins
    assert cost_of(usage, settings) == pytest.approx(0.60 + 0.10 + 0.25)
