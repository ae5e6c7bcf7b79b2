"""Provider names (as in podspool.toml) -> classes, imported lazily so an unused provider costs nothing."""

from __future__ import annotations

import importlib
from typing import Any

RESEARCH = {
    "sim": "stages.providers.sim:SimProvider",
    "local": "stages.providers.local_research:LocalResearch",
    "perplexity": "stages.providers.perplexity:PerplexityResearch",
    "websearch": "stages.providers.websearch:WebSearchResearch",
}
WRITERS = {
    "sim": "stages.providers.sim:SimProvider",
    "local": "stages.providers.local_writer:LocalWriter",
    "openai": "stages.providers.openai_compat:OpenAIWriter",
}
SPEECH = {
    "sim": "stages.providers.sim:SimProvider",
    "espeak": "stages.providers.espeak:EspeakSpeech",
    "elevenlabs": "stages.providers.elevenlabs:ElevenLabsSpeech",
}


def load(table: dict[str, str], name: str) -> Any:
    """Instantiate the provider `name` from `table` (no arguments: settings arrive with each call)."""
    try:
        target = table[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(table))}") from None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)()
