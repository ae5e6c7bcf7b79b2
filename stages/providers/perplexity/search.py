"""Perplexity's Search API: `POST {base_url}/search` returns ranked web results, no prose.

Each result (title, url, snippet) becomes a finding; the writer grounds the script on them itself,
so research costs one flat-priced request (model "search" in the price table) and no tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podspool.stages.base import EpisodeInput, Finding, Usage
from podspool.stages.providers.http import MalformedResponse
from podspool.stages.providers.perplexity.wire import API
from podspool.stages.script import language
from podspool.stages.settings import PerplexitySettings

MAX_RESULTS = 20  # the Search API's ceiling per request


@dataclass
class Found:
    findings: list[Finding]
    usage: Usage


def search_request(episode: EpisodeInput, settings: PerplexitySettings, max_findings: int) -> dict[str, Any]:
    query = " ".join(x for x in (episode.title or episode.topic, episode.notes) if x)
    body: dict[str, Any] = {"query": query, "max_results": min(MAX_RESULTS, max_findings)}
    if settings.search_recency_filter:
        body["search_recency_filter"] = settings.search_recency_filter
    if settings.search_domain_filter:
        body["search_domain_filter"] = list(settings.search_domain_filter)
    lang = language.primary(episode.show.language)
    if lang != "en":  # ISO 639-1 codes; an English episode keeps today's unfiltered search
        body["search_language_filter"] = [lang]
    return body


def search_response(doc: dict[str, Any]) -> Found:
    results = doc.get("results")
    if not isinstance(results, list):
        raise MalformedResponse("no results list in the search answer")
    findings: list[Finding] = []
    for rank, r in enumerate(results):
        if not isinstance(r, dict) or not r.get("url"):
            continue
        text = str(r.get("snippet") or r.get("title") or "").strip()
        if text:
            findings.append(Finding(text=text, source=str(r["url"]), location=f"result {rank + 1}",
                                    score=round(1.0 / (1 + 0.05 * rank), 4), title=r.get("title")))
    return Found(findings, Usage(api=API, model="search"))
