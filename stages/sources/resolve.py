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

from podspool.stages.sources.limits import (  # noqa: F401  (SourceError and is_url: resolve's own words too)
    MAX_DOCUMENT_BYTES,
    MAX_SOURCE_BYTES,
    SOURCE_SUFFIXES,
    TEXT_SUFFIXES,
    SourceError,
    is_url,
)


def roots_from_settings(source_roots: Iterable[str], cwd: Path | None = None) -> list[Path]:
    """The allowed roots, absolute and resolved; empty config means the working directory."""
    base = cwd or Path.cwd()
    roots = [Path(r).expanduser() for r in source_roots] or [base]
    return [(r if r.is_absolute() else base / r).resolve() for r in roots]


def resolve_source(spec: str, roots: Sequence[Path], base: Path | None = None) -> Path:
    """The real path of source `spec`: relative to `base` (default roots[0]), symlinks resolved, inside a root.

    Raises SourceError when the result escapes every root, is not a regular file, has a suffix not in
    SOURCE_SUFFIXES, or is larger than its limit (MAX_SOURCE_BYTES for text, MAX_DOCUMENT_BYTES else).
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
    limit = MAX_SOURCE_BYTES if real.suffix.lower() in TEXT_SUFFIXES else MAX_DOCUMENT_BYTES
    if st.st_size > limit:
        raise SourceError(f"source {spec!r}: {real.name} is {st.st_size} bytes, more than the {limit} allowed")
    if not os.access(real, os.R_OK):
        raise SourceError(f"source {spec!r}: {real} is not readable")
    return real


def read_source(spec: str, roots: Sequence[Path], base: Path | None = None) -> tuple[Path, bytes]:
    """`resolve_source`, then the file's bytes, read through one descriptor: opened without following a
    link and without blocking (a FIFO swapped in is refused, not waited on), checked on that descriptor
    (a regular file within its size limit, and still inside a root where the kernel says it is), and
    read no further than the limit, so a file swapped or grown after the check cannot be read instead."""
    real = resolve_source(spec, roots, base)
    limit = MAX_SOURCE_BYTES if real.suffix.lower() in TEXT_SUFFIXES else MAX_DOCUMENT_BYTES
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"source {spec!r}: cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"source {spec!r}: {real} is not a regular file")
        if st.st_size > limit:
            raise SourceError(f"source {spec!r}: {real.name} is {st.st_size} bytes, more than the {limit} allowed")
        where = Path(os.path.realpath(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else real
        if not any(where.is_relative_to(Path(r).resolve()) for r in roots):
            raise SourceError(f"source {spec!r}: {real} moved outside the allowed source roots while it was read")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise SourceError(f"source {spec!r}: {real.name} grew past {limit} bytes while it was read")
            chunks.append(chunk)
        return real, b"".join(chunks)
    except BlockingIOError:
        raise SourceError(f"source {spec!r}: {real} would block (not a plain file)") from None
    finally:
        os.close(fd)


MAX_DIR_FILES = 2000  # a sources folder is a curated set of documents, not a file system to crawl
MAX_DIR_BYTES = 512 * 1024 * 1024  # what one folder's documents may add up to


def confined_files(folder: Path, suffixes: Sequence[str] = SOURCE_SUFFIXES,
                   max_files: int = MAX_DIR_FILES, max_bytes: int = MAX_DIR_BYTES) -> tuple[list[Path], list[str]]:
    """The documents under `folder` (by suffix), confined to it by what they are: a walk that enters no
    symlinked folder and takes no symlink, FIFO or device, each file within its size limit, at most
    `max_files` files and `max_bytes` bytes in all. Returns (files, what was left out and why)."""
    base = folder.expanduser().resolve()
    files: list[Path] = []
    skipped: list[str] = []
    total = more = 0

    def skip(why: str) -> None:
        nonlocal more
        if len(skipped) < 50:
            skipped.append(why)
        else:
            more += 1

    for top, dirs, names in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            label = str(path.relative_to(base))
            if not stat.S_ISREG(st.st_mode):
                skip(f"{label} (not a regular file)")
                continue
            limit = MAX_SOURCE_BYTES if path.suffix.lower() in TEXT_SUFFIXES else MAX_DOCUMENT_BYTES
            if st.st_size > limit or total + st.st_size > max_bytes or len(files) >= max_files:
                skip(f"{label} (over the folder's limits: {max_files} files, {max_bytes} bytes)"
                     if st.st_size <= limit else f"{label} ({st.st_size} bytes, over {limit})")
                continue
            files.append(path)
            total += st.st_size
    if more:
        skipped.append(f"... and {more} more")
    return files, skipped


def check_sources(specs: Iterable[str], roots: Sequence[Path], base: Path | None = None,
                  allow_private_urls: bool = False) -> list[str]:
    """One problem message per bad spec; an empty list means all can be read.

    A PDF, DOCX or EPUB is opened and read up to its first passage, so a scanned, encrypted, damaged
    or oversized document is refused with the manifest. A URL is checked as far as it can be without the network
    (its scheme, an IP literal or localhost); its name is checked when it is fetched.
    """
    # imported here: documents.py and addresses.py raise this module's SourceError
    from podspool.stages.sources.addresses import literal_problem
    from podspool.stages.sources.documents import check_document

    problems: list[str] = []
    for spec in specs:
        if not isinstance(spec, str):
            problems.append(f"source {spec!r}: must be a string (a path or an http(s) URL)")
            continue
        if is_url(spec) or "://" in spec:
            problem = literal_problem(spec, allow_private_urls)
            if problem:
                problems.append(problem)
            continue
        try:
            path = resolve_source(spec, roots, base)
            if path.suffix.lower() not in TEXT_SUFFIXES:  # a short note may hold no passage, and is still fine
                check_document(path, spec)
        except SourceError as exc:
            problems.append(str(exc))
    return problems
