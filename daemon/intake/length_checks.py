"""Whether an episode's sources hold enough to speak for its target length, judged before anything runs.

Only the offline pair (local research and the local writer) is held to this: that writer says nothing
its findings do not say, so the words of the episode's own source passages, plus the writer's framing
around each, are all the episode can ever have. A model writer elaborates on its findings and online
research finds more, so neither is judged here. An episode with a URL among its sources is not judged
either: what a URL holds is known only once research fetches it.
"""

from __future__ import annotations

from pathlib import Path

from podspool.daemon.models import BatchManifest
from podspool.stages.script.segments import TOLERANCE, target_words
from podspool.stages.settings import StageSettings
from podspool.stages.show import merge
from podspool.stages.sources.resolve import SourceError, is_url, resolve_source
from podspool.stages.words import words

# The local writer's own words: an opener and a reply around each finding, and the intro and outro
# (measured on examples/long_batch.json: 15.6 and 14.3 words a finding, intro and outro included)
FRAMING_PER_FINDING = 14
FRAMING = 60


def source_words(sources: list[str], roots: list[Path], base: Path | None) -> tuple[int, int] | None:
    """(passages, words) the episode's own source files hold; None when a source cannot be judged now."""
    from podspool.stages.sources import documents  # the extractors: only when a target is set

    seen: set[str] = set()
    n_words = 0
    for spec in sources:
        if is_url(spec):
            return None
        try:
            path = resolve_source(spec, roots, base)
            passages = list(documents.read(path, spec))
        except (SourceError, OSError):
            return None  # the sources check names the problem
        for p in passages:
            key = " ".join(p.text.lower().split())
            if key not in seen:  # research keeps one finding of a paragraph found twice
                seen.add(key)
                n_words += len(words(p.text))
    return len(seen), n_words


def supported_minutes(passages: int, n_words: int, words_per_minute: int) -> float:
    return (n_words + FRAMING_PER_FINDING * passages + (FRAMING if passages else 0)) / words_per_minute


def length_problems(manifest: BatchManifest, settings: StageSettings, roots: list[Path],
                    base: Path | None = None) -> list[str]:
    """Each episode whose target the offline writer cannot reach from its sources, with what they support."""
    if settings.research.provider != "local" or settings.production.provider != "local" or settings.research.sources_dir:
        return []
    wpm = settings.audio.words_per_minute
    defaults = settings.production.show_defaults()
    problems = []
    for ep in manifest.all_episodes():
        minutes = merge(defaults, manifest.show_of(ep)).minutes
        target = target_words(None if minutes is None else float(minutes), wpm)
        if target is None or not ep.sources:
            continue
        held = source_words(list(ep.sources), roots, base)
        if held is None:
            continue
        supported = supported_minutes(*held, wpm)
        if supported * wpm < target * (1 - TOLERANCE):
            problems.append(f"sources of episode {ep.number} support about {_minutes(supported)}; target "
                            f"{float(minutes or 0):g}: give it more sources, or a shorter 'minutes'")
    return problems


def _minutes(m: float) -> str:
    """Whole minutes, or tenths below ten, so "about 3 minutes" never refuses a target of 3."""
    shown = f"{m:.0f}" if m >= 9.95 else f"{m:.1f}".rstrip("0").rstrip(".")
    return f"{shown} minute{'' if shown == '1' else 's'}"
