"""Reading and validating a batch manifest from an untrusted file, safely.

Every hazard of `json.loads` is caught here (DESIGN.md, known traps): the size is capped before
parsing, the file is opened without following links, deep nesting, huge numbers, NaN/Infinity,
duplicate keys and non-UTF-8 all become problems named in plain words, never exceptions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podspool.daemon.intake.length_checks import length_problems
from podspool.daemon.intake.limits import MAX_PROBLEMS, capped, described, sources_problem
from podspool.daemon.intake.show_checks import batch_show_problems
from podspool.daemon.models import BatchEpisode, BatchManifest, batch_level_problems
from podspool.stages.settings import ResearchSettings, StageSettings
from podspool.stages.show import ShowFields
from podspool.stages.sources.resolve import check_sources, is_url, resolve_source, roots_from_settings
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


def episode_count_hint(path: Path, max_bytes: int) -> int:
    """How many episodes the manifest at `path` lists, read without judging it; 0 when it cannot be
    read as one (taking it names the problem)."""
    try:
        data = parse_json(read_untrusted(path, max_bytes))
    except ManifestProblem:
        return 0
    if not isinstance(data, dict):
        return 0
    return sum(len(v) for v in (data.get("topics"), data.get("episodes")) if isinstance(v, list))


def _episode_sources(data: dict[str, Any], manifest: BatchManifest | None) -> list[tuple[int, list[str]]]:
    """(number, sources) of every episode whose own fields are valid, even when the batch is not."""
    if manifest is not None:
        return [(ep.number, list(ep.sources)) for ep in manifest.all_episodes()]
    out = []
    raw_episodes = data.get("episodes")
    for raw in raw_episodes if isinstance(raw_episodes, list) else []:
        try:
            ep = BatchEpisode.model_validate(raw)
        except (ValidationError, RecursionError):
            continue
        out.append((ep.number, list(ep.sources)))
    return out


def _show_layers(data: dict[str, Any], manifest: BatchManifest | None) -> tuple[ShowFields, list[BatchEpisode]] | None:
    """The batch's show fields and its episodes, to judge each episode's show; from the raw document when
    another field of the batch is invalid (its valid episodes are judged too), None when the batch's own
    show fields are the invalid ones."""
    if manifest is not None:
        return manifest, manifest.all_episodes()
    try:
        batch = ShowFields.model_validate({k: data[k] for k in ShowFields.model_fields if k in data})
    except (ValidationError, RecursionError):
        return None
    episodes = []
    raw_episodes = data.get("episodes")
    for raw in raw_episodes if isinstance(raw_episodes, list) else []:
        try:
            episodes.append(BatchEpisode.model_validate(raw))
        except (ValidationError, RecursionError):
            continue
    return batch, episodes


def feasibility_problems(manifest: BatchManifest, research: ResearchSettings) -> list[str]:
    """Why the batch cannot succeed with the configured research, named before anything is spent.

    Local research finds only what the episode's own sources (files and fetched URLs) or
    `research.sources_dir` hold; an episode with neither would run, pay, and fail at the quality gate
    for want of grounding.
    """
    if research.provider != "local":
        return []
    if research.sources_dir:
        folder = Path(research.sources_dir).expanduser()
        if not folder.is_dir():
            return [f"research.sources_dir {research.sources_dir} is not a folder, and local research "
                    "(research.provider = \"local\") has nothing else to search"]
        return []
    bare = [ep.number for ep in manifest.all_episodes() if not ep.sources]
    if not bare:
        return []
    shown = ", ".join(map(str, bare[:20])) + (f" and {len(bare) - 20} more" if len(bare) > 20 else "")
    return [f"episode(s) {shown}: no source files or URLs, and local research (research.provider = \"local\", the "
            "offline default) has nothing else to search; give each episode 'sources' (files or URLs), set "
            "[research] sources_dir, or configure an online research provider"]


def check_manifest(raw: bytes, source_roots: list[Path], base: Path | None = None,
                   research: ResearchSettings | None = None, settings: StageSettings | None = None) -> BatchManifest:
    """Parse and validate; raise ManifestProblem naming every problem found, all at once.

    Relative source paths resolve against `base` (`podspool submit`: the manifest's own folder), else
    the first source root. With `research`, a batch that cannot succeed with it is refused too; with
    `settings`, so is a show (format, cast, language) its writer or voices cannot make.
    """
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ManifestProblem([f"the manifest must be a JSON object, not {type(data).__name__}"])
    manifest: BatchManifest | None = None
    problems: list[str] = []
    try:
        manifest = BatchManifest.model_validate(data)
    except ValidationError as exc:
        # field problems, then the batch-level ones pydantic skipped because a field failed
        problems += described(exc)  # the first MAX_PROBLEMS: 700,000 would hold the main loop for seconds
        problems += batch_level_problems(data.get("starting_episode"), data.get("topics"), data.get("episodes"))
    except RecursionError:
        raise ManifestProblem(["JSON nested too deeply"]) from None
    if len(problems) > MAX_PROBLEMS:  # enough to name: checking each episode further costs seconds
        raise ManifestProblem(capped(problems))
    cited = _episode_sources(data, manifest)
    too_many = sources_problem(sum(len(s) for _number, s in cited))
    if too_many:  # refused unread: each check stats a file or resolves a name
        problems.append(too_many)
        cited = []
    for number, sources in cited:
        allow_private = research.allow_private_urls if research is not None else False
        problems += [f"episode {number}: {msg}" for msg in check_sources(sources, source_roots, base, allow_private)]
    if manifest is not None and research is not None:
        problems += feasibility_problems(manifest, research)
    if settings is not None and (layers := _show_layers(data, manifest)) is not None:
        problems += batch_show_problems(*layers, settings)
    if settings is not None and manifest is not None:  # a target its offline sources cannot fill
        problems += length_problems(manifest, settings, source_roots, base)
    if problems or manifest is None:
        raise ManifestProblem(capped(problems) or ["the manifest is not valid"])
    return manifest


def check_file(path: Path, max_bytes: int, source_roots: list[Path], base: Path | None = None,
               research: ResearchSettings | None = None, settings: StageSettings | None = None) -> Checked:
    raw = read_untrusted(path, max_bytes)
    return Checked(manifest=check_manifest(raw, source_roots, base, research, settings), raw=raw)


# ---- where source paths may point ---------------------------------------------------------------
# With `[research] source_roots` configured, those are the allowed roots, for `podspool submit` and the
# daemon alike. Without, the daemon allows its working directory plus, for a manifest placed by
# `podspool submit`, the folder it was submitted from (recorded here, in the daemon's own state/). A
# grant is bound to what it was made for: the folder's identity (device and inode, so a folder later
# replaced by a symlink or another folder grants nothing) and the manifests placed with it (their
# SHA-256), so a file dropped straight into the inbox gets no grant. `/` and the spool are never roots:
# a manifest must not cite another batch's files, nor the whole machine.
GRANTS_FILE = "source_roots.json"
MAX_GRANTS = 200
MAX_MANIFESTS_PER_GRANT = 1000


def _identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a real folder (not a symlink to one), or None."""
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _read_grants(spool: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((spool / "state" / GRANTS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return []
    grants = data.get("grants") if isinstance(data, dict) else None
    return [g for g in grants if isinstance(g, dict) and isinstance(g.get("path"), str)
            and Path(g["path"]).is_absolute()] if isinstance(grants, list) else []


def manifest_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def granted_roots(spool: Path, manifest: bytes | None = None) -> list[Path]:
    """The granted folders that are still the folders granted (same device and inode); with `manifest`,
    only those granted for that manifest."""
    digest = manifest_digest(manifest) if manifest is not None else None
    out = []
    for g in _read_grants(spool):
        folder = Path(g["path"])
        if _identity(folder) != (g.get("dev"), g.get("ino")) or not _may_be_root(folder, spool):
            continue
        if digest is None or digest in g.get("manifests", []):
            out.append(folder)
    return out


def all_grant_paths(spool: Path) -> set[Path]:
    return {Path(g["path"]) for g in _read_grants(spool)}


def grant_root(spool: Path, folder: Path, manifest: bytes | None = None) -> bool:
    """Let the daemon of `spool` read sources under `folder` for `manifest` (the bytes placed in the inbox)
    when no source_roots are configured. True when the folder was not granted before."""
    from podspool.stages import fsio
    identity = _identity(folder)
    if identity is None or not _may_be_root(folder, spool):
        return False
    grants = _read_grants(spool)
    old = next((g for g in grants if g["path"] == str(folder) and (g.get("dev"), g.get("ino")) == identity), None)
    manifests = list(old.get("manifests", [])) if old else []
    if manifest is not None:
        manifests = [m for m in manifests if m != manifest_digest(manifest)] + [manifest_digest(manifest)]
    entry = {"path": str(folder), "dev": identity[0], "ino": identity[1],
             "manifests": manifests[-MAX_MANIFESTS_PER_GRANT:]}
    grants = [g for g in grants if g["path"] != str(folder)] + [entry]
    (spool / "state").mkdir(mode=0o750, parents=True, exist_ok=True)
    fsio.write_json(spool / "state" / GRANTS_FILE, {"grants": grants[-MAX_GRANTS:]})
    return old is None


def _may_be_root(folder: Path, spool: Path | None) -> bool:
    """Not `/`, and not the spool or a folder inside it (a batch's files are not another batch's sources)."""
    real = folder.resolve()
    if real == Path(real.anchor):
        return False
    return spool is None or not real.is_relative_to(spool.resolve())


def daemon_roots(configured: list[str], spool: Path, cwd: Path | None = None) -> list[Path]:
    """The daemon's allowed roots; the first is where a relative path in an inbox file resolves."""
    base = cwd or Path.cwd()
    if configured:
        return [r for r in roots_from_settings(configured, base) if _may_be_root(r, spool)]
    return [r for r in (base.resolve(), *granted_roots(spool)) if _may_be_root(r, spool)]


def manifest_roots(roots: list[str], spool: Path, raw: bytes, cwd: Path | None = None) -> list[Path]:
    """The roots one inbox manifest may cite: the daemon's (`roots`, grants spelled out) without the grants
    that were not made for this manifest (its bytes)."""
    granted = all_grant_paths(spool)
    own = granted_roots(spool, raw)
    base = [r for r in daemon_roots(roots, spool, cwd) if r not in granted]
    return base + [r for r in own if r not in base]


def submit_roots(configured: list[str], manifest_folder: Path, cwd: Path | None = None) -> list[Path]:
    """The roots `podspool submit` (and validate, plan) allows: the configured ones, else the manifest's
    own folder and the working directory; never `/`."""
    base = cwd or Path.cwd()
    if configured:
        return [r for r in roots_from_settings(configured, base) if _may_be_root(r, None)]
    return [r for r in (manifest_folder.resolve(), base.resolve()) if _may_be_root(r, None)]


def with_absolute_sources(manifest: BatchManifest, roots: list[Path], base: Path) -> BatchManifest:
    """The manifest with every local source as the real absolute path it was checked as."""
    episodes = [ep.model_copy(update={"sources": [s if is_url(s) else str(resolve_source(s, roots, base))
                                                  for s in ep.sources]})
                for ep in manifest.episodes]
    return manifest.model_copy(update={"episodes": episodes})
