"""The wire format of remote work: signed envelopes, and the schema of a task and of its result.

Anyone who can write to Redis can put a message on a queue or a result on a result list, so neither
end trusts what it reads there. Every task and every result travels as an envelope
`{"v": VERSION, "body": "<JSON text>", "sig": "<HMAC-SHA256 of the text>"}` signed with the broker key,
which lives in a credential file or the environment of each host (`PODSPOOL_BROKER_KEY`), never in
Redis. The body is then checked field by field (pydantic): a message that is not signed with the key,
is in another format version, or holds a field out of shape is refused whole, with its reason.

Replays: each send of a task carries a fresh `nonce` and an `expires` time on the broker's clock
(Redis TIME, shared by every host); a worker refuses an expired message and one whose nonce was
already answered; the supervisor takes a result only for the nonce it sent last for that token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Any, Literal

from podspool.daemon.credentials import BROKER_KEY_ENV, read_credential
from podspool.daemon.models import BATCH_ID_PATTERN
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

VERSION = 2
MIN_KEY_CHARS = 16
TOKEN_PATTERN = r"^[0-9a-f]{12}-[0-9]{1,12}$"  # <supervisor life>-<task id>
NONCE_PATTERN = r"^[0-9a-f]{32}$"
EPISODE_ID_PATTERN = r"^ep_[0-9]{3,5}_[A-Za-z0-9_-]{1,64}$"  # daemon/models.py's episode_id()
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
MAX_TEXT = 64 * 1024  # an error, a log line, a topic
MAX_LOG_LINES = 500
MAX_FILES = 64
MAX_SOURCES = 256
# Dramatiq's time limit interrupts a thread only between bytecodes; one stuck in a blocking C call
# (a read with no timeout) never sees it. Past its limit plus this, a worker's watchdog answers for it.
STUCK_GRACE_S = 3.0


class WireError(ValueError):
    """A message or result that is refused; the text says why (it never quotes a secret)."""


class KeyMissing(RuntimeError):
    pass


def load_key(environ: Any = None) -> bytes:
    """The broker key from `$PODSPOOL_BROKER_KEY` or `$CREDENTIALS_DIRECTORY/podspool_broker_key`."""
    key = read_credential(BROKER_KEY_ENV, environ)
    if key is None:
        raise KeyMissing(f"remote work needs a broker key, the same on the supervisor and every worker host: "
                         f"set {BROKER_KEY_ENV} or the credential {BROKER_KEY_ENV.lower()} "
                         "(e.g. `openssl rand -hex 32`)")
    if len(key) < MIN_KEY_CHARS:
        raise KeyMissing(f"the broker key ({BROKER_KEY_ENV}) is shorter than {MIN_KEY_CHARS} characters")
    return key.encode("utf-8")


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, body: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps({**body, "v": VERSION}, separators=(",", ":"), allow_nan=False)
        return {"v": VERSION, "body": text, "sig": self._mac(text)}

    def open(self, envelope: Any, what: str) -> dict[str, Any]:
        """The body of a signed envelope, or WireError (a bad signature, another version, not JSON)."""
        if not isinstance(envelope, dict):
            raise WireError(f"{what} is not an envelope (a {type(envelope).__name__})")
        v = envelope.get("v")
        if v != VERSION:
            raise WireError(f"{what} is in message format v{v if isinstance(v, int) else '?'}, this podspool "
                            f"speaks v{VERSION}: run the same podspool version on the supervisor and the workers")
        text, sig = envelope.get("body"), envelope.get("sig")
        if not isinstance(text, str) or not isinstance(sig, str) or not hmac.compare_digest(self._mac(text), sig):
            raise WireError(f"{what} is not signed with this host's broker key (forged, or the hosts' keys differ)")
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise WireError(f"{what} body is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise WireError(f"{what} body is not a v{VERSION} object")
        return body


# ---- schemas ------------------------------------------------------------------------------------

Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # a number (an int is one), never text
Cost = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class BlobRef(_Strict):
    size: StrictInt = Field(ge=0, le=1 << 34)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data: str | None = None
    keys: list[StrictStr] | None = Field(default=None, max_length=1 << 14)

    @field_validator("keys")
    @classmethod
    def _one_way(cls, v: list[str] | None, info: Any) -> list[str] | None:
        if v is None and info.data.get("data") is None:
            raise ValueError("a blob has inline data or chunk keys")
        return v


class EpisodeWire(BaseModel):
    """The fields a worker relies on; the rest is EpisodeInput's own to check."""

    model_config = ConfigDict(extra="allow")
    episode_id: str = Field(pattern=EPISODE_ID_PATTERN)
    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    number: StrictInt = Field(ge=1, le=99999)
    topic: Text
    sources: list[Annotated[StrictStr, Field(max_length=4096)]] = Field(default_factory=list, max_length=MAX_SOURCES)


class TaskBody(_Strict):
    v: Literal[2]
    token: str = Field(pattern=TOKEN_PATTERN)
    nonce: str = Field(pattern=NONCE_PATTERN)
    results: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}:results:[0-9a-f]{32}$")
    stage: Literal["research", "production", "audio"]
    episode: EpisodeWire
    settings: dict[str, Any]
    rates: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")],
                tuple[Annotated[StrictInt, Field(ge=1)], Annotated[float, Field(gt=0, allow_inf_nan=False)]]]
    time_limit_s: float = Field(gt=0, le=7 * 86400, allow_inf_nan=False)
    issued: Finite
    expires: Finite
    sources: dict[Annotated[StrictStr, Field(max_length=4096)], StrictStr] = Field(max_length=MAX_SOURCES)
    files: dict[Annotated[str, Field(pattern=ARTIFACT_NAME_PATTERN)], BlobRef] = Field(max_length=MAX_FILES)


class UsageWire(_Strict):
    api: Annotated[StrictStr, Field(max_length=64)]
    model: Annotated[StrictStr, Field(max_length=256)] | None = None
    requests: StrictInt = Field(default=1, ge=0)
    input_tokens: StrictInt = Field(default=0, ge=0)
    output_tokens: StrictInt = Field(default=0, ge=0)
    characters: StrictInt = Field(default=0, ge=0)
    cost_usd: Cost | None = None


class StageResultWire(_Strict):
    ok: StrictBool
    cost_usd: Cost = 0.0
    usage: list[UsageWire] = Field(default_factory=list, max_length=10000)
    quality_scores: dict[Annotated[str, Field(max_length=64)], Finite] = Field(default_factory=dict)
    quality: Finite | None = None
    revisions: StrictInt = Field(default=0, ge=0, le=1000)
    error: Text | None = None
    retryable: StrictBool = True
    reused: StrictBool = False
    details: dict[str, Any] = Field(default_factory=dict)
    disk_errno: StrictInt | None = None
    api_calls: dict[Annotated[str, Field(max_length=128)], Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)


class ResultDoc(_Strict):
    v: Literal[2]
    token: str = Field(pattern=TOKEN_PATTERN)
    nonce: str = Field(pattern=NONCE_PATTERN)
    episode_id: str = Field(pattern=EPISODE_ID_PATTERN)
    stage: Literal["research", "production", "audio"]
    worker: Annotated[StrictStr, Field(max_length=300)]
    issued: Finite
    result: StageResultWire
    files: list[tuple[Annotated[str, Field(pattern=ARTIFACT_NAME_PATTERN)], BlobRef]] = Field(max_length=MAX_FILES)
    logs: list[tuple[Literal[LEVELS], Text]] = Field(default_factory=list, max_length=MAX_LOG_LINES)  # type: ignore[valid-type]


def problems(exc: ValidationError, limit: int = 5) -> str:
    """A ValidationError in one line: the first few fields and what is wrong with each (no values)."""
    errs = exc.errors(include_url=False, include_input=False)
    named = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in errs[:limit]]
    more = f" (and {len(errs) - limit} more)" if len(errs) > limit else ""
    return "; ".join(named) + more


def check_task(body: dict[str, Any], namespace: str) -> TaskBody:
    try:
        task = TaskBody.model_validate(body)
    except ValidationError as exc:
        raise WireError(f"task message out of shape: {problems(exc)}") from None
    if not task.results.startswith(f"{namespace}:results:"):
        raise WireError("task message names a result list outside this namespace")
    prefix = f"{namespace}:blob:{task.token}:"
    if any(not k.startswith(prefix) for ref in task.files.values() for k in ref.keys or ()):
        raise WireError("task message names blob keys that are not its own")
    return task


def check_result(body: dict[str, Any], namespace: str) -> ResultDoc:
    try:
        doc = ResultDoc.model_validate(body)
    except ValidationError as exc:
        raise WireError(f"result out of shape: {problems(exc)}") from None
    prefix = f"{namespace}:blob:{doc.token}:"
    if any(not k.startswith(prefix) for _name, ref in doc.files for k in ref.keys or ()):
        raise WireError("result names blob keys that are not its own")
    return doc
