"""The one validated configuration object, loaded from TOML and passed explicitly everywhere."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from podspool.stages.settings import (
    AudioSettings,
    PriceEntry,
    ProductionSettings,
    ProvidersSettings,
    PublishSettings,
    QualitySettings,
    ResearchSettings,
    StageSettings,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class ConfigError(Exception):
    """The configuration cannot be used; the message names each problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Concurrency(Strict):
    research: int = Field(default=5, ge=1, le=64)
    production: int = Field(default=3, ge=1, le=64)
    audio: int = Field(default=2, ge=1, le=64)


class Limits(Strict):
    max_sessions_in_memory: int = Field(default=10, ge=1, le=10000)
    checkpoint_every: int = Field(default=5, ge=1)
    max_retries: int = Field(default=3, ge=0, le=100)
    max_manifest_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    retry_backoff_s: float = Field(default=2.0, ge=0)  # first episode-level retry delay; doubles, with jitter
    retry_backoff_max_s: float = Field(default=300.0, ge=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # a worker restarts after this many tasks (a slow leak's bound; memory_hard_mb catches a fast one).
    # Each restart pays a fork and the stage's imports (0.15 s of CPU, 0.9 s when publishing): at 200,
    # fast sim runs spent more CPU booting audio workers than running their tasks
    max_tasks_per_child: int = Field(default=1000, ge=1)
    memory_soft_mb: int = Field(default=4096, ge=64)  # RSS of supervisor + workers: pause admission
    memory_hard_mb: int = Field(default=1024, ge=64)  # one worker's RSS: recycle it after its task
    inbox_rescan_s: float = Field(default=5.0, gt=0)
    inbox_settle_s: float = Field(default=1.0, ge=0)  # polling: a file unchanged this long is complete
    disk_retry_s: float = Field(default=5.0, gt=0)  # after ENOSPC/EROFS: how long admission pauses


class RateLimits(Strict):
    perplexity: str = "10/minute"
    elevenlabs: str = "100/minute"
    websearch: str = "30/minute"
    openai: str = "60/minute"
    openai_speech: str = "50/minute"  # [audio] provider = "openai": its own budget, apart from the writer's
    sim: str | None = None  # the dry run is unlimited unless you want to rehearse a limit

    @field_validator("*")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not RATE_RE.match(v):
            raise ValueError(f"{v!r} is not 'N/second', 'N/minute' or 'N/hour'")
        if int(RATE_RE.match(v).group(1)) < 1:  # type: ignore[union-attr]
            raise ValueError("a rate needs at least 1 request")
        return v.strip()

    def parsed(self) -> dict[str, tuple[int, float]]:
        """api -> (requests, window seconds)."""
        out = {}
        for api, text in self.model_dump().items():
            if text is None:
                continue
            m = RATE_RE.match(text)
            assert m
            out[api] = (int(m.group(1)), PERIODS[m.group(2)])
        return out


class Logging(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    level: str = "INFO"
    rotation: str = "50 MB"
    retention: str = "14 days"
    compression: str = "gz"
    as_json: bool = Field(default=False, alias="json")  # one JSON object per line (--log-json)
    stderr: bool = True


class Notify(Strict):
    webhook_url: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)


class Retention(Strict):
    """How long finished work keeps what nobody listens to. Log retention is under [logging]."""

    # days audio.wav stays beside the episode's mp3 once the mp3 is written; 0: removed as the episode
    # finishes (the mp3 and the text artifacts are what a finished episode keeps)
    keep_wav_days: float = Field(default=0.0, ge=0)
    # archive a finished batch this many days after it completed (None: only `podspool archive` does)
    archive_after_days: float | None = Field(default=None, ge=0)
    sweep_every_s: float = Field(default=3600.0, gt=0)  # how often the daemon looks for work to retire


# Typical seconds per call, for `podspool plan` ("local_research" and "local_writer" are the offline
# providers, "espeak" speaks a whole episode in one call and its audio is then made publishable: the
# quick start's 10 episodes took 9.9 s with one audio process). [plan.latency_s] overrides any of them.
TYPICAL_LATENCY_S: dict[str, float] = {
    "local_research": 0.02, "local_writer": 0.03, "espeak": 0.9,
    "perplexity": 8.0, "websearch": 2.0, "openai": 40.0, "elevenlabs": 4.0,
    "openai_speech": 3.0, "piper": 8.0,  # piper: a whole episode, offline, on 2 cores
}


class StageSeconds(Strict):
    research: float = Field(default=0.0, ge=0)
    production: float = Field(default=0.0, ge=0)
    audio: float = Field(default=0.0, ge=0)


class PlanSettings(Strict):
    """What `podspool plan` assumes where it cannot know in advance (sim's latency is its own setting)."""

    latency_s: dict[str, float] = Field(default_factory=dict)  # provider -> seconds, over TYPICAL_LATENCY_S
    # The daemon's own time per task on a core of its own, fitted to sim dry runs on a shared 2-core machine
    # (benchmarks/plan_bench.py): a worker's work after its calls (validate, write its artifacts whole);
    # the supervisor's per task (hand it over, record its result), one task at a time; and the latency
    # from a saved result to the episode's next stage.
    save_s: StageSeconds = Field(default_factory=lambda: StageSeconds(research=0.004, production=0.008, audio=0.015))
    # a worker's first task also imports what its stage needs (the audio stage's publishing libraries)
    warmup_s: StageSeconds = Field(default_factory=lambda: StageSeconds(research=0.03, production=0.02, audio=0.8))
    supervisor_s: float = Field(default=0.003, ge=0)
    handoff_s: float = Field(default=0.006, ge=0)
    # those grow with the machine's load: by this share of the load average per core above 1 (0: never)
    load_weight: float = Field(default=0.5, ge=0)
    script_words: int = Field(default=1400, ge=1)  # words of a script, for per-character and per-turn APIs
    words_per_turn: int = Field(default=45, ge=1)  # a turn is one call per_turn (ElevenLabs) or with openai speech
    revisions: float = Field(default=0.0, ge=0)  # expected revisions per episode of a model writer

    @field_validator("latency_s")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not x >= 0]
        if bad:
            raise ValueError(f"latencies must be >= 0 seconds: {', '.join(bad)}")
        return v
class ExecutorSettings(Strict):
    """Where stage work runs: local process pools, or Dramatiq workers on any host that reaches Redis."""

    kind: Literal["local", "dramatiq"] = "local"
    broker_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field(default="podspool", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # prefix of every key
    # dramatiq: a worker silent this long is dead, and its unacknowledged messages go to another worker
    heartbeat_timeout_s: float = Field(default=60.0, ge=1)
    # per million broker commands, how often dramatiq runs the maintenance that requeues a dead worker's
    # messages (its default, 1000, can leave them for minutes on a quiet queue)
    maintenance_chance: int = Field(default=20000, ge=1, le=1_000_000)
    # a task killed with its worker this many times (poison: it crashes whoever runs it) fails instead
    max_deliveries: int = Field(default=3, ge=1, le=100)
    # artifacts travel back in Redis keys that expire, so an abandoned result cannot fill the broker
    artifact_ttl_s: int = Field(default=86400, ge=60)
    threads: int = Field(default=4, ge=1, le=256)  # per `podspool worker` process
    # an idle worker looks at its queues at least this often (dramatiq's default, 1 s, adds up to a
    # second to every stage hand-over of an episode)
    idle_poll_ms: int = Field(default=100, ge=10, le=10000)
    # SIGTERM to `podspool worker`: tasks in progress get this long to finish, then go back to the queue
    shutdown_grace_s: float = Field(default=30.0, ge=0)


class Config(Strict):
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    # True when [concurrency] was given explicitly: it then overrides the batch strategy's preset
    concurrency_explicit: bool = Field(default=False, exclude=True)
    limits: Limits = Field(default_factory=Limits)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    research: ResearchSettings = Field(default_factory=ResearchSettings)
    production: ProductionSettings = Field(default_factory=ProductionSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    pricing: dict[str, dict[str, PriceEntry]] = Field(default_factory=dict)
    logging: Logging = Field(default_factory=Logging)
    notify: Notify = Field(default_factory=Notify)
    retention: Retention = Field(default_factory=Retention)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    plan: PlanSettings = Field(default_factory=PlanSettings)
    mode: Literal["production"] = "production"

    def stage_settings(self) -> StageSettings:
        return StageSettings(research=self.research, production=self.production, audio=self.audio,
                             quality=self.quality, providers=self.providers, pricing=self.pricing,
                             publish=self.publish)


def config_path(explicit: str | os.PathLike[str] | None, spool: Path) -> Path | None:
    """--config, else $PODSPOOL_CONFIG, else <spool>/podspool.toml when present, else None (defaults)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("PODSPOOL_CONFIG")
    if env:
        return Path(env)
    candidate = spool / "podspool.toml"
    return candidate if candidate.exists() else None


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"[{'.'.join(str(p) for p in e['loc'])}] {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    cfg.concurrency_explicit = "concurrency" in data
    return cfg


def spool_root(explicit: str | os.PathLike[str] | None) -> Path:
    """--spool, else $PODSPOOL_SPOOL, else ./spool."""
    return Path(explicit or os.environ.get("PODSPOOL_SPOOL") or "spool").absolute()
