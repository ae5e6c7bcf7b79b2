"""Usage -> USD through the pricing table in config (defaults here, from public price lists)."""

from __future__ import annotations

from collections.abc import Iterable

from stages.base import Usage
from stages.settings import PriceEntry, StageSettings

DEFAULT_PRICING: dict[str, dict[str, PriceEntry]] = {
    "local": {"*": PriceEntry()},
    "espeak": {"*": PriceEntry()},
    "sim": {"*": PriceEntry()},
}


def price_for(api: str, model: str | None, settings: StageSettings) -> PriceEntry:
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
