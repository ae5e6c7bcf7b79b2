"""Can the configured providers make the show a manifest asks for? Asked by `validate`, `submit`, `plan`,
the inbox and `doctor`, before anything is spent.

Three owners answer: the show itself (a format and a cast that do not fit: stages/show.py), the writer
(a language it cannot write, named by its `languages`; a language no registry knows), and the speech
provider (a voice that does not exist, a language no configured voice speaks: stages/providers/voices.py).
Each answers from settings and installed files only, never an API call.
"""

from __future__ import annotations

from collections.abc import Iterable

from podspool.daemon.models import BatchEpisode
from podspool.stages.providers import registry
from podspool.stages.providers.speech_checks import speech_problems
from podspool.stages.script import language
from podspool.stages.script.format import part_problems
from podspool.stages.settings import StageSettings
from podspool.stages.show import Show, ShowFields, resolve, structure_problems

MAX_NUMBERS = 20  # episode numbers listed per problem, then "and N more"


def writer_problems(show: Show, settings: StageSettings) -> list[str]:
    """A language the configured writer cannot write, or that is no language at all."""
    tag = show.language
    if not language.is_known(tag):
        return [f"language {tag!r} is not a language the IANA registry knows: give a BCP-47 tag such as "
                "en, de, es-MX, hi or ja"]
    provider = settings.production.provider
    writes = getattr(registry.load(registry.WRITERS, provider), "languages", None)  # None: any language
    if writes is None or language.primary(tag) in writes:
        return []
    known = ", ".join(language.name(w) for w in sorted(writes))
    return [f"the {provider} writer ([production] provider = \"{provider}\") writes {known} only, not "
            f"{language.name(tag)} ({tag}): set [production] provider = \"openai\" with a model that writes "
            f"{language.name(tag)}, or choose language {' or '.join(repr(w) for w in sorted(writes))}"]


def show_problems(show: Show, settings: StageSettings) -> list[str]:
    """Every reason `show` cannot be produced with `settings`, each named; empty when it can."""
    structure = structure_problems(show) or part_problems(show)
    return [*structure, *writer_problems(show, settings), *speech_problems(show, settings)]


def batch_show_problems(batch: ShowFields, episodes: list[BatchEpisode], settings: StageSettings) -> list[str]:
    """`show_problems` of every episode (config defaults, then the batch's fields, then the episode's),
    each problem once with the episodes it concerns."""
    production = settings.production
    defaults = production.show_defaults()
    seen: dict[str, list[str]] = {}  # an episode's show fields -> its problems: most episodes share them
    where: dict[str, list[int]] = {}
    for ep in episodes:
        key = repr([getattr(ep, k) for k in ShowFields.model_fields])  # its own fields: the rest are shared
        if key not in seen:
            seen[key] = show_problems(resolve(defaults, batch, ep, hosts=list(production.hosts)), settings)
        for problem in seen[key]:
            where.setdefault(problem, []).append(ep.number)
    return [f"{_episodes(numbers, len(episodes))}: {problem}" for problem, numbers in where.items()]


def _episodes(numbers: Iterable[int], total: int) -> str:
    ns = sorted(set(numbers))
    if len(ns) == total:
        return "every episode" if total > 1 else f"episode {ns[0]}"
    shown = ", ".join(map(str, ns[:MAX_NUMBERS])) + (f" and {len(ns) - MAX_NUMBERS} more" if len(ns) > MAX_NUMBERS else "")
    return f"episode{'s' if len(ns) > 1 else ''} {shown}"
