"""Usage -> USD through the pricing table in config (defaults here, from public price lists)."""

from __future__ import annotations

from collections.abc import Iterable

from podspool.stages.base import Usage
from podspool.stages.settings import PriceEntry, StageSettings


def _tokens(per_m_in: float, per_m_out: float, per_request: float = 0.0) -> PriceEntry:
    return PriceEntry(per_million_input_tokens=per_m_in, per_million_output_tokens=per_m_out,
                      per_request=per_request)


def _chars(per_thousand: float) -> PriceEntry:
    return PriceEntry(per_thousand_characters=per_thousand)


# Public list prices in USD (checked 2025; prices change: override them in [pricing.<api>.<model>]).
# A server-reported cost (Perplexity's usage.cost.total_cost) always wins over these.
DEFAULT_PRICING: dict[str, dict[str, PriceEntry]] = {
    "local": {"*": PriceEntry()},
    "espeak": {"*": PriceEntry()},
    "sim": {"*": PriceEntry()},
    # Perplexity: per million tokens, plus a request fee per 1,000 requests that depends on
    # search_context_size; the "low" fee is used here (medium/high cost more: configure them).
    # Deep research also bills citation/reasoning tokens and searches: the provider counts those
    # tokens at these rates, so the estimate errs high.
    "perplexity": {
        "sonar": _tokens(1.0, 1.0, 5.0 / 1000),
        "sonar-pro": _tokens(3.0, 15.0, 6.0 / 1000),
        "sonar-reasoning": _tokens(1.0, 5.0, 5.0 / 1000),
        "sonar-reasoning-pro": _tokens(2.0, 8.0, 6.0 / 1000),
        "sonar-deep-research": _tokens(2.0, 8.0, 5.0 / 1000),
        # Search API: raw results at $5 per 1,000 requests
        "search": PriceEntry(per_request=5.0 / 1000),
        # Agent API presets bill tokens plus $0.005 per web search; the server reports the total
        # (usage.cost.total_cost), which wins. Without it, a preset is priced like sonar-pro.
        "*": _tokens(3.0, 15.0, 6.0 / 1000),  # unknown model: price it like sonar-pro, not free
    },
    # ElevenLabs API: per 1,000 characters (Flash/Turbo at half the Multilingual/v3 rate).
    "elevenlabs": {
        "eleven_multilingual_v2": _chars(0.10),
        "eleven_v3": _chars(0.10),
        "eleven_flash_v2_5": _chars(0.05),
        "eleven_flash_v2": _chars(0.05),
        "eleven_turbo_v2_5": _chars(0.05),
        "eleven_turbo_v2": _chars(0.05),
        "*": _chars(0.10),
    },
    # OpenAI-compatible servers: OpenAI's own models by name; anything else is assumed to be a
    # local server (Ollama, vLLM, llama.cpp) and free.
    "openai": {
        "gpt-4o": _tokens(2.50, 10.00),
        "gpt-4o-mini": _tokens(0.15, 0.60),
        "gpt-4.1": _tokens(2.00, 8.00),
        "gpt-4.1-mini": _tokens(0.40, 1.60),
        "gpt-4.1-nano": _tokens(0.10, 0.40),
        "o3": _tokens(2.00, 8.00),
        "o4-mini": _tokens(1.10, 4.40),
        "gpt-5": _tokens(1.25, 10.00),
        "gpt-5-mini": _tokens(0.25, 2.00),
        "gpt-5-nano": _tokens(0.05, 0.40),
        "*": PriceEntry(),
    },
    # OpenAI speech: per 1,000 characters of input. gpt-4o-mini-tts bills tokens (about $0.015 per
    # minute of audio, ~1,000 characters); other names are taken for a local server, free.
    "openai_speech": {
        "gpt-4o-mini-tts": _chars(0.015),
        "tts-1": _chars(0.015),
        "tts-1-hd": _chars(0.030),
        "*": PriceEntry(),
    },
    "piper": {"*": PriceEntry()},
    # Tavily: a credit is $0.008 pay-as-you-go; basic search costs 1 credit, advanced 2.
    "websearch": {
        "basic": PriceEntry(per_request=0.008),
        "advanced": PriceEntry(per_request=0.016),
        "*": PriceEntry(per_request=0.008),
    },
}


def price_for(api: str, model: str | None, settings: StageSettings) -> PriceEntry:
    """The configured price of `model` (or the api's "*"), else the default's, else free."""
    for table in (settings.pricing, DEFAULT_PRICING):
        models = table.get(api)
        if models:
            if model and model in models:
                return models[model]
            if "*" in models:
                return models["*"]
    return PriceEntry()


def cost_of(usages: Iterable[Usage], settings: StageSettings) -> float:
    """Total USD of `usages`: the server's reported cost when given, else the pricing table."""
    total = 0.0
    for u in usages:
        if u.cost_usd is not None:
            total += u.cost_usd
            continue
        p = price_for(u.api, u.model, settings)
        total += (p.per_request * u.requests
                  + p.per_million_input_tokens * u.input_tokens / 1e6
                  + p.per_million_output_tokens * u.output_tokens / 1e6
                  + p.per_thousand_characters * u.characters / 1e3)
    return round(total, 6)
