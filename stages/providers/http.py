"""What every HTTP provider shares: a session, timeouts, bounded retries, error bodies, Retry-After.

One call = up to `max_attempts` attempts within `max_retry_time_s`, each preceded by
`ctx.limiter.acquire(api)`, so retries spend the shared rate budget like any other request.
Transient failures (408/409/425/429/5xx, connection errors, timeouts, malformed bodies) are retried
with full-jitter exponential backoff, or after the server's Retry-After, which also pauses the API
for every process. Anything else fails at once with `StageError(retryable=False)`. No message
built here ever contains the key.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from loguru import logger
from podspool.stages.base import StageContext, StageError
from podspool.stages.settings import KEY_ENV_NAMES, HttpProviderSettings
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
)

T = TypeVar("T")

# api name -> where its key comes from (daemon.credentials reads these; stages only name them)
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
QUOTA_MARKERS = ("insufficient_quota", "quota_exceeded")
MAX_ERROR_CHARS = 300
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


class TransientError(Exception):
    """Worth another attempt; `retry_after` is the server's wish, in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedResponse(TransientError):
    """A 2xx whose body is not what the API documents (truncated, HTML from a proxy, …)."""


@dataclass(frozen=True)
class ErrorDetail:
    message: str
    type: str | None = None
    code: str | None = None

    def is_quota(self) -> bool:
        text = " ".join(str(x) for x in (self.type, self.code, self.message) if x).lower()
        return any(marker in text for marker in QUOTA_MARKERS)

    def __str__(self) -> str:
        tags = "/".join(str(x) for x in (self.type, self.code) if x)
        return f"{self.message} [{tags}]" if tags else self.message


def require_key(ctx: StageContext, api: str) -> str:
    key = ctx.secrets.get(api, "")
    if not key:
        env = KEY_ENV_NAMES.get(api, f"{api.upper()}_API_KEY")
        raise StageError(f"{api}: no API key: set {env} or the systemd credential {env.lower()}",
                         retryable=False)
    return key


def error_detail(body: bytes) -> ErrorDetail:
    """The server's reason from an error body: `{"error": {...}}`, `{"detail"|"message"|"error": ...}`."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace").strip()[:MAX_ERROR_CHARS]
        return ErrorDetail(text or "(empty body)")
    if not isinstance(doc, dict):
        return ErrorDetail(str(doc))
    message: Any = None
    kind: Any = None
    code: Any = None
    for field in ("error", "detail"):
        item = doc.get(field)
        if isinstance(item, dict):  # OpenAI/Perplexity {"error": {...}}, ElevenLabs {"detail": {...}}
            message = item.get("message") or item.get("msg")
            kind = item.get("type")
            code = item.get("code") or item.get("status")
        elif isinstance(item, list):  # FastAPI validation: {"detail": [{"msg": ..., "loc": [...]}]}
            message = "; ".join(str(i.get("msg", i)) if isinstance(i, dict) else str(i) for i in item)
        elif isinstance(item, str):
            message = item
        if message:
            break
    message = message or doc.get("message") or json.dumps(doc)[:MAX_ERROR_CHARS]
    code = code or doc.get("code") or doc.get("status")
    return ErrorDetail(str(message)[:MAX_ERROR_CHARS], str(kind) if kind else None, str(code) if code else None)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def parse_json(response: requests.Response) -> dict[str, Any]:
    """The body as a JSON object, or a retryable `MalformedResponse`."""
    try:
        doc = json.loads(response.content)
    except (ValueError, RecursionError):
        raise MalformedResponse(f"malformed JSON body ({len(response.content)} bytes, "
                                f"{response.headers.get('content-type', 'no content type')})") from None
    if not isinstance(doc, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(doc).__name__}")
    return doc


class HttpClient:
    """One provider instance's session and retry policy; `call` is one logical API call."""

    def __init__(self, api: str) -> None:
        self.api = api
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:  # lazily: provider instances are built before they know settings
            self._session = requests.Session()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def call(self, ctx: StageContext, settings: HttpProviderSettings, path: str, *,
             body: Mapping[str, Any], parse: Callable[[requests.Response], T],
             headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
             key: str | None = None) -> T:
        """POST `body` to `base_url + path` with retries; `parse` turns a 2xx into the result.

        `parse` may raise `MalformedResponse` to have the attempt retried.
        """
        url = settings.base_url.rstrip("/") + path
        where = f"POST {urlsplit(url).path}"
        started = time.monotonic()
        attempts = 0
        queued = 0.0  # time spent waiting for the shared limiter: not a retry delay

        def attempt() -> T:
            nonlocal attempts, queued
            attempts += 1
            before = time.monotonic()
            ctx.limiter.acquire(self.api)  # every attempt is a request against the shared budget
            queued += time.monotonic() - before
            # the conventional X-Request-Start (microseconds): when the daemon started this request,
            # which is where the contract measures rate windows; it carries nothing else
            sent = {**(headers or {}), "X-Request-Start": f"t={int(time.time() * 1e6)}"}
            ctx.calls[f"{self.api}:requests"] += 1
            try:
                response = self.session.post(url, json=dict(body), headers=sent,
                                             params=params, timeout=self._timeout(settings, ctx))
            except requests.Timeout:
                ctx.calls[f"{self.api}:errors"] += 1
                raise TransientError(f"no answer within {settings.timeout_s:g}s") from None
            except requests.ConnectionError as exc:
                ctx.calls[f"{self.api}:errors"] += 1
                raise TransientError(f"connection failed ({type(exc).__name__})") from None
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                # the body stopped short of its Content-Length (or its encoding broke): a truncated answer
                ctx.calls[f"{self.api}:errors"] += 1
                raise TransientError(f"the answer was cut short ({type(exc).__name__})") from None
            if 200 <= response.status_code < 300:
                return parse(response)
            ctx.calls[f"{self.api}:errors"] += 1
            if response.status_code == 429:
                ctx.calls[f"{self.api}:429"] += 1
            self._raise_for(response, ctx)
            raise AssertionError("unreachable")

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("{} {}: attempt {} failed ({}); retrying in {:.2f}s", self.api, where,
                           state.attempt_number, self._clean(str(exc), key), state.upcoming_sleep)

        def stop(state: RetryCallState) -> bool:
            # Like stop_after_attempt | stop_before_delay, except that time queued behind a busy
            # shared limiter (other workers using the rate) does not eat this call's retry budget;
            # the stage's deadline still bounds everything.
            if state.attempt_number >= settings.max_attempts:
                return True
            sleep = state.upcoming_sleep or 0.0
            if ctx.deadline is not None and time.monotonic() + sleep >= ctx.deadline:
                return True
            return time.monotonic() - started - queued + sleep >= settings.max_retry_time_s

        retrying = Retrying(
            stop=stop,
            wait=self._wait(settings),
            retry=retry_if_exception_type(TransientError),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientError as exc:
            raise StageError(self._clean(f"{self.api}: {where} failed after {attempts} attempt(s) in "
                                         f"{time.monotonic() - started:.1f}s: {exc}", key),
                             retryable=True) from None
        except StageError as exc:
            raise StageError(self._clean(str(exc), key), retryable=exc.retryable) from None

    def _raise_for(self, response: requests.Response, ctx: StageContext) -> None:
        detail = error_detail(response.content)
        status = f"HTTP {response.status_code}"
        where = f"POST {urlsplit(response.url).path}"
        if detail.is_quota():
            raise StageError(f"{self.api}: {where}: {status}: out of quota or credits: {detail}", retryable=False)
        if response.status_code in RETRY_STATUSES:
            wait = retry_after_s(response.headers)
            if wait is not None and wait > 0:
                ctx.limiter.pause(self.api, wait)  # every process holds off, not just this one
            raise TransientError(f"{status}: {detail}", retry_after=wait)
        hint = " (check the API key)" if response.status_code in (401, 403) else ""
        raise StageError(f"{self.api}: {where}: {status}{hint}: {detail}", retryable=False)

    @staticmethod
    def _timeout(settings: HttpProviderSettings, ctx: StageContext) -> tuple[float, float]:
        read = settings.timeout_s
        if ctx.deadline is not None:
            read = max(0.1, min(read, ctx.deadline - time.monotonic()))
        return (min(10.0, read), read)

    @staticmethod
    def _wait(settings: HttpProviderSettings) -> Callable[[RetryCallState], float]:
        # Backoff starts at 1/20 of the retry budget (at most 1 s), so a small budget (tests, short
        # stage limits) gets proportionally short sleeps; full jitter spreads competing workers.
        base = min(1.0, settings.max_retry_time_s / 20.0)
        cap = max(base, settings.max_retry_time_s / 4.0)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TransientError) and exc.retry_after is not None:
                return exc.retry_after + random.uniform(0, min(1.0, 0.1 * exc.retry_after + 0.01))
            return random.uniform(0, min(cap, base * 2 ** (state.attempt_number - 1)))

        return wait

    @staticmethod
    def _clean(text: str, key: str | None) -> str:
        if key:
            text = text.replace(key, "***")
        text = _BEARER.sub(lambda m: m.group(1) + "***", text)
        return text if len(text) <= 4 * MAX_ERROR_CHARS else text[: 4 * MAX_ERROR_CHARS] + "…"
