"""Provider names (as in podspool.toml) -> classes, imported lazily so an unused provider costs nothing."""

from __future__ import annotations

import functools
import importlib
from typing import Any

RESEARCH = {
    "sim": "podspool.stages.providers.sim:SimProvider",
    "local": "podspool.stages.providers.local.research:LocalResearch",
    "perplexity": "podspool.stages.providers.perplexity.research:PerplexityResearch",
    "websearch": "podspool.stages.providers.websearch:WebSearchResearch",
}
WRITERS = {
    "sim": "podspool.stages.providers.sim:SimProvider",
    "local": "podspool.stages.providers.local.writer:LocalWriter",
    "openai": "podspool.stages.providers.openai.writer:OpenAIWriter",
}
SPEECH = {
    "sim": "podspool.stages.providers.sim:SimProvider",
    "espeak": "podspool.stages.providers.espeak:EspeakSpeech",
    "piper": "podspool.stages.providers.piper:PiperSpeech",
    "elevenlabs": "podspool.stages.providers.elevenlabs:ElevenLabsSpeech",
    "openai": "podspool.stages.providers.openai.speech:OpenAISpeech",
}


def load(table: dict[str, str], name: str) -> Any:
    """The provider `name` from `table`, one instance per process (no arguments: settings arrive with
    each call). Kept, so an HTTP provider's session and its open connections serve every episode: a
    fresh connection per episode costs a handshake, and its variable delay between the rate limiter's
    grant and the request reaching the server could bunch requests at the server."""
    try:
        target = table[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(table))}") from None
    return _instance(target)


@functools.cache
def _instance(target: str) -> Any:
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)()
