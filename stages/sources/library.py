"""An episode's own sources, read once per research run: files through documents.py, URLs fetched.

The research stage builds `EpisodeSources` for every provider; it reads nothing until a provider asks
(`load`), so a dry run never touches a file or the network. A fetched URL's passages are kept in the
episode folder (`source-<hash>.json`, written whole), so a retried research stage reads them back
instead of fetching again. Every passage and record names its source by a publishable name: the URL,
or the file's name (with its parent folder when two sources share a name), never a path of the machine.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import fsio
from podspool.stages.base import EpisodeInput, StageContext, StageError
from podspool.stages.sources import documents
from podspool.stages.sources.documents import DocumentInfo
from podspool.stages.sources.fetch import FetchFailed, fetch
from podspool.stages.sources.passages import Passage
from podspool.stages.sources.resolve import SourceError, is_url, resolve_source, roots_from_settings

CACHE_PREFIX = "source-"


@dataclass
class SourceSet:
    passages: list[Passage] = field(default_factory=list)
    documents: list[DocumentInfo] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)

    def records(self, cited: list[str] | None = None) -> list[dict[str, Any]]:
        """What may be published about each document (all, or those named in `cited`)."""
        wanted = None if cited is None else set(cited)
        return [d.record() for d in self.documents if wanted is None or d.name in wanted]


class EpisodeSources:
    """The episode's `sources`, loaded on first use; `cache` is the episode folder (None: no cache)."""

    def __init__(self, episode: EpisodeInput, ctx: StageContext, cache: Path | None = None) -> None:
        self.episode = episode
        self.ctx = ctx
        self.cache = cache
        self._loaded: SourceSet | None = None

    def load(self) -> SourceSet:
        """Every passage of every source; StageError (not retryable) for a source that cannot be read,
        (retryable) for a URL that could not be fetched this time."""
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> SourceSet:
        settings = self.ctx.settings.research
        roots = roots_from_settings(settings.source_roots)
        out = SourceSet()
        files: list[tuple[str, Path]] = []
        try:
            for spec in self.episode.sources:
                if not is_url(spec):
                    files.append((spec, resolve_source(spec, roots)))
            names = publishable_names([path for _, path in files])
            for spec in self.episode.sources:
                if is_url(spec):
                    info, passages = self._url(spec, settings.allow_private_urls)
                else:
                    path = resolve_source(spec, roots)
                    doc = documents.open_document(path, names[path])
                    passages = list(doc)
                    info = doc.info
                    if not passages and info.kind in ("pdf", "docx", "epub"):
                        raise SourceError(f"source {info.name}: no text could be extracted")
                out.passages.extend(passages)
                out.documents.append(info)
                out.searched.append(info.name)
        except FetchFailed as exc:  # the network or the server: another attempt may get through
            raise StageError(str(exc), retryable=True) from None
        except SourceError as exc:  # the same next time: fail the episode now, with the reason
            raise StageError(str(exc), retryable=False) from None
        return out

    def _url(self, url: str, allow_private: bool) -> tuple[DocumentInfo, list[Passage]]:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
        cached = self.cache / f"{CACHE_PREFIX}{key}.json" if self.cache is not None else None
        if cached is not None and cached.exists():  # written whole, so present means complete
            doc = fsio.read_json(cached)
            info = DocumentInfo(**doc["info"])
            logger.debug("source {}: read from the episode's cache ({} passages)", url, info.passages)
            return info, [Passage(**p) for p in doc["passages"]]
        with tempfile.TemporaryDirectory(prefix="podspool-fetch-") as scratch:
            body = Path(scratch) / "body"
            fetched = fetch(url, body, self.ctx, allow_private)
            doc_ = documents.open_document(body, url, kind=fetched.kind, url=url)
            passages = list(doc_)
        info = doc_.info
        if not passages:
            raise SourceError(f"source {url}: no text could be extracted from its {fetched.content_type}")
        if cached is not None:
            fsio.write_json(cached, {"url": url, "final_url": fetched.final_url, "content_type": fetched.content_type,
                                     "bytes": fetched.size, "info": vars(info),
                                     "passages": [vars(p) for p in passages]})
        logger.info("source {}: fetched {} bytes of {}, {} passages", url, fetched.size, fetched.content_type,
                    len(passages))
        return info, passages


def publishable_names(paths: list[Path]) -> dict[Path, str]:
    """path -> its file name, or parent/name where two paths share a file name."""
    names: dict[Path, str] = {}
    by_name: dict[str, set[Path]] = {}
    for p in paths:
        by_name.setdefault(p.name, set()).add(p)
    for p in paths:
        names[p] = p.name if len(by_name[p.name]) == 1 else f"{p.parent.name}/{p.name}"
    return names
