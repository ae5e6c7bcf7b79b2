"""The local research provider (the default): BM25 over the episode's own sources, offline but for URLs.

It reads the episode's `sources` (files confined to the configured roots, in any format documents.py
reads, and URLs, fetched: library.py) and every document under `research.sources_dir`, splits them
into passages, and keeps the passages most relevant to the topic, title and notes. It never invents
anything: no source, no findings, `grounded` false.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger
from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext, StageError, Usage
from podspool.stages.script import segments
from podspool.stages.sources import documents
from podspool.stages.sources.documents import DocumentInfo
from podspool.stages.sources.library import EpisodeSources
from podspool.stages.sources.passages import Passage
from podspool.stages.sources.rank import query_of, rank
from podspool.stages.sources.resolve import SourceError, confined_files


class LocalResearch:
    name = "local"
    dry_run = False

    def research(self, episode: EpisodeInput, ctx: StageContext,
                 sources: EpisodeSources | None = None) -> ResearchOutput:
        settings = ctx.settings.research
        loaded = (sources or EpisodeSources(episode, ctx)).load()
        own = loaded.passages
        searched = list(loaded.searched)
        infos = list(loaded.documents)
        shared: list[Passage] = []
        if settings.sources_dir:
            for path, label in _dir_files(Path(settings.sources_dir)):
                try:
                    doc = documents.open_document(path, label)
                    shared.extend(doc)
                except SourceError as exc:  # one unreadable file in the folder must not fail every episode
                    logger.warning("research.sources_dir: {} is skipped: {}", label, exc)
                    searched.append(f"{label} (skipped: {exc})")
                    continue
                infos.append(doc.info)
                searched.append(label)
        target = segments.target_words(episode.show.minutes, ctx.settings.audio.words_per_minute)
        if target is None:
            findings = rank(query_of(episode), own, shared, settings.max_findings)
        else:  # a target length: as many of the best passages as the episode has words to fill
            findings = segments.enough_findings(rank(query_of(episode), own, shared, segments.MAX_FINDINGS),
                                                target, settings.max_findings)
        citations = list(dict.fromkeys(f.source for f in findings))
        chars = sum(len(p.text) for p in own + shared)
        logger.debug("local research {}: {} passages, {} findings", episode.episode_id,
                     len(own) + len(shared), len(findings))
        return ResearchOutput(provider=self.name, findings=findings, citations=citations, searched=searched,
                              usage=[Usage(api="local", model="bm25", characters=chars)],
                              grounded=bool(findings), sources=_records(infos, citations))


def _records(infos: list[DocumentInfo], citations: list[str]) -> list[dict[str, object]]:
    cited = set(citations)
    return [i.record() for i in infos if i.name in cited]


def _dir_files(folder: Path) -> list[tuple[Path, str]]:
    """(path, name) of every document under `folder`, confined to it by what each file is (no link
    followed, no FIFO or device, the folder's size capped: resolve.confined_files); the name is relative
    to the folder, never absolute."""
    base = folder.expanduser()
    if not base.is_absolute():
        base = Path.cwd() / base
    if not base.is_dir():
        raise StageError(f"research.sources_dir {folder} is not a folder", retryable=False)
    files, skipped = confined_files(base)
    for why in skipped:
        logger.warning("research.sources_dir {}: {} is left out", folder, why)
    root = base.resolve()
    return [(path, str(path.relative_to(root))) for path in files if documents.kind_of(path)]
