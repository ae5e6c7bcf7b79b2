"""The stage interface: what a stage receives, what it returns, and the provider protocols.

A stage is `run(folder, episode, ctx) -> StageResult`. It reads its inputs from the episode folder,
writes only its own artifacts there (whole, through stages.fsio), and never touches the spool,
the episode manifest or another episode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from podspool.stages.settings import StageSettings
from podspool.stages.show import Show

StageName = Literal["research", "production", "audio"]
STAGE_NAMES: tuple[StageName, ...] = ("research", "production", "audio")


class Limiter(Protocol):
    """One shared request budget per API. `acquire` blocks until a request to `api` may start."""

    def acquire(self, api: str) -> None: ...

    def pause(self, api: str, seconds: float) -> None:
        """Honour a server's Retry-After: no process starts a request to `api` for `seconds`."""
        ...


class NoLimit:
    """A limiter that never waits (tests of a stage alone)."""

    def acquire(self, api: str) -> None:
        return None

    def pause(self, api: str, seconds: float) -> None:
        return None


@dataclass(frozen=True)
class EpisodeInput:
    """What the supervisor tells a stage about one episode (picklable)."""

    episode_id: str
    batch_id: str
    number: int
    topic: str
    title: str | None = None
    notes: str | None = None
    sources: tuple[str, ...] = ()
    attempt: int = 1  # episode-level attempt of this phase, from 1
    show: Show = field(default_factory=Show)  # length, format, cast, language: every field decided
    feedback: tuple[str, ...] = ()  # a producer's notes on a rejected script, for the writer's next draft


@dataclass
class StageContext:
    settings: StageSettings
    limiter: Limiter = field(default_factory=NoLimit)
    secrets: Mapping[str, str] = field(default_factory=dict)  # api name -> key; never logged
    deadline: float | None = None  # time.monotonic() by which the stage should give up
    # Held around each provider call and released before the stage's own disk work, so a worker can
    # start the next episode's call while this one is still validating and saving (the stage's API
    # never waits on the disk).
    call_slot: AbstractContextManager[Any] = field(default_factory=nullcontext)
    # Held while quality gates run: the playbook validates one episode at a time, across all workers.
    gate_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)
    # Every HTTP attempt of this stage run, by "api:outcome" (outcome: requests, errors, 429), retries
    # inside one call included, for the operator's metrics.
    calls: Counter[str] = field(default_factory=Counter)
    # The episode folder, where a stage keeps work in progress that a later attempt may reuse (each paid
    # speech request's audio) and long intermediate data (a take too long to hold in memory); None: keep none.
    folder: Path | None = None
    # The show of the episode being voiced (cast, language); None: the config's defaults (a provider used alone).
    show: Show | None = None


@dataclass
class Usage:
    """One API call's usage. `cost_usd` is what the server reported, when it did."""

    api: str
    model: str | None = None
    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class StageResult:
    ok: bool
    cost_usd: float = 0.0
    usage: list[Usage] = field(default_factory=list)
    quality_scores: dict[str, float] = field(default_factory=dict)
    quality: float | None = None  # the episode's overall score (production)
    revisions: int = 0
    error: str | None = None
    # False when trying again cannot help (a quality gate refused the script, a bad key, a bad source)
    retryable: bool = True
    reused: bool = False  # the artifact was already there from an earlier run: nothing was paid again
    details: dict[str, Any] = field(default_factory=dict)  # e.g. audio_seconds, words
    # The errno when the stage failed on an OSError (a full or read-only disk is not the episode's fault)
    disk_errno: int | None = None
    # Every HTTP attempt of this run by "api:outcome" (outcome: requests, errors, 429), retries included
    api_calls: dict[str, int] = field(default_factory=dict)


class StageError(Exception):
    """A stage failure with a message fit for an operator. `retryable=False` sends it to failed/ now."""

    def __init__(self, message: str, *, retryable: bool = True, cost_usd: float = 0.0,
                 usage: list[Usage] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.cost_usd = cost_usd
        self.usage = usage or []


# ---- provider protocols -------------------------------------------------------------------------


@dataclass
class Finding:
    text: str
    source: str  # a path or a URL
    location: str = ""  # e.g. "paragraph 3", "lines 10-14", "result 2"
    score: float = 0.0
    title: str | None = None


@dataclass
class ResearchOutput:
    provider: str
    findings: list[Finding]
    citations: list[str]
    searched: list[str]  # what was searched: files, queries
    usage: list[Usage] = field(default_factory=list)
    grounded: bool = True
    answer: str | None = None  # a provider's own prose answer, when it gives one
    # what may be published about each cited source: name (a file name or URL, never a path), title, url,
    # kind, pages (stages/sources/documents.py DocumentInfo.record)
    sources: list[dict[str, Any]] = field(default_factory=list)


class ResearchProvider(Protocol):
    name: str
    dry_run: bool  # its output is made up (sim): nothing to ground, check or measure

    def research(self, episode: EpisodeInput, ctx: StageContext, sources: Any = None) -> ResearchOutput:
        """`sources`: the episode's own documents and fetched URLs (stages.sources.library.EpisodeSources),
        read when the provider first asks; None means the provider reads them itself, uncached."""
        ...


@dataclass
class WriterOutput:
    script: str  # markdown, two hosts
    usage: list[Usage] = field(default_factory=list)
    incomplete: str | None = None  # why the reply is known to be cut short (e.g. at max_tokens), if it is


class ScriptWriter(Protocol):
    name: str
    dry_run: bool

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        """`feedback` is empty on the first draft, then the failed gates' reasons for a revision."""
        ...


@dataclass
class Turn:
    host: str
    text: str


@dataclass(frozen=True)
class TurnSpan:
    """Where one turn's speech lies in a provider's audio, measured, not estimated (seconds)."""

    turn: int  # index into the turns given to `synthesize`
    start: float
    end: float


@dataclass
class SpeechOutput:
    pcm: bytes  # signed 16-bit little-endian mono at `sample_rate`
    sample_rate: int
    usage: list[Usage] = field(default_factory=list)
    # One span per turn, in order, timed in `pcm` as the provider made it (from its per-turn synthesis or
    # the API's own timestamps). Empty only when a provider cannot know (sim): chapters then fall back to
    # proportional estimates, and say so.
    spans: list[TurnSpan] = field(default_factory=list)
    # A long take is written to this file (16-bit mono at `sample_rate`, a temp file in the episode folder)
    # instead of `pcm`, so no worker holds an hour of audio; the audio stage removes it when done.
    path: Path | None = None


class SpeechProvider(Protocol):
    name: str
    dry_run: bool

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        """Speak every turn, in order, in its host's voice. Ask the API for
        `ctx.settings.audio.sample_rate` where it offers it, so the audio stage need not resample."""
        ...


