"""Reading and validating a batch manifest from an untrusted file, safely.

Every hazard of `json.loads` is caught here (DESIGN.md, known traps): the size is capped before
parsing, the file is opened without following links, deep nesting, huge numbers, NaN/Infinity,
duplicate keys and non-UTF-8 all become problems named in plain words, never exceptions.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podspool.daemon.models import BatchManifest, describe_errors
from pydantic import ValidationError


class ManifestProblem(Exception):
    """The manifest cannot be accepted; `problems` names each reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Checked:
    manifest: BatchManifest
    raw: bytes
    problems: list[str] = field(default_factory=list)


def read_untrusted(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most `max_bytes`, without following a link at its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name is a symbolic link
            raise ManifestProblem(["the file is a symbolic link; only regular files are read"]) from None
        raise ManifestProblem([f"cannot open: {exc.strerror}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestProblem(["not a regular file"])
        if st.st_size > max_bytes:
            raise ManifestProblem([f"the file has {st.st_size} bytes, over the limit of {max_bytes} "
                                   "(limits.max_manifest_bytes); it was not read"])
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ManifestProblem([f"the file grew past {max_bytes} bytes while being read"])
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 30:
        raise ValueError(f"the integer {text[:20]}... is too large")
    return int(text)


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestProblem([f"not UTF-8 text (bad byte at offset {exc.start})"]) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise ManifestProblem(["JSON nested too deeply"]) from None
    except json.JSONDecodeError as exc:
        raise ManifestProblem([f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None
    except ValueError as exc:
        raise ManifestProblem([f"not acceptable JSON: {exc}"]) from None


def check_manifest(raw: bytes, source_roots: list[Path]) -> BatchManifest:
    """Parse and validate; raise ManifestProblem naming every problem found."""
    from podspool.stages.sources import check_sources

    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ManifestProblem([f"the manifest must be a JSON object, not {type(data).__name__}"])
    try:
        manifest = BatchManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestProblem(describe_errors(exc)) from None
    except RecursionError:
        raise ManifestProblem(["JSON nested too deeply"]) from None
    problems = []
    for ep in manifest.all_episodes():
        for msg in check_sources(ep.sources, source_roots):
            problems.append(f"episode {ep.number}: {msg}")
    if problems:
        raise ManifestProblem(problems)
    return manifest


def check_file(path: Path, max_bytes: int, source_roots: list[Path]) -> Checked:
    raw = read_untrusted(path, max_bytes)
    return Checked(manifest=check_manifest(raw, source_roots), raw=raw)
