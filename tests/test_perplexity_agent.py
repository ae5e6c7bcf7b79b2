"""Perplexity's Agent API (the default) and Search API against loopback servers in their wire formats."""

from __future__ import annotations

from typing import Any

import pytest
from fakeapi import FakeApi, Reply, error
from podspool.stages.base import StageError
from podspool.stages.costs import cost_of
from podspool.stages.providers.perplexity.research import PerplexityResearch
from provider_helpers import EPISODE, KEY, RecordingLimiter, make_ctx

RESULTS = [
    {"title": "Dark matter", "url": "https://a.example/dm", "snippet": "Dark matter is 27% of the cosmos.",
     "date": "2025-01-02"},
    {"title": "Rotation curves", "url": "https://b.example/rot", "snippet": "Curves stay flat far out."},
    {"title": "Vera Rubin", "url": "https://c.example/rubin", "snippet": "Rubin measured rotation."},
]


def agent_body(status: str = "completed", cost: float | None = 0.0123, text: str | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"input_tokens": 900, "output_tokens": 300, "total_tokens": 1200}
    if cost is not None:
        usage["cost"] = {"currency": "USD", "input_cost": 0.002, "output_cost": 0.0053, "tool_calls_cost": 0.005,
                         "total_cost": cost}
    text = text if text is not None else (
        "Dark matter makes up about 27% of the universe.[1] Galaxy rotation curves stay flat far from the "
        "centre.[2][1] Vera Rubin measured those curves in the 1970s.[3]")
    return {
        "id": "resp_1", "object": "response", "created_at": 1764400000, "model": "perplexity/sonar",
        "status": status,
        "output": [
            {"type": "search_results", "queries": ["dark matter galaxy rotation"], "results": RESULTS},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": text, "annotations": [
                    {"type": "url_citation", "url": "https://d.example/extra", "title": "Extra",
                     "start_index": 0, "end_index": 10}]}]},
        ],
        "usage": usage,
    }


def test_agent_wire_format_sources_and_reported_cost() -> None:
    with FakeApi(Reply(body=agent_body())) as fake:
        ctx = make_ctx(fake, "perplexity", preset="pro-search", max_steps=3)
        out = PerplexityResearch().research(EPISODE, ctx)
    (req,) = fake.requests
    assert req.method == "POST" and req.path == "/v1/responses"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = req.json()
    assert body["preset"] == "pro-search" and "model" not in body and body["max_steps"] == 3
    assert body["tools"] == [{"type": "web_search"}]
    assert "Dark matter" in body["input"] and "galaxy rotation" in body["input"]
    assert "[1]" in body["instructions"]  # asks for numbered sources
    assert [(f.text, f.source, f.title) for f in out.findings] == [
        ("Dark matter makes up about 27% of the universe.", "https://a.example/dm", "Dark matter"),
        ("Galaxy rotation curves stay flat far from the centre.", "https://b.example/rot", "Rotation curves"),
        ("Vera Rubin measured those curves in the 1970s.", "https://c.example/rubin", "Vera Rubin"),
    ]
    # sources: the search_results item in order, then what the text cited beyond them
    assert out.citations == [r["url"] for r in RESULTS] + ["https://d.example/extra"]
    (usage,) = out.usage
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.cost_usd) == (
        "perplexity/sonar", 900, 300, 0.0123)
    assert cost_of(out.usage, ctx.settings) == 0.0123  # usage.cost.total_cost wins over the table


def test_agent_model_overrides_the_preset_and_unmarked_text_falls_back_to_results() -> None:
    with FakeApi(Reply(body=agent_body(text="An answer without any markers.", cost=None))) as fake:
        ctx = make_ctx(fake, "perplexity", model="openai/gpt-5-mini")
        out = PerplexityResearch().research(EPISODE, ctx)
    body = fake.requests[0].json()
    assert body["model"] == "openai/gpt-5-mini" and body["preset"] == "fast-search"
    assert [f.source for f in out.findings] == [r["url"] for r in RESULTS]  # the results' snippets
    assert out.usage[0].cost_usd is None and cost_of(out.usage, ctx.settings) > 0  # priced by the table


def test_a_failed_run_with_http_200_is_a_failed_call_then_retried() -> None:
    failed = agent_body(status="failed")
    failed["output"] = []
    failed["error"] = {"code": "upstream_error", "message": "the model provider timed out"}
    with FakeApi(Reply(body=agent_body())) as fake:
        fake.queue(Reply(body=failed))
        out = PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity"))
    assert len(fake.requests) == 2 and len(out.findings) == 3


def test_a_run_that_keeps_failing_reports_the_servers_reason() -> None:
    failed = {"id": "r", "status": "failed", "output": [], "error": {"message": "the model provider timed out"}}
    with FakeApi(Reply(body=failed)) as fake, pytest.raises(StageError) as info:
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", max_attempts=2))
    assert info.value.retryable and "agent run failed: the model provider timed out" in str(info.value)
    assert len(fake.requests) == 2


@pytest.mark.parametrize("fault", [
    error(429, "rate limited", type_="rate_limit_exceeded", headers={"Retry-After": "0.3"}),
    error(502, "bad gateway"),
    Reply(body=agent_body(), truncate=200),  # the connection dies mid-body
    Reply(body='{"id": "r", "status": "completed", "output": [', content_type="application/json"),
    Reply(body=agent_body(status="in_progress", text="")),
], ids=["429-retry-after", "502", "truncated", "malformed", "in-progress"])
def test_agent_faults_are_retried(fault: Reply) -> None:
    limiter = RecordingLimiter()
    with FakeApi(Reply(body=agent_body())) as fake:
        fake.queue(fault)
        out = PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", limiter=limiter))
    assert len(fake.requests) == 2 and out.findings
    if fault.status == 429:
        assert limiter.paused == [("perplexity", 0.3)]


def test_search_api_wire_format_findings_and_flat_price() -> None:
    with FakeApi(Reply(body={"id": "s1", "results": RESULTS + [{"title": "no url"}]})) as fake:
        ctx = make_ctx(fake, "perplexity", api="search", search_recency_filter="year",
                       search_domain_filter=["nasa.gov"])
        ctx.settings.research.max_findings = 5
        out = PerplexityResearch().research(EPISODE, ctx)
    (req,) = fake.requests
    assert req.path == "/search" and req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json() == {"query": "Dark matter galaxy rotation", "max_results": 5,
                          "search_recency_filter": "year", "search_domain_filter": ["nasa.gov"]}
    assert [(f.text, f.source, f.location) for f in out.findings] == [
        (r["snippet"], r["url"], f"result {i}") for i, r in enumerate(RESULTS, 1)]
    assert out.grounded and out.answer is None and out.citations == [r["url"] for r in RESULTS]
    assert cost_of(out.usage, ctx.settings) == pytest.approx(0.005)


def test_search_api_malformed_answer_is_retried() -> None:
    with FakeApi(Reply(body={"id": "s1", "results": RESULTS})) as fake:
        fake.queue(Reply(body={"id": "s1", "results": "nope"}))
        out = PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api="search"))
    assert len(fake.requests) == 2 and len(out.findings) == 3


def test_search_filters_with_the_agent_api_are_refused_at_load_not_dropped(tmp_path: Any) -> None:
    from podspool.daemon.config import ConfigError, load_config

    cfg = tmp_path / "podspool.toml"
    cfg.write_text('[research]\nprovider = "perplexity"\n[providers.perplexity]\nsearch_domain_filter = ["nih.gov"]\n')
    with pytest.raises(ConfigError) as err:  # the default api is "agent"
        load_config(cfg)
    assert "search_domain_filter" in str(err.value) and '"sonar"' in str(err.value)
    cfg.write_text('[research]\nprovider = "perplexity"\n[providers.perplexity]\napi = "sonar"\n'
                   'search_domain_filter = ["nih.gov"]\n')
    assert load_config(cfg).providers.perplexity.search_domain_filter == ["nih.gov"]
