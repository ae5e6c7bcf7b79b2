"""What a source may be: the kinds podspool reads, their size limits, and the error for one it refuses.

The lowest layer of stages/sources/: resolve.py (where a source may come from), documents.py (its text),
addresses.py and fetch.py (URLs) all build on it, so none of them needs another to say what a source is.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SOURCE_SUFFIXES = (".md", ".txt", ".html", ".htm", ".pdf", ".docx", ".epub")
TEXT_SUFFIXES = (".md", ".txt", ".html", ".htm")
MAX_SOURCE_BYTES = 8 * 1024 * 1024  # a source note is text; anything bigger is a mistake, not research
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # a PDF, DOCX or EPUB carries fonts and images besides its text


class SourceError(ValueError):
    """A source that may not or cannot be read; the message is fit for an operator."""


def is_url(spec: str) -> bool:
    """True for an http(s) URL with a host (fetched at research time, see fetch.py)."""
    try:
        parts = urlsplit(spec.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
