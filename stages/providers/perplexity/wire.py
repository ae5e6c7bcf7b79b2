"""What Perplexity's three APIs share, and the Sonar adapter: the question an episode asks, the
answer's shape, how an answer becomes findings (`findings_from`), and Sonar chat completions'
request/response pair. perplexity_agent.py and perplexity_search.py hold the other two adapters;
perplexity.py picks one by `[providers.perplexity] api`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from podspool.stages.base import EpisodeInput, Finding, Usage
from podspool.stages.providers.http import MalformedResponse
from podspool.stages.script import language
from podspool.stages.settings import PerplexitySettings

API = "perplexity"
SYSTEM_PROMPT = (
    "You research facts for a two-host podcast episode. Answer in plain sentences, no headings, no "
    "lists. Give {n} distinct, concrete, checkable statements about the topic, each a single "
    "sentence followed by the number of its source in brackets, like [1]."
)
THINK = re.compile(r"<think>.*?</think>", re.DOTALL)  # sonar-reasoning / deep-research put it inline
MARKER = re.compile(r"\[(\d+)\]")
MARKER_WITH_SPACE = re.compile(r"\s*\[\d+\]")
SENTENCE_END = re.compile(r"(?<=[.!?])(?:(?:\[\d+\])+)?\s+")


@dataclass
class Answer:
    """A prose answer with [n] markers into `citations`, whichever API gave it."""

    answer: str
    citations: list[str]
    search_results: list[dict[str, Any]]
    usage: Usage
    extra: dict[str, Any] = field(default_factory=dict)


def question_of(episode: EpisodeInput) -> str:
    question = f"Topic: {episode.topic}"
    if episode.title:
        question += f"\nEpisode title: {episode.title}"
    if episode.notes:
        question += f"\nFocus: {episode.notes}"
    tag = episode.show.language
    if language.primary(tag) != "en":  # the episode is written in it: findings in it need no translating
        name = language.name(tag)
        question += (f"\nLanguage: the episode is in {name} ({tag}); prefer sources in {name}, and write each "
                     f"finding in {name}.")
    return question


def sonar_request(episode: EpisodeInput, settings: PerplexitySettings, max_findings: int) -> dict[str, Any]:
    question = question_of(episode)
    body: dict[str, Any] = {
        "model": settings.model or "sonar",
        "messages": [{"role": "system", "content": SYSTEM_PROMPT.format(n=max_findings)},
                     {"role": "user", "content": question}],
        "web_search_options": {"search_context_size": settings.search_context_size},
    }
    if settings.search_recency_filter:
        body["search_recency_filter"] = settings.search_recency_filter
    if settings.search_domain_filter:
        body["search_domain_filter"] = list(settings.search_domain_filter)
    return body


def sonar_response(doc: dict[str, Any], settings: PerplexitySettings) -> Answer:
    try:
        answer = doc["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponse("no choices[0].message.content in the answer") from None
    if not isinstance(answer, str):
        raise MalformedResponse("choices[0].message.content is not text")
    citations = [c for c in doc.get("citations") or [] if isinstance(c, str)]
    results = [r for r in doc.get("search_results") or [] if isinstance(r, dict)]
    if not citations:  # newer responses may only carry search_results
        citations = [str(r["url"]) for r in results if r.get("url")]
    raw_usage = doc.get("usage")
    u: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    raw_cost = u.get("cost")
    cost = raw_cost.get("total_cost") if isinstance(raw_cost, dict) else None
    usage = Usage(
        api=API, model=str(doc.get("model") or settings.model or "sonar"),
        # citation and reasoning tokens are billed too; counting them at the input/output rates
        # over-estimates a little when the server does not report its own cost
        input_tokens=_int(u.get("prompt_tokens")) + _int(u.get("citation_tokens")),
        output_tokens=_int(u.get("completion_tokens")) + _int(u.get("reasoning_tokens")),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )
    return Answer(THINK.sub("", answer).strip(), citations, results, usage)


def findings_from(answer: Answer, max_findings: int) -> list[Finding]:
    """One finding per cited statement, its source the statement's first [n]; else the search results."""
    titles = {str(r.get("url")): r.get("title") for r in answer.search_results}
    findings: list[Finding] = []
    for sentence in split_statements(answer.answer):
        refs = [int(n) for n in MARKER.findall(sentence) if 1 <= int(n) <= len(answer.citations)]
        text = MARKER_WITH_SPACE.sub("", sentence).strip()
        if not refs or len(text) < 12:
            continue
        url = answer.citations[refs[0] - 1]
        findings.append(Finding(text=text, source=url, location="".join(f"[{r}]" for r in refs),
                                score=1.0, title=titles.get(url)))
    if not findings:
        for i, r in enumerate(answer.search_results, 1):
            if r.get("url") and (r.get("snippet") or r.get("title")):
                findings.append(Finding(text=str(r.get("snippet") or r.get("title")), source=str(r["url"]),
                                        location=f"result {i}", score=0.5, title=r.get("title")))
    for rank, f in enumerate(findings):  # earlier statements answer the question most directly
        f.score = round(f.score / (1 + 0.05 * rank), 4)
    return findings[:max_findings]


def split_statements(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|#+)\s*", "", line).replace("**", "").strip()
        if not line:
            continue
        line = re.sub(r"([.!?])\s+((?:\[\d+\])+)", r"\1\2", line)  # "Fact. [1]" belongs to "Fact."
        pos = 0
        for m in SENTENCE_END.finditer(line):
            out.append(line[pos:m.end()].strip())
            pos = m.end()
        if line[pos:].strip():
            out.append(line[pos:].strip())
    return out


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) else 0
