"""The data podspool reads and writes: batch manifests (input) and episode manifests (state)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from podspool.stages.base import STAGE_NAMES, StageName
from podspool.stages.show import ShowFields, merge
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

BATCH_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_EPISODE_NUMBER = 99999
Strategy = Literal["small_batch", "medium_batch", "large_batch"]


class State(StrEnum):
    """An episode's status, and each of its phases' state: the same four words (manifest.json)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"


# research / production / audio processes a batch may use at once, by strategy (the playbook's presets)
STRATEGY_PRESETS: dict[str, dict[str, int]] = {
    "small_batch": {"research": 5, "production": 1, "audio": 1},
    "medium_batch": {"research": 5, "production": 3, "audio": 1},
    "large_batch": {"research": 5, "production": 3, "audio": 2},
}


def utcnow() -> str:
    """Now, as 2026-01-02T03:04:05.678901Z (isoformat: a third of strftime's cost, same text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def default_batch_id(now: datetime | None = None) -> str:
    return f"batch_{(now or datetime.now(UTC)):%Y%m%d_%H%M%S}"


def episode_id(number: int, batch_id: str) -> str:
    return f"ep_{number:03d}_{batch_id}"


def strategy_for(size: int) -> Strategy:
    return "small_batch" if size <= 10 else "medium_batch" if size <= 50 else "large_batch"


# What XML 1.0 (feed.xml) and ID3 tags cannot hold: C0 controls but tab, newline and carriage return, DEL
# and the C1 controls, and the non-characters U+FFFE/U+FFFF. A one-line field takes no line break either
# (it would also forge a log line). Refused at intake, named, so `feed` never meets one.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff\ud800-\udfff]")


def _one_line(v: str) -> str:
    if m := _NOT_ONE_LINE.search(v):
        raise ValueError(f"holds the control character U+{ord(m.group()):04X} (a title or topic is one line of "
                         "plain text)")
    return v


def _xml_text(v: str) -> str:
    if m := _NOT_XML.search(v):
        raise ValueError(f"holds the control character U+{ord(m.group()):04X}, which a feed cannot carry")
    return v


Text = Annotated[StrictStr, Field(min_length=1, max_length=500), AfterValidator(_one_line)]


class BatchEpisode(ShowFields):
    """One episode of a batch; its show fields (minutes, format, cast, language, review) win over the batch's."""

    model_config = ConfigDict(extra="forbid")

    number: StrictInt = Field(ge=1, le=MAX_EPISODE_NUMBER)
    topic: Text
    title: Annotated[StrictStr, Field(max_length=500), AfterValidator(_one_line)] | None = None
    notes: Annotated[StrictStr, Field(max_length=20000), AfterValidator(_xml_text)] | None = None
    sources: list[Annotated[StrictStr, Field(min_length=1, max_length=4096)]] = Field(default_factory=list,
                                                                                       max_length=200)

    @field_validator("topic")
    @classmethod
    def _topic_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("topic is blank")
        return v.strip()


class BatchManifest(ShowFields):
    """A batch manifest as dropped into the inbox. Strict: unknown fields are errors. Its show fields
    (minutes, format, cast, language, review) apply to every episode that does not set its own."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"title": "podspool batch manifest"})

    batch_id: StrictStr | None = Field(default=None, pattern=BATCH_ID_PATTERN,
                                       description="defaults to batch_<YYYYmmdd_HHMMSS>")
    starting_episode: StrictInt = Field(default=1, ge=1, le=MAX_EPISODE_NUMBER)
    topics: list[Text] = Field(default_factory=list, max_length=MAX_EPISODE_NUMBER)
    episodes: list[BatchEpisode] = Field(default_factory=list, max_length=MAX_EPISODE_NUMBER)
    strategy: Strategy | None = None
    priority: StrictInt = Field(default=0, ge=-1000, le=1000)
    budget_usd: StrictFloat | StrictInt | None = Field(default=None, ge=0)

    @field_validator("topics")
    @classmethod
    def _topics_not_blank(cls, v: list[str]) -> list[str]:
        blank = [str(i) for i, t in enumerate(v) if not t.strip()]
        if blank:
            raise ValueError(f"topic is blank (topics {', '.join(blank[:20])})")
        return [t.strip() for t in v]

    @field_validator("budget_usd")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("budget_usd must be a finite number")
        return None if v is None else float(v)

    @model_validator(mode="after")
    def _episodes(self) -> BatchManifest:
        problems = batch_level_problems(self.starting_episode, self.topics,
                                        [{"number": e.number} for e in self.episodes])
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def all_episodes(self, check: bool = True) -> list[BatchEpisode]:
        eps = [BatchEpisode(number=self.starting_episode + i, topic=t) for i, t in enumerate(self.topics)
               if self.starting_episode + i <= MAX_EPISODE_NUMBER]
        eps += list(self.episodes)
        return sorted(eps, key=lambda e: e.number)

    def show_of(self, episode: BatchEpisode) -> ShowFields:
        """The episode's show fields over the batch's: what its manifest.json keeps."""
        return merge(self, episode)

    def effective_strategy(self) -> Strategy:
        return self.strategy or strategy_for(len(self.all_episodes()))


NO_EPISODES = "a batch needs at least one episode: give 'topics' or 'episodes'"


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def batch_level_problems(starting: object, topics: object, episodes: object) -> list[str]:
    """The checks across episodes (none at all, numbering, duplicates), on raw values as well as valid ones.

    Run on the raw document too, so a manifest with a bad field still hears about these: pydantic skips
    a model validator once any field fails.
    """
    start = starting if isinstance(starting, int) and not isinstance(starting, bool) else 1
    topic_list = topics if isinstance(topics, list) else []
    ep_list = episodes if isinstance(episodes, list) else []
    problems = []
    if topics in (None, []) and episodes in (None, []):
        problems.append(NO_EPISODES)
    last = start + len(topic_list) - 1
    if topic_list and last > MAX_EPISODE_NUMBER:
        problems.append(f"topics numbered from {start} run past {MAX_EPISODE_NUMBER}")
    numbers = [start + i for i in range(len(topic_list)) if start + i <= MAX_EPISODE_NUMBER]
    numbers += [e["number"] for e in ep_list if isinstance(e, dict) and _whole(e.get("number"))]
    seen: dict[int, int] = {}
    for n in numbers:
        seen[n] = seen.get(n, 0) + 1
    dups = sorted(n for n, c in seen.items() if c > 1)
    if dups:
        problems.append(f"duplicate episode numbers: {', '.join(map(str, dups[:20]))}")
    return problems


def describe_errors(exc: ValidationError, batch_level: bool = True) -> list[str]:
    """One operator-readable line per problem, naming where it is (`batch_level`: the cross-episode ones too)."""
    out = []
    for e in exc.errors():
        if not e["loc"] and not batch_level:
            continue
        where = ".".join(str(p) for p in e["loc"]) or "manifest"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(f"{where}: {msg}")
    return out


class Phases(BaseModel):
    research: State = State.PENDING
    production: State = State.PENDING
    audio: State = State.PENDING

    def get(self, stage: StageName) -> State:
        return State(getattr(self, stage))

    def set(self, stage: StageName, status: State | str) -> None:
        setattr(self, stage, State(status))


class Costs(BaseModel):
    research: float = 0.0
    production: float = 0.0
    audio: float = 0.0
    total: float = 0.0

    def add(self, stage: StageName, usd: float) -> None:
        setattr(self, stage, round(getattr(self, stage) + usd, 6))
        self.total = round(self.research + self.production + self.audio, 6)


class EpisodeError(BaseModel):
    phase: StageName
    attempt: int
    at: str
    error: str


class PhaseTiming(BaseModel):
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None  # of the successful run
    started_mono: float | None = Field(default=None, exclude=True)


class ReviewRecord(BaseModel):
    """A producer's part in an episode (review/): what waits, what was decided, and their notes."""

    state: Literal["waiting", "approved", "rejected"] = "waiting"
    script_sha256: str | None = None  # of script.md as it went into review (then as approved)
    edited: bool = False  # approved as a person edited it
    predicted_audio_usd: float | None = None  # its speech at the configured provider's price
    notes: list[str] = Field(default_factory=list)  # each rejection's note, the writer's feedback
    at: str | None = None  # when it was last decided


class EpisodeManifest(BaseModel):
    """manifest.json in an episode folder. Written only by the supervisor."""

    model_config = ConfigDict(extra="ignore")

    episode_number: int
    session_id: str
    batch_id: str
    topic: str
    title: str | None = None
    notes: str | None = None
    sources: list[str] = Field(default_factory=list)
    show: ShowFields = Field(default_factory=ShowFields)  # the manifest's own; [production] fills the rest
    priority: int = 0
    status: State = State.PENDING
    phases: Phases = Field(default_factory=Phases)
    attempts: int = 0
    retry_rounds: int = 0  # times `podspool retry` brought it back from failed/
    redo_rounds: int = 0  # times `podspool redo` ran it again; its earlier files are in versions/<n>/
    review: ReviewRecord | None = None
    not_before: float | None = None  # unix time before which a retry may not start
    quality: float | None = None
    quality_scores: dict[str, float] = Field(default_factory=dict)
    revisions: int = 0
    costs: Costs = Field(default_factory=Costs)
    errors: list[EpisodeError] = Field(default_factory=list)
    timings: dict[str, PhaseTiming] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None

    def fork(self) -> EpisodeManifest:
        """A copy the lifecycle (daemon/core/lifecycle.py) may change without touching this one: every container
        it changes is copied, what it only replaces is shared. A tenth of a deep copy's cost."""
        return self.model_copy(update={
            "phases": self.phases.model_copy(), "costs": self.costs.model_copy(), "errors": list(self.errors),
            "timings": {k: v.model_copy() for k, v in self.timings.items()}, "details": dict(self.details),
            "quality_scores": dict(self.quality_scores)})

    def current_stage(self) -> StageName | None:
        """The first phase not done, or None when all are."""
        for s in STAGE_NAMES:
            if self.phases.get(s) != State.DONE:
                return s
        return None


def manifest_schema() -> dict[str, Any]:
    return BatchManifest.model_json_schema()
