"""Research through Perplexity (Bearer key), on one of three APIs (`[providers.perplexity] api`):

- agent (default): the Agent API, `POST {base_url}/v1/responses` with the web_search tool
  (perplexity_agent.py);
- sonar: Sonar chat completions, `POST {base_url}/chat/completions` (perplexity_wire.py);
- search: the Search API's raw results, `POST {base_url}/search`, which the writer grounds on
  itself (perplexity_search.py).

Each wire format lives in a request/response adapter pair; all three answers become findings the
same way (`findings_from`).
"""

from __future__ import annotations

from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext
from podspool.stages.providers.http import HttpClient, parse_json, require_key
from podspool.stages.providers.perplexity import agent, search
from podspool.stages.providers.perplexity.wire import (
    API,
    SYSTEM_PROMPT,
    findings_from,
    question_of,
    sonar_request,
    sonar_response,
)
from podspool.stages.sources.library import EpisodeSources
from podspool.stages.sources.rank import query_of, rank, web_records, with_own


class PerplexityResearch:
    name = "perplexity"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def research(self, episode: EpisodeInput, ctx: StageContext,
                 sources: EpisodeSources | None = None) -> ResearchOutput:
        settings = ctx.settings.providers.perplexity
        key = require_key(ctx, API)
        max_findings = ctx.settings.research.max_findings
        # the episode's own files and URLs are read (and fetched) before anything is paid for
        loaded = (sources or EpisodeSources(episode, ctx)).load()
        own = rank(query_of(episode), loaded.passages, [], max_findings)
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        if settings.api == "search":
            body = search.search_request(episode, settings, max_findings)
            found = self.http.call(ctx, settings, "/search", body=body, headers=headers, key=key,
                                   parse=lambda r: search.search_response(parse_json(r)))
            kept = with_own(own, found.findings, max_findings)
            cited = list(dict.fromkeys(f.source for f in kept))
            return ResearchOutput(provider=self.name, findings=kept, citations=cited,
                                  searched=loaded.searched + [body["query"]], usage=[found.usage], grounded=bool(kept),
                                  sources=loaded.records(cited) + web_records(found.findings))
        if settings.api == "agent":
            body = agent.agent_request(episode, settings, SYSTEM_PROMPT.format(n=max_findings))
            answer = self.http.call(ctx, settings, "/v1/responses", body=body, headers=headers, key=key,
                                    parse=lambda r: agent.agent_response(parse_json(r), settings))
        else:
            body = sonar_request(episode, settings, max_findings)
            answer = self.http.call(ctx, settings, "/chat/completions", body=body, headers=headers, key=key,
                                    parse=lambda r: sonar_response(parse_json(r), settings))
        web = findings_from(answer, max_findings)
        findings = with_own(own, web, max_findings)
        # appended: the answer's [n] markers count into its own citations, which keep their places
        citations = list(dict.fromkeys(answer.citations + [f.source for f in findings if f in own]))
        return ResearchOutput(provider=self.name, findings=findings, citations=citations,
                              searched=loaded.searched + [question_of(episode)], usage=[answer.usage],
                              grounded=bool(findings), answer=answer.answer,
                              sources=loaded.records(citations) + web_records(web))
