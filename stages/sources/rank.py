"""Passages ranked against an episode's question (BM25), so findings are the most relevant paragraphs."""

from __future__ import annotations

from podspool.stages.base import EpisodeInput, Finding
from podspool.stages.sources.passages import Passage
from podspool.stages.words import tokens
from rank_bm25 import BM25Plus


def query_of(episode: EpisodeInput) -> str:
    return " ".join(x for x in (episode.topic, episode.title, episode.notes) if x)


def rank(query: str, own: list[Passage], shared: list[Passage], limit: int) -> list[Finding]:
    """The `limit` passages most relevant to `query`, best first.

    Passages of the episode's own sources are all eligible (the operator chose them for this
    episode); passages of the shared sources_dir must share at least one word with the query,
    or every episode would be padded with whatever the folder holds.
    """
    seen: set[str] = set()
    passages: list[Passage] = []
    is_own: list[bool] = []
    for p, mine in [(p, True) for p in own] + [(p, False) for p in shared]:
        key = " ".join(p.text.lower().split())
        if key not in seen:  # the same paragraph in two files is one finding
            seen.add(key)
            passages.append(p)
            is_own.append(mine)
    if not passages:
        return []
    corpus = [tokens(f"{p.heading or ''} {p.text}") for p in passages]
    query_tokens = tokens(query)
    # BM25Plus rather than Okapi: Okapi's idf turns negative for a word in most passages, which is
    # exactly the topic word when a single source is about the topic.
    # no query words, or passages with none (Japanese or Chinese text: tokens() reads spaced words only)
    # leave nothing to rank by: the sources' own order stands, where BM25 would divide by zero
    words_in_corpus = query_tokens and any(corpus)
    scores = BM25Plus(corpus).get_scores(query_tokens) if words_in_corpus else [0.0] * len(passages)
    query_set = set(query_tokens)
    eligible = [i for i in range(len(passages)) if is_own[i] or query_set & set(corpus[i])]
    best = sorted(eligible, key=lambda i: (-float(scores[i]), i))[:limit]
    return [Finding(text=passages[i].text, source=passages[i].source, location=passages[i].location,
                    score=round(float(scores[i]), 4), title=passages[i].heading) for i in best]


def with_own(own: list[Finding], found: list[Finding], limit: int) -> list[Finding]:
    """A web provider's findings with the episode's own sources first: the operator named those sources
    for this episode, so they keep at least half the places (all of them when the search found nothing)."""
    keep = own[: max(limit - len(found), (limit + 1) // 2)]
    return (keep + found)[:limit]


def web_records(findings: list[Finding]) -> list[dict[str, str]]:
    """What may be published about each web result cited: its URL and title."""
    out: dict[str, dict[str, str]] = {}
    for f in findings:
        if f.source not in out:
            out[f.source] = {"name": f.source, "kind": "web", "url": f.source, **({"title": f.title} if f.title else {})}
    return list(out.values())
