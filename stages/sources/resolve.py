"""Safe resolution of an episode's sources: local files confined to the configured roots, or URLs.

A manifest comes from outside, so a source path is untrusted: it must not read `/etc/shadow` through
`../..` or a symlink. The daemon calls `check_sources` at manifest intake (so a bad path is rejected
with the manifest, before anything is spent) and the research stage calls `resolve_source` again at
run time (the file system may have changed in between).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

SOURCE_SUFFIXES = (".md", ".txt", ".html", ".htm")
MAX_SOURCE_BYTES = 8 * 1024 * 1024  # a source note is text; anything bigger is a mistake, not research


class SourceError(ValueError):
    """A source that may not or cannot be read; the message is fit for an operator."""


def is_url(spec: str) -> bool:
    """True for an http(s) URL with a host (the offline provider lists it without fetching it)."""
    try:
        parts = urlsplit(spec.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def roots_from_settings(source_roots: Iterable[str], cwd: Path | None = None) -> list[Path]:
    """The allowed roots, absolute and resolved; empty config means the working directory."""
    base = cwd or Path.cwd()
    roots = [Path(r).expanduser() for r in source_roots] or [base]
    return [(r if r.is_absolute() else base / r).resolve() for r in roots]


def resolve_source(spec: str, roots: Sequence[Path], base: Path | None = None) -> Path:
    """The real path of source `spec`: relative to `base` (default roots[0]), symlinks resolved, inside a root.

    Raises SourceError when the result escapes every root, is not a regular file, has a suffix other
    than .md/.txt/.html/.htm, or is larger than MAX_SOURCE_BYTES.
    """
    if not roots:
        raise SourceError("no source roots configured")
    text = spec.strip()
    if not text:
        raise SourceError("empty source path")
    if "\x00" in text:
        raise SourceError(f"source {spec!r}: path contains a NUL byte")
    resolved_roots = [Path(r).resolve() for r in roots]
    raw = Path(text).expanduser()
    candidate = raw if raw.is_absolute() else (base or resolved_roots[0]) / raw
    # strict=False: a missing file should be reported as missing, not as a resolution error
    real = candidate.resolve(strict=False)
    if not any(real.is_relative_to(root) for root in resolved_roots):
        allowed = ", ".join(str(r) for r in resolved_roots)
        raise SourceError(f"source {spec!r} resolves to {real}, outside the allowed source roots ({allowed}); "
                          f"to allow it, add \"{real.parent}\" (or a folder above it) to [research] source_roots")
    if real.suffix.lower() not in SOURCE_SUFFIXES:
        raise SourceError(f"source {spec!r}: only {', '.join(SOURCE_SUFFIXES)} files are read, not {real.name!r}")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise SourceError(f"source {spec!r}: no such file ({real})") from None
    except OSError as exc:
        raise SourceError(f"source {spec!r}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"source {spec!r}: {real} is not a regular file")
    if st.st_size > MAX_SOURCE_BYTES:
        raise SourceError(f"source {spec!r}: {st.st_size} bytes, more than the {MAX_SOURCE_BYTES} allowed")
    if not os.access(real, os.R_OK):
        raise SourceError(f"source {spec!r}: {real} is not readable")
    return real


def check_sources(specs: Iterable[str], roots: Sequence[Path], base: Path | None = None) -> list[str]:
    """One problem message per bad spec (URLs are fine); an empty list means all can be read."""
    problems: list[str] = []
    for spec in specs:
        if not isinstance(spec, str):
            problems.append(f"source {spec!r}: must be a string (a path or an http(s) URL)")
            continue
        if is_url(spec):
            continue
        try:
            resolve_source(spec, roots, base)
        except SourceError as exc:
            problems.append(str(exc))
    return problems
