"""The show an episode belongs to: its target length, format, cast and language (the third round's fields).

A manifest may set each field for the batch or for one episode, and `[production]` holds the defaults;
`resolve` merges the three into the one `Show` a stage receives. The structural rules (how many speakers
a format needs, what a name or a language tag may be) live here; whether a provider can voice or write
a show is the providers' to say (`show_problems` callers in the daemon).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

Format = Literal["conversation", "interview", "debate", "solo", "brief"]
Role = Literal["host", "guest", "moderator", "narrator"]
SpeechProviderName = Literal["espeak", "piper", "elevenlabs", "openai"]
FORMATS: tuple[Format, ...] = ("conversation", "interview", "debate", "solo", "brief")
MIN_MINUTES, MAX_MINUTES = 1, 180
MAX_CAST = 4
# speakers each format needs at least (and at most): a solo show has one voice, a debate two sides
SPEAKERS: dict[Format, tuple[int, int]] = {
    "conversation": (2, 4), "interview": (2, 4), "debate": (2, 4), "solo": (1, 1), "brief": (1, 4),
}
# BCP-47, the common subset: a primary language, then script/region/variant subtags
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
NAME = re.compile(r"^[^\x00-\x1f\x7f*:<>\[\]#]{1,40}$")  # spoken, printed in transcripts and the feed


class CastMember(BaseModel):
    """One speaker: a name, a role, and voices by speech provider (partial: the rest use defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    role: Role = "host"
    voices: dict[SpeechProviderName, Annotated[StrictStr, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not NAME.match(v):
            raise ValueError("a speaker's name is 1 to 40 characters, without control characters or * : < > [ ] #")
        return v


Cast = Annotated[list[CastMember], Field(min_length=1, max_length=MAX_CAST)]
Minutes = Annotated[StrictFloat | StrictInt, Field(ge=MIN_MINUTES, le=MAX_MINUTES)]


class ShowFields(BaseModel):
    """The optional fields a manifest (batch or episode) and `[production]` share; None: not set here."""

    model_config = ConfigDict(extra="forbid")

    minutes: Minutes | None = None
    format: Format | None = None
    cast: Cast | None = None
    language: StrictStr | None = None
    review: StrictBool | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return None if v is None else language_tag(v)

    @field_validator("cast")
    @classmethod
    def _cast(cls, v: list[CastMember] | None) -> list[CastMember] | None:
        if v is not None:
            names = [m.name.casefold() for m in v]
            dups = sorted({m.name for m in v if names.count(m.name.casefold()) > 1})
            if dups:
                raise ValueError(f"cast names must differ: {', '.join(dups)}")
        return v

    def set_fields(self) -> dict[str, object]:
        """The show fields this layer sets (a manifest's other fields aside)."""
        return {k: getattr(self, k) for k in ShowFields.model_fields if getattr(self, k) is not None}


def language_tag(v: str) -> str:
    v = v.strip()
    if not LANGUAGE_TAG.match(v):
        raise ValueError(f"{v[:40]!r} is not a BCP-47 language tag (such as en, de, es-MX, pt-BR)")
    return v


@dataclass(frozen=True)
class Show:
    """What a stage is told about the show of one episode: every field decided."""

    format: Format = "conversation"
    cast: tuple[CastMember, ...] = field(default_factory=lambda: (CastMember(name="Alex"), CastMember(name="Sam")))
    language: str = "en"
    minutes: float | None = None  # None: no target, the writer's own length
    review: bool = False

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.cast]

    @property
    def primary_language(self) -> str:
        return self.language.split("-")[0].lower()

    def to_json(self) -> dict[str, object]:
        return {"format": self.format, "cast": [m.model_dump() for m in self.cast], "language": self.language,
                "minutes": self.minutes, "review": self.review}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Show:
        """From another host's message: checked as a manifest's fields are."""
        f = ShowFields.model_validate({k: doc.get(k) for k in ("minutes", "format", "cast", "language", "review")})
        return resolve(f, hosts=["Alex", "Sam"])


def default_cast(hosts: list[str]) -> tuple[CastMember, ...]:
    return _default_cast(tuple(hosts))


@functools.lru_cache(maxsize=64)
def _default_cast(hosts: tuple[str, ...]) -> tuple[CastMember, ...]:
    return tuple(CastMember(name=h) for h in hosts)  # frozen: one tuple serves every episode


def merge(*layers: ShowFields | None) -> ShowFields:
    """The layers' fields, the most specific last (config defaults, batch, episode)."""
    return ShowFields.model_construct(**_merged(layers))  # each layer was checked when it was made


def _merged(layers: tuple[ShowFields | None, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            fields.update(layer.set_fields())
    return fields


def resolve(*layers: ShowFields | None, hosts: list[str]) -> Show:
    """The show from its layers, every field decided: a cast of one is a solo show unless told otherwise."""
    f = _merged(layers)
    cast = tuple(f["cast"]) if f.get("cast") else default_cast(hosts)
    minutes = f.get("minutes")
    return Show(format=f.get("format") or ("solo" if len(cast) == 1 else "conversation"), cast=cast,
                language=f.get("language") or "en", minutes=None if minutes is None else float(minutes),
                review=bool(f.get("review")))


def structure_problems(show: Show) -> list[str]:
    """What no provider can fix: a format and a cast that do not fit each other."""
    low, high = SPEAKERS[show.format]
    n = len(show.cast)
    problems = []
    if n < low:
        problems.append(f"format {show.format} needs at least {low} speakers; the cast has {n}")
    if n > high:
        problems.append(f"format {show.format} has at most {high} speaker(s); the cast has {n}")
    if show.format == "debate" and [m.role for m in show.cast].count("moderator") > 1:
        problems.append("a debate has at most one moderator")
    return problems
