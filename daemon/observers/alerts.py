"""Webhook alerts (`[notify] webhook_url`): a JSON POST on batch completion, failed episode and crash.

Posting happens on one background thread fed by a bounded queue, so a slow or dead receiver never
holds up the pipeline: when the queue is full the alert is dropped and logged. Each post is retried
a few times (tenacity, bounded). Payloads carry ids, counts and costs; error texts pass through the
key masking, and the URL (which often embeds a token, e.g. Slack's) is never logged whole.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from loguru import logger
from podspool.daemon.credentials import mask
from podspool.daemon.models import EpisodeManifest, utcnow
from podspool.daemon.observers.hooks import Hook
from tenacity import retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

QUEUE_SIZE = 100
ATTEMPTS = 4
ERROR_CHARS = 500


class _Retryable(Exception):
    """A 429 or 5xx answer: worth another try."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | requests.ConnectionError | requests.Timeout)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…"


class AlertsHook(Hook):
    def __init__(self, url: str, *, timeout_s: float = 10.0, secrets: Mapping[str, str] | None = None,
                 spool: str = "", backoff_s: float = 0.5) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.keys = list((secrets or {}).values())
        self.spool = spool
        self.backoff_s = backoff_s
        self.where = redact_url(url)
        self.host = socket.gethostname()
        self.queue: queue.Queue[tuple[dict[str, Any], threading.Event] | None] = queue.Queue(QUEUE_SIZE)
        self.session = requests.Session()
        self.thread = threading.Thread(target=self._run, name="podspool-alerts", daemon=True)
        self.thread.start()
        self.sent = 0
        self.dropped = 0

    # ---- events -------------------------------------------------------------------------------

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        keep = ("batch_id", "state", "total", "completed", "failed", "held", "costs", "episodes_per_hour",
                "start_time", "end_time", "quality_average", "revised", "checkpoints")
        self._enqueue({"event": "batch_complete", "batch": {k: session.get(k) for k in keep},
                       "failed_episodes": [m.session_id for m in episodes if m.status == "failed"]})

    def on_episode_failed(self, manifest: EpisodeManifest) -> None:
        last = manifest.errors[-1] if manifest.errors else None
        self._enqueue({"event": "episode_failed", "episode_id": manifest.session_id,
                       "batch_id": manifest.batch_id, "episode_number": manifest.episode_number,
                       "topic": manifest.topic, "attempts": manifest.attempts,
                       "phase": last.phase if last else manifest.current_stage(),
                       "error": mask(last.error, self.keys)[:ERROR_CHARS] if last else None,
                       "costs": manifest.costs.model_dump()})

    def on_crash(self, exc: BaseException) -> None:
        payload = {"event": "crash", "error_type": type(exc).__name__,
                   "error": mask(str(exc), self.keys)[:ERROR_CHARS]}
        if self.thread.is_alive():
            done = self._enqueue(payload)
            if done is not None:
                done.wait(self.timeout_s)  # the process is about to exit: give the post a bounded chance
            return
        # the supervisor closes its hooks before the crash reaches the command line: post from here, once
        self._deliver({**payload, "host": self.host, "spool": self.spool, "at": utcnow()}, attempts=1)

    def close(self) -> None:
        """Deliver what is queued (bounded), then stop the thread."""
        try:
            self.queue.put(None, timeout=self.timeout_s)
        except queue.Full:
            pass
        self.thread.join(self.timeout_s * 2)
        self.session.close()

    # ---- delivery -----------------------------------------------------------------------------

    def _enqueue(self, payload: dict[str, Any]) -> threading.Event | None:
        payload = {**payload, "host": self.host, "spool": self.spool, "at": utcnow()}
        done = threading.Event()
        try:
            self.queue.put_nowait((payload, done))
        except queue.Full:
            self.dropped += 1
            logger.warning("webhook {}: {} alerts waiting; dropped a {} alert", self.where, QUEUE_SIZE,
                           payload["event"])
            return None
        return done

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            payload, done = item
            try:
                self._deliver(payload, ATTEMPTS)
            finally:
                done.set()

    def _deliver(self, payload: dict[str, Any], attempts: int) -> None:
        try:
            self._post(payload, attempts)
            self.sent += 1
        except Exception as exc:  # a lost alert is logged, never raised into the pipeline
            text = mask(f"{type(exc).__name__}: {exc}", self.keys).replace(self.url, self.where)
            parts = urlsplit(self.url)
            if parts.query:
                text = text.replace(parts.query, "…")  # ?token=...: a query is a secret as often as not
            if len(parts.path) > 1:
                text = text.replace(parts.path, "/…")  # the path may be the token
            if parts.password:
                text = text.replace(parts.password, "***")
            logger.warning("webhook {}: {} alert not delivered: {}", self.where, payload["event"], text)

    def _post(self, payload: dict[str, Any], attempts: int) -> None:
        @retry(retry=retry_if_exception(_transient), reraise=True,
               stop=stop_after_attempt(attempts) | stop_after_delay(self.timeout_s * attempts),
               wait=wait_exponential(multiplier=self.backoff_s, max=8.0))
        def attempt() -> None:
            started = time.monotonic()
            resp = self.session.post(self.url, json=payload, timeout=self.timeout_s)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code} after {time.monotonic() - started:.1f}s")
            if resp.status_code >= 400:
                raise RuntimeError(f"HTTP {resp.status_code}")  # our payload or URL is wrong: no retry

        attempt()
