"""What travels in a task message and back in its result, and how each end packs and unpacks it.

A worker host shares no file system with the supervisor: the message carries the episode, the stage
settings, the rates and every file of the episode folder (so a stage finds its inputs, and a phase that
already finished is reused, not paid again); the research stage also gets the text of the episode's
local sources, read on the supervisor's host where intake checked them. The result carries the
StageResult, the log lines and every file the stage wrote, in the order it wrote them (the file that
marks a phase finished is written last, here as on the worker).
`research.sources_dir` is not shipped: with remote workers it names a folder on the worker hosts.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from podspool.daemon.executors.remote import blobs
from podspool.daemon.executors.remote.names import Names
from podspool.daemon.spool import MANIFEST
from podspool.stages.base import EpisodeInput, StageResult, Usage
from podspool.stages.show import Show
from podspool.stages.sources.resolve import is_url, read_source, roots_from_settings

# The supervisor's own files: never shipped out, never accepted back.
SUPERVISOR_FILES = frozenset({MANIFEST, "episode.log"})
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_artifact_name(name: str) -> bool:
    """A plain file name a stage may write (no path, no dot-file or temp file, not the supervisor's)."""
    return bool(PLAIN_NAME.match(name)) and name not in SUPERVISOR_FILES and not name.endswith((".tmp", ".part"))


def folder_files(folder: Path) -> list[Path]:
    """The folder's artifact files, oldest first (the order they were written in)."""
    found = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and is_artifact_name(p.name)]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


# ---- StageResult over JSON --------------------------------------------------------------------


def result_to_json(result: StageResult) -> dict[str, Any]:
    doc = asdict(result)
    # details may hold anything: text is enough, and a number JSON cannot hold (NaN, inf) is none
    return json.loads(json.dumps(doc, default=str), parse_constant=lambda _c: None)


def result_from_json(doc: dict[str, Any]) -> StageResult:
    fields = {k: v for k, v in doc.items() if k in StageResult.__dataclass_fields__}
    fields["usage"] = [Usage.from_dict(u) for u in doc.get("usage", [])]
    return StageResult(**fields)


def episode_to_json(episode: EpisodeInput) -> dict[str, Any]:
    return {**asdict(episode), "sources": list(episode.sources), "show": episode.show.to_json()}


def episode_from_json(doc: dict[str, Any]) -> EpisodeInput:
    fields = {k: v for k, v in doc.items() if k in EpisodeInput.__dataclass_fields__}
    fields["sources"] = tuple(fields.get("sources", ()))
    fields["feedback"] = tuple(str(n) for n in fields.get("feedback", ()) or ())
    if isinstance(fields.get("show"), dict):
        fields["show"] = Show.from_json(fields["show"])
    else:
        fields.pop("show", None)
    return EpisodeInput(**fields)


def foreign_voice_paths(episode: EpisodeInput) -> str | None:
    """Why a task cannot run on this host, when its cast names a piper voice by path: a path names a file
    of the supervisor's host; on a worker host, voices are the host's own ([providers.piper] voices)."""
    named = [f"{m.name}: {v!r}" for m in episode.show.cast for p, v in m.voices.items()
             if p == "piper" and ("/" in v or "\\" in v or v.startswith((".", "~")))]
    if not named:
        return None
    return ("a remote worker reads no voice files named by a message; name the voice (a piper voice "
            f"wheel, or one of the worker host's [providers.piper] voices) instead of a path: {', '.join(named)}")


# ---- the supervisor's side --------------------------------------------------------------------


def pack_sources(episode: EpisodeInput, source_roots: list[str]) -> dict[str, str]:
    """spec -> the file's bytes in base64, for every local source of the episode (URLs travel as they
    are): a PDF, DOCX or EPUB is not text, and arrives on the worker as it left.

    Raises `podspool.stages.sources.resolve.SourceError` for a source that can no longer be read.
    """
    roots = roots_from_settings(source_roots)
    out: dict[str, str] = {}
    for spec in episode.sources:
        if not is_url(spec) and spec not in out:
            out[spec] = base64.b64encode(read_source(spec, roots)[1]).decode("ascii")  # one bounded read
    return out


def pack_files(client: Any, names: Names, token: str, folder: Path, ttl_s: int) -> dict[str, Any]:
    return {p.name: blobs.put(client, names, token, "in-" + p.name, p.read_bytes(), ttl_s)
            for p in folder_files(folder)}


# ---- the worker's side ------------------------------------------------------------------------


def unpack_files(client: Any, refs: dict[str, Any], folder: Path) -> dict[str, bytes]:
    """Write the shipped files into `folder`; returns what was written, to tell outputs apart later."""
    folder.mkdir(parents=True, exist_ok=True)
    shipped: dict[str, bytes] = {}
    for name, ref in refs.items():
        if not is_artifact_name(name):
            continue
        data = blobs.get(client, ref)
        (folder / name).write_bytes(data)
        shipped[name] = data
    return shipped


def unpack_sources(sources: dict[str, str], into: Path, tag: str) -> dict[str, str]:
    """Write each source under a unique name in `into`; returns the manifest's spec -> the local name."""
    into.mkdir(parents=True, exist_ok=True)
    spec_to_local: dict[str, str] = {}
    for i, (spec, data) in enumerate(sources.items()):
        local = f"src-{tag}-{i:03d}{Path(spec).suffix.lower()}"
        (into / local).write_bytes(base64.b64decode(data, validate=True))
        spec_to_local[spec] = local
    return spec_to_local


def relabel_research(doc: dict[str, Any], spec_to_local: dict[str, str], into: Path) -> dict[str, Any]:
    """research.json as the supervisor's host would have written it: the episode's sources by their
    manifest specs, and each source a finding cites by its file name (never a path), not by the
    worker's temporary copy."""
    names: dict[str, str] = {}
    for spec, local in spec_to_local.items():
        names[local] = names[str(into / local)] = Path(spec).name
    out = relabel(doc, names)
    if isinstance(doc.get("episode_sources"), list):
        out["episode_sources"] = relabel(doc["episode_sources"], {v: k for k, v in spec_to_local.items()})
    return out


def relabel(doc: Any, mapping: dict[str, str]) -> Any:
    """`doc` with every string equal to a key of `mapping` replaced by its value (research.json's
    sources name the manifest's spec, not the worker's temporary copy)."""
    if isinstance(doc, str):
        return mapping.get(doc, doc)
    if isinstance(doc, list):
        return [relabel(v, mapping) for v in doc]
    if isinstance(doc, dict):
        return {k: relabel(v, mapping) for k, v in doc.items()}
    return doc


def outputs(folder: Path, shipped: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Files the stage wrote or changed, in the order it wrote them."""
    out = []
    for p in folder_files(folder):
        data = p.read_bytes()
        if shipped.get(p.name) != data:
            out.append((p.name, data))
    return out
