"""Research through a Tavily-compatible search API (`POST {base_url}/search`, Bearer key)."""

from __future__ import annotations

from typing import Any

import requests
from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, Usage
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json, require_key
from podspool.stages.sources.library import EpisodeSources
from podspool.stages.sources.rank import query_of, rank, web_records, with_own

API = "websearch"


def search_query(episode: EpisodeInput) -> str:
    parts = [episode.title or episode.topic]
    if episode.title and episode.topic not in episode.title:
        parts.append(episode.topic)
    if episode.notes:
        parts.append(episode.notes)
    return " — ".join(parts)[:400]  # Tavily refuses very long queries


def findings_from(doc: dict[str, Any], max_findings: int) -> list[Finding]:
    results = doc.get("results")
    if not isinstance(results, list):
        raise MalformedResponse("no results list in the answer")
    findings = []
    for i, r in enumerate(results, 1):
        if not isinstance(r, dict) or not r.get("url") or not (r.get("content") or r.get("title")):
            continue
        score = r.get("score")
        findings.append(Finding(text=str(r.get("content") or r.get("title")).strip(), source=str(r["url"]),
                                location=f"result {i}", score=float(score) if isinstance(score, int | float) else 0.0,
                                title=r.get("title")))
    findings.sort(key=lambda f: f.score, reverse=True)
    return findings[:max_findings]


class WebSearchResearch:
    name = "websearch"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def research(self, episode: EpisodeInput, ctx: StageContext,
                 sources: EpisodeSources | None = None) -> ResearchOutput:
        settings = ctx.settings.providers.websearch
        key = require_key(ctx, API)
        max_findings = ctx.settings.research.max_findings
        # the episode's own files and URLs are read (and fetched) before anything is paid for
        loaded = (sources or EpisodeSources(episode, ctx)).load()
        own = rank(query_of(episode), loaded.passages, [], max_findings)
        query = search_query(episode)
        body = {"query": query, "search_depth": settings.search_depth,
                "max_results": settings.max_results, "include_answer": True}

        def parse(response: requests.Response) -> tuple[dict[str, Any], list[Finding]]:
            doc = parse_json(response)
            return doc, findings_from(doc, max_findings)

        doc, web = self.http.call(ctx, settings, "/search", body=body, parse=parse, key=key,
                                       headers={"Authorization": f"Bearer {key}"})
        # Tavily bills per search in credits (basic 1, advanced 2): the model is the depth
        usage = Usage(api=API, model=settings.search_depth)
        answer = doc.get("answer")
        findings = with_own(own, web, max_findings)
        cited = list(dict.fromkeys(f.source for f in findings))
        return ResearchOutput(provider=self.name, findings=findings, citations=cited,
                              searched=loaded.searched + [query], usage=[usage], grounded=bool(findings),
                              answer=answer if isinstance(answer, str) else None,
                              sources=loaded.records(cited) + web_records(web))
