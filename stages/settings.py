"""Settings the stages need, as pydantic models. The daemon's Config embeds them.

Each model forbids unknown keys, so a typo in podspool.toml is an error at load time rather than a
silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from podspool.stages.show import Cast, Format, Minutes, ShowFields, language_tag
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the environment variable that holds each API's key (a file of the lower-case name under
# $CREDENTIALS_DIRECTORY also serves: daemon/credentials.py); the supervisor reads it without the HTTP stack
KEY_ENV_NAMES: dict[str, str] = {
    "perplexity": "PERPLEXITY_API_KEY",
    "openai": "OPENAI_API_KEY",
    "openai_speech": "OPENAI_API_KEY",  # the speech endpoint has a rate budget of its own, not a key
    "elevenlabs": "ELEVENLABS_API_KEY",
    "websearch": "TAVILY_API_KEY",
}


# the episode length each stage's `time_limit_s` is meant for: a longer episode gets as much again per as
# many minutes more (a 60-minute episode six times the limit), so a long one is not killed for its length
LIMIT_COVERS_MINUTES = 10.0


def scaled_time_limit(limit_s: float, minutes: float | None) -> float:
    """A stage's time limit for an episode whose show targets `minutes` (None: no target, the limit as set)."""
    return limit_s * max(1.0, (minutes or 0.0) / LIMIT_COVERS_MINUTES)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class HttpProviderSettings(Strict):
    base_url: str
    model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)  # tenacity: attempts inside one call
    max_retry_time_s: float = Field(default=120.0, gt=0)


class PerplexitySettings(HttpProviderSettings):
    base_url: str = "https://api.perplexity.ai"
    # agent: the Agent API (POST /v1/responses, web_search tool); sonar: chat completions;
    # search: the Search API's raw results, which the writer grounds on itself
    api: Literal["agent", "sonar", "search"] = "agent"
    model: str | None = None  # agent: "provider/model" (overrides the preset's); sonar: default "sonar"
    preset: str | None = "fast-search"  # agent only: fast-search, pro-search, deep-research, ...
    max_steps: int | None = Field(default=None, ge=1, le=10)  # agent only: overrides the preset's
    search_context_size: Literal["low", "medium", "high"] = "low"
    search_recency_filter: str | None = None  # sonar and search only
    search_domain_filter: list[str] = Field(default_factory=list)  # sonar and search only

    @model_validator(mode="after")
    def _filters_where_sent(self) -> PerplexitySettings:
        # the agent request built here carries no search filters: refuse them rather than search unfiltered
        if self.api == "agent" and (self.search_recency_filter or self.search_domain_filter):
            raise ValueError('search_recency_filter and search_domain_filter are sent with api = "sonar" or '
                             '"search", not with the agent API: choose one of those, or remove the filters')
        return self


class OpenAISettings(HttpProviderSettings):
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str | None = "llama3.1"
    temperature: float = 0.7
    max_tokens: int = Field(default=4096, ge=1)
    # which name the token cap goes by: OpenAI's newer models want max_completion_tokens, many local
    # servers know only max_tokens; "auto" sends max_tokens and switches once on a 400 naming it
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"


class ElevenLabsSettings(HttpProviderSettings):
    base_url: str = "https://api.elevenlabs.io"
    # dialogue: POST /v1/text-to-dialogue/with-timestamps, every voice in one request, turns packed;
    # per_turn: POST /v1/text-to-speech/{voice_id} per turn, stitched with previous_request_ids
    mode: Literal["dialogue", "per_turn"] = "dialogue"
    model: str | None = None  # default: eleven_v3 for dialogue (the model that speaks it), else multilingual v2
    output_format: str | None = None  # pcm_<rate>; default: the one nearest [audio] sample_rate
    voices: dict[str, str] = Field(default_factory=dict)  # host name -> voice_id
    # ElevenLabs documents ~2,000 characters per dialogue request as reliable; cut at turns or sentences
    max_chars_per_request: int = Field(default=2000, ge=100)
    # one request now speaks about two minutes of dialogue, which takes longer than one turn did
    timeout_s: float = Field(default=180.0, gt=0)

    @property
    def model_in_use(self) -> str:
        """`model`, else the mode's default: text-to-dialogue is eleven_v3's, and per-turn speech defaults
        to the model that takes stitching."""
        return self.model or ("eleven_v3" if self.mode == "dialogue" else "eleven_multilingual_v2")


class OpenAISpeechSettings(HttpProviderSettings):
    """Any OpenAI-compatible `POST {base_url}/audio/speech` (OpenAI itself, or a local speech server)."""

    base_url: str = "https://api.openai.com/v1"
    model: str | None = "gpt-4o-mini-tts"
    voices: dict[str, str] = Field(default_factory=dict)  # host name -> voice; default alloy, then onyx
    instructions: str | None = None  # gpt-4o-mini-tts only: how to speak (tone, pace)
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    # pcm: raw 16-bit mono at `pcm_sample_rate` (OpenAI: 24 kHz); wav: the rate is read from the header
    response_format: Literal["pcm", "wav"] = "pcm"
    pcm_sample_rate: int = Field(default=24000, ge=8000, le=48000)
    max_chars_per_request: int = Field(default=4096, ge=100)


class PiperSettings(Strict):
    """Offline neural speech (`pip install 'podspool[piper]'`). One .onnx voice per host."""

    voices: dict[str, str] = Field(default_factory=dict)  # host name -> path of a .onnx voice
    speaker_ids: dict[str, int] = Field(default_factory=dict)  # host -> speaker (multi-speaker voices)
    length_scales: dict[str, float] = Field(default_factory=dict)  # host -> phoneme length (>1 slower)
    pitch: dict[str, float] = Field(default_factory=dict)  # host -> pitch factor (1.12 = two semitones up)


class WebSearchSettings(HttpProviderSettings):
    base_url: str = "https://api.tavily.com"
    search_depth: Literal["basic", "advanced"] = "basic"
    max_results: int = Field(default=5, ge=1, le=20)


class SimSettings(Strict):
    """A dry run: no network, no spend beyond the pretend cost per call."""

    latency_ms: float = Field(default=100.0, ge=0)
    stage_latency_ms: dict[str, float] = Field(default_factory=dict)  # per stage, overrides latency_ms
    error_rate: float = Field(default=0.0, ge=0, le=1)
    cost_per_call_usd: float = Field(default=0.01, ge=0)
    seed: int | None = None
    # every call for an episode whose topic contains this text fails (a poison episode, for drills)
    fail_topic: str | None = None
    # every call for an episode whose topic contains this text never returns (a hung worker, for drills)
    hang_topic: str | None = None
    # each call keeps this many MB for the life of the worker (a leaky provider, for memory-guard drills)
    leak_mb_per_call: float = Field(default=0.0, ge=0, le=1024)


class ProvidersSettings(Strict):
    perplexity: PerplexitySettings = Field(default_factory=PerplexitySettings)
    elevenlabs: ElevenLabsSettings = Field(default_factory=ElevenLabsSettings)
    openai_speech: OpenAISpeechSettings = Field(default_factory=OpenAISpeechSettings)
    piper: PiperSettings = Field(default_factory=PiperSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    websearch: WebSearchSettings = Field(default_factory=WebSearchSettings)
    sim: SimSettings = Field(default_factory=SimSettings)


class ResearchSettings(Strict):
    provider: Literal["local", "perplexity", "websearch", "sim"] = "local"
    # Allowed roots for source files; relative source paths resolve against the first one.
    # Empty means the daemon's working directory.
    source_roots: list[str] = Field(default_factory=list)
    sources_dir: str | None = None  # every file here is searched for every episode
    max_findings: int = Field(default=8, ge=1, le=50)
    time_limit_s: float = Field(default=900.0, gt=0)
    # URL sources reaching loopback, private, link-local or metadata addresses are refused unless true
    allow_private_urls: bool = False


class ProductionSettings(Strict):
    provider: Literal["local", "openai", "sim"] = "local"
    hosts: list[str] = Field(default_factory=lambda: ["Alex", "Sam"], min_length=2, max_length=2)
    # the show's defaults, where a manifest sets none (stages/show.py): unset keeps today's episodes
    minutes: Minutes | None = None
    format: Format | None = None
    cast: Cast | None = None  # None: the two `hosts`
    language: str | None = None  # BCP-47; None: en
    review: bool = False

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return None if v is None else language_tag(v)

    def show_defaults(self) -> ShowFields:
        return ShowFields(minutes=self.minutes, format=self.format, cast=self.cast, language=self.language,
                          review=self.review)
    min_words: int = Field(default=300, ge=1)
    max_words: int = Field(default=2500, ge=1)
    time_limit_s: float = Field(default=900.0, gt=0)


class AudioSettings(Strict):
    provider: Literal["espeak", "piper", "elevenlabs", "openai", "sim"] = "espeak"
    sample_rate: int = Field(default=22050, ge=8000, le=48000)
    words_per_minute: int = Field(default=165, ge=60, le=400)
    duration_tolerance: float = Field(default=0.5, gt=0, le=1)  # +/- fraction of the expected duration
    pause_ms: int = Field(default=350, ge=0, le=5000)
    voices: dict[str, str] = Field(default_factory=dict)  # host name -> espeak voice
    # write the publishable episode (episode.mp3 with audio.mp3 linked to it, chapters.json, transcript.vtt,
    # shownotes.md); false leaves audio.wav alone, a rehearsal that skips publishing
    mp3: bool = True
    loudness_lufs: float = Field(default=-16.0, ge=-40, le=-5)  # integrated, ITU-R BS.1770
    true_peak_dbtp: float = Field(default=-1.0, ge=-12, le=0)
    mp3_channels: Literal[1, 2] = 1  # 2: the same voice in both channels, for players that want stereo
    mp3_kbps: int | None = Field(default=None, ge=32, le=320)  # default 64 for mono, 128 for stereo
    time_limit_s: float = Field(default=900.0, gt=0)


class PublishSettings(Strict):
    """[publish]: the show, as the ID3 tags and the podcast feed present it."""

    title: str = "podspool"
    author: str = "podspool"
    description: str = "Episodes produced by podspool."
    language: str | None = None  # BCP-47; None: the episodes' own ([production] language, else en)
    # cover art: a square JPEG/PNG file of 1400-3000 px (relative to the config file's folder), or the URL
    # of one served elsewhere; None: `podspool feed` draws a plain cover from the title
    image: str | None = None
    base_url: str = "http://localhost:8000"  # where <spool>/feed/ is served; `podspool feed --base-url` wins
    explicit: bool = False
    # an Apple Podcasts category, "Science" or "Science > Astronomy"; `podspool feed --check` judges the
    # feed's settings, so a misspelt one is named there with the rest rather than stopping the daemon
    category: str = "Education"
    type: Literal["episodic", "serial"] = "episodic"
    owner_name: str | None = None  # itunes:owner; None: the author
    owner_email: str | None = None  # itunes:owner and podcast:locked's owner: Apple verifies the show there
    email: str | None = None  # the earlier name of owner_email, still read


class QualitySettings(Strict):
    # the mean of the scored (soft) gates a script must reach; the hard gates must all hold besides
    threshold: float = Field(default=0.8, ge=0, le=1)
    max_revisions: int = Field(default=2, ge=0, le=10)


class PriceEntry(Strict):
    """USD prices; any that apply to a call are added up."""

    per_request: float = 0.0
    per_million_input_tokens: float = 0.0
    per_million_output_tokens: float = 0.0
    per_thousand_characters: float = 0.0


class StageSettings(Strict):
    """Everything a stage may read. Handed to every worker; picklable."""

    research: ResearchSettings = Field(default_factory=ResearchSettings)
    production: ProductionSettings = Field(default_factory=ProductionSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    # api -> model -> price; "*" is the model fallback. Defaults live in stages/costs.py.
    pricing: dict[str, dict[str, PriceEntry]] = Field(default_factory=dict)
