"""Perplexity's Agent API: `POST {base_url}/v1/responses` (OpenAI Responses format, Bearer key).

The request names a `preset` (fast-search, pro-search, ...) and/or a `model` ("provider/model"),
with `instructions` and the `web_search` tool. The answer's `output` holds `message` items (the
text, with url_citation annotations) and a `search_results` item (the sources, in the order the
text's [n] markers count). The server reports the call's cost in `usage.cost.total_cost`.

A run can fail with HTTP 200: `status: "failed"` and an `error`. That is a failed call, retried
like a 5xx (the run failed upstream, not the request), then reported with the server's reason.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from podspool.stages.base import EpisodeInput, StageError, Usage
from podspool.stages.providers.http import MalformedResponse, TransientError
from podspool.stages.providers.perplexity.wire import API, THINK, Answer, _int, question_of
from podspool.stages.settings import PerplexitySettings

FAILED = frozenset({"failed", "cancelled"})
UNFINISHED = frozenset({"queued", "in_progress"})  # only a background run answers before it ends


class RunFailed(TransientError):
    """The agent run ended in `status: "failed"`."""


def agent_request(episode: EpisodeInput, settings: PerplexitySettings, instructions: str) -> dict[str, Any]:
    if not (settings.preset or settings.model):
        raise StageError("perplexity: api = \"agent\" needs a preset or a model", retryable=False)
    body: dict[str, Any] = {"input": question_of(episode), "instructions": instructions,
                            "tools": [{"type": "web_search"}]}
    if settings.preset:
        body["preset"] = settings.preset
    if settings.model:  # overrides the preset's model
        body["model"] = settings.model
    if settings.max_steps:
        body["max_steps"] = settings.max_steps
    return body


def agent_response(doc: dict[str, Any], settings: PerplexitySettings) -> Answer:
    status = doc.get("status")
    if status in FAILED:
        err = doc.get("error")
        reason = (err.get("message") or err.get("code")) if isinstance(err, dict) else err
        raise RunFailed(f"agent run {status}: {reason or 'no reason given'}")
    if status in UNFINISHED:
        raise MalformedResponse(f"agent run still {status} in a synchronous answer")
    texts: list[str] = []
    results: list[dict[str, Any]] = []
    cited: list[str] = []
    for item in doc.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                    cited += [str(a["url"]) for a in part.get("annotations") or []
                              if isinstance(a, dict) and a.get("type") == "url_citation" and a.get("url")]
        elif item.get("type") == "search_results":
            results += [r for r in item.get("results") or [] if isinstance(r, dict) and r.get("url")]
    text = THINK.sub("", "\n\n".join(texts)).strip()
    if not text:
        raise MalformedResponse("no output_text in the agent's answer")
    if status == "incomplete":
        logger.warning("perplexity: the agent run is incomplete ({}); its partial answer is used",
                       doc.get("incomplete_details"))
    citations = list(dict.fromkeys([str(r["url"]) for r in results] + cited))
    return Answer(text, citations, results, _usage(doc, settings))


def _usage(doc: dict[str, Any], settings: PerplexitySettings) -> Usage:
    raw = doc.get("usage")
    u: dict[str, Any] = raw if isinstance(raw, dict) else {}
    raw_cost = u.get("cost")
    cost = raw_cost.get("total_cost") if isinstance(raw_cost, dict) else None
    return Usage(api=API, model=str(doc.get("model") or settings.model or settings.preset),
                 input_tokens=_int(u.get("input_tokens")), output_tokens=_int(u.get("output_tokens")),
                 cost_usd=float(cost) if isinstance(cost, int | float) else None)
