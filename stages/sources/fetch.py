"""Fetching one URL source, bounded and safe: the body of a page or document, never more.

Bounds: http(s) only, at most MAX_REDIRECTS redirects, CONNECT_TIMEOUT_S to connect, READ_TIMEOUT_S
between bytes and FETCH_TIME_S for the whole body, at most MAX_FETCH_BYTES (decompressed), and only
the content types a research source can be (HTML, text, Markdown, PDF). Every hop's name is resolved
and every address checked (addresses.py) before it is connected to, and the connection goes to the
checked address itself (the name is kept for the Host header and TLS), so a name that resolves
elsewhere a second time cannot reach a private network.

Calls are retried like the providers' (stages/providers/http.py): transient failures (connection
errors, timeouts, 408/429/5xx) with full-jitter backoff or the server's Retry-After, the rest at once.
Every request first takes a turn from the shared limiter under "fetch:<host>", then holds that host
off for HOST_INTERVAL_S, so all workers together ask one site at most about once a second.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3
from loguru import logger
from podspool.stages.base import StageContext
from podspool.stages.providers.http import RETRY_STATUSES, TransientError, retry_after_s
from podspool.stages.sources.addresses import UrlRefused, resolve_checked, split_url
from podspool.stages.sources.limits import SourceError
from tenacity import RetryCallState, Retrying, retry_if_exception_type

API = "fetch"
MAX_REDIRECTS = 5
MAX_FETCH_BYTES = 32 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
FETCH_TIME_S = 120.0  # the whole body, however slowly it drips
MAX_ATTEMPTS = 3
MAX_RETRY_TIME_S = 60.0
HOST_INTERVAL_S = 1.0  # politeness: one request a second to one site, across every worker
USER_AGENT = "podspool (research fetch; one request per source)"
CONTENT_KINDS = {"text/html": "html", "application/xhtml+xml": "html", "text/plain": "text",
                 "text/markdown": "markdown", "text/x-markdown": "markdown", "application/pdf": "pdf"}
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass
class Fetched:
    url: str  # as the episode named it
    final_url: str  # after redirects
    kind: str  # a documents.KINDS value
    content_type: str
    size: int


def fetch(url: str, into: Path, ctx: StageContext, allow_private: bool = False) -> Fetched:
    """GET `url` (following safe redirects) and write its body to `into`; raises SourceError.

    A failure that another attempt cannot mend (a refused address, a 404, a wrong content type, too
    big) raises at once; transient ones are retried, then raised as `FetchFailed` (retryable).
    """
    started = time.monotonic()
    attempts = 0

    def attempt() -> Fetched:
        nonlocal attempts
        attempts += 1
        return _follow(url, into, ctx, allow_private)

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= MAX_ATTEMPTS:
            return True
        sleep = state.upcoming_sleep or 0.0
        if ctx.deadline is not None and time.monotonic() + sleep >= ctx.deadline:
            return True
        return time.monotonic() - started + sleep >= MAX_RETRY_TIME_S

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return exc.retry_after + random.uniform(0, 1.0)
        return random.uniform(0, min(MAX_RETRY_TIME_S / 4, 2.0 ** (state.attempt_number - 1)))

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("fetch {}: attempt {} failed ({}); retrying in {:.2f}s", url, state.attempt_number,
                       exc, state.upcoming_sleep)

    try:
        return Retrying(stop=stop, wait=wait, retry=retry_if_exception_type(TransientError),
                        before_sleep=log_retry, reraise=True)(attempt)
    except TransientError as exc:
        raise FetchFailed(f"source {url}: not fetched after {attempts} attempt(s) in "
                          f"{time.monotonic() - started:.1f}s: {exc}") from None


class FetchFailed(SourceError):
    """Every attempt failed for a reason that may pass (the network, the server): worth a later retry."""


def _follow(url: str, into: Path, ctx: StageContext, allow_private: bool) -> Fetched:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = split_url(current)
        try:
            ip = resolve_checked(url, host, port, allow_private, hop=current)
        except socket.gaierror as exc:
            raise TransientError(f"the name {host} does not resolve ({exc.strerror or exc})") from None
        pool, response = _get(current, scheme, host, port, ip, ctx)
        try:
            if response.status in REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise SourceError(f"source {url}: HTTP {response.status} without a Location")
                current = urljoin(current, location)
                continue
            if response.status in RETRY_STATUSES:
                ctx.calls[f"{API}:errors"] += 1
                wait = retry_after_s(response.headers)
                if wait:
                    ctx.limiter.pause(f"{API}:{host}", wait)
                raise TransientError(f"HTTP {response.status} from {host}", retry_after=wait)
            if not 200 <= response.status < 300:
                ctx.calls[f"{API}:errors"] += 1
                raise SourceError(f"source {url}: HTTP {response.status} from {host}")
            content_type = (response.headers.get("content-type") or "").split(";")[0].strip().lower()
            kind = CONTENT_KINDS.get(content_type)
            if kind is None:
                raise SourceError(f"source {url}: content type {content_type or '(none)'} is not a document "
                                  f"podspool reads ({', '.join(sorted(CONTENT_KINDS))})")
            size = _save_body(response, url, into)
            return Fetched(url=url, final_url=current, kind=kind, content_type=content_type, size=size)
        finally:
            response.release_conn()
            pool.close()
    raise SourceError(f"source {url}: more than {MAX_REDIRECTS} redirects")


def _get(url: str, scheme: str, host: str, port: int, ip: str,
         ctx: StageContext) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """One GET of `url`, connected to the checked address `ip`, redirects not followed."""
    ctx.limiter.acquire(f"{API}:{host}")
    ctx.limiter.pause(f"{API}:{host}", HOST_INTERVAL_S)
    ctx.calls[f"{API}:requests"] += 1
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if scheme == "https" else 80
    headers = {"Host": host if port == default_port else f"{host}:{port}", "User-Agent": USER_AGENT,
               "Accept": ", ".join(CONTENT_KINDS) + ";q=0.9, */*;q=0.1", "Accept-Encoding": "gzip, deflate"}
    read = READ_TIMEOUT_S
    if ctx.deadline is not None:
        read = max(0.5, min(read, ctx.deadline - time.monotonic()))
    timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, read), read=read)
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(ip, port, timeout=timeout, retries=False, maxsize=1,
                                           server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(ip, port, timeout=timeout, retries=False, maxsize=1)
    try:
        return pool, pool.urlopen("GET", target, headers=headers, redirect=False, retries=False,
                                  preload_content=False, assert_same_host=False)
    except urllib3.exceptions.SSLError as exc:
        pool.close()
        ctx.calls[f"{API}:errors"] += 1
        raise SourceError(f"source {url}: TLS failed with {host} ({exc})") from None
    except urllib3.exceptions.HTTPError as exc:
        pool.close()
        ctx.calls[f"{API}:errors"] += 1
        raise TransientError(f"connection to {host} failed ({type(exc).__name__})") from None


def _save_body(response: urllib3.BaseHTTPResponse, url: str, into: Path) -> int:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FETCH_BYTES:
        raise SourceError(f"source {url}: {declared} bytes, more than the {MAX_FETCH_BYTES} allowed")
    deadline = time.monotonic() + FETCH_TIME_S
    size = 0
    try:
        with into.open("wb") as out:
            for chunk in response.stream(64 * 1024, decode_content=True):
                size += len(chunk)
                if size > MAX_FETCH_BYTES:  # counted decompressed: a gzip bomb stops here too
                    raise SourceError(f"source {url}: more than the {MAX_FETCH_BYTES} bytes allowed")
                if time.monotonic() > deadline:
                    raise TransientError(f"the body took longer than {FETCH_TIME_S:g}s")
                out.write(chunk)
    except urllib3.exceptions.HTTPError as exc:  # cut short, or a read timeout mid-body
        raise TransientError(f"the body was cut short ({type(exc).__name__})") from None
    return size


__all__ = ["API", "FetchFailed", "Fetched", "UrlRefused", "fetch"]
