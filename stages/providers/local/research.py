"""The local research provider (the default): BM25 over the episode's own source files, offline.

It reads the episode's `sources` (paths confined to the configured roots; URLs are listed as not
fetched, since this provider never touches the network) and every text file under
`research.sources_dir`, splits them into paragraphs, and keeps the paragraphs most relevant to the
topic, title and notes. It never invents anything: no source, no findings, `grounded` false.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger
from podspool.stages.base import EpisodeInput, Finding, ResearchOutput, StageContext, StageError, Usage
from podspool.stages.sources.passages import Passage, file_passages
from podspool.stages.sources.resolve import (
    SOURCE_SUFFIXES,
    SourceError,
    is_url,
    resolve_source,
    roots_from_settings,
)
from podspool.stages.words import tokens
from rank_bm25 import BM25Plus

MAX_DIR_FILES = 2000  # a sources_dir is a curated folder; a runaway tree should not stall a worker


class LocalResearch:
    name = "local"
    dry_run = False

    def research(self, episode: EpisodeInput, ctx: StageContext) -> ResearchOutput:
        settings = ctx.settings.research
        roots = roots_from_settings(settings.source_roots)
        searched: list[str] = []
        own: list[Passage] = []
        for spec in episode.sources:
            if is_url(spec):
                searched.append(f"{spec} (URL, not fetched: the local provider works offline)")
                continue
            try:
                path = resolve_source(spec, roots)
            except SourceError as exc:
                # a bad path will be just as bad next time: fail the episode now, with the reason
                raise StageError(str(exc), retryable=False) from None
            own.extend(file_passages(path, spec))
            searched.append(spec)
        shared: list[Passage] = []
        if settings.sources_dir:
            for path, label in _dir_files(Path(settings.sources_dir)):
                shared.extend(file_passages(path, label))
                searched.append(label)
        query = " ".join(x for x in (episode.topic, episode.title, episode.notes) if x)
        findings = rank(query, own, shared, settings.max_findings)
        citations = list(dict.fromkeys(f.source for f in findings))
        chars = sum(len(p.text) for p in own + shared)
        logger.debug("local research {}: {} passages, {} findings", episode.episode_id,
                     len(own) + len(shared), len(findings))
        return ResearchOutput(provider=self.name, findings=findings, citations=citations, searched=searched,
                              usage=[Usage(api="local", model="bm25", characters=chars)],
                              grounded=bool(findings))


def _dir_files(folder: Path) -> list[tuple[Path, str]]:
    base = folder.expanduser()
    if not base.is_absolute():
        base = Path.cwd() / base
    if not base.is_dir():
        raise StageError(f"research.sources_dir {folder} is not a folder", retryable=False)
    files: list[tuple[Path, str]] = []
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() in SOURCE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            files.append((path, str(folder / path.relative_to(base))))
            if len(files) >= MAX_DIR_FILES:
                logger.warning("research.sources_dir {}: only the first {} files are searched", folder, MAX_DIR_FILES)
                break
    return files


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
    scores = BM25Plus(corpus).get_scores(query_tokens) if query_tokens else [0.0] * len(passages)
    query_set = set(query_tokens)
    eligible = [i for i in range(len(passages)) if is_own[i] or query_set & set(corpus[i])]
    best = sorted(eligible, key=lambda i: (-float(scores[i]), i))[:limit]
    return [Finding(text=passages[i].text, source=passages[i].source, location=passages[i].location,
                    score=round(float(scores[i]), 4), title=passages[i].heading) for i in best]
