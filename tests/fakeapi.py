"""A scriptable HTTP server on 127.0.0.1 for the providers' wire-format tests.

Each request takes the next queued `Reply` (or the default one): status, headers, body, a delay, a
malformed body, or a dropped connection. Every request is recorded with its arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server)
    drop: bool = False  # close the connection without answering
    content_type: str | None = None
    truncate: int | None = None  # announce the whole body, send only this many bytes, then close


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    arrived: float  # time.time() when the request line was read

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Reply]


def error(status: int, message: str, *, type_: str | None = None, code: str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style nested error body."""
    return Reply(status=status, body={"error": {"message": message, "type": type_, "code": code}},
                 headers=headers or {})


def http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


class FakeApi:
    def __init__(self, default: Reply | Handler | None = None) -> None:
        self.default: Reply | Handler = default or Reply(body={})
        self.requests: list[Request] = []
        self._queue: deque[Reply | Handler] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def queue(self, *replies: Reply | Handler) -> FakeApi:
        with self._lock:
            self._queue.extend(replies)
        return self

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            item = self._queue.popleft() if self._queue else self.default
        return item(request) if callable(item) else item

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

            def _serve(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                request = Request(self.command, url.path, parse_qs(url.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body, arrived)
                reply = fake._next(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                if isinstance(reply.body, dict | list):
                    data, ctype = json.dumps(reply.body).encode(), "application/json"
                elif isinstance(reply.body, str):
                    data, ctype = reply.body.encode(), "application/json"
                else:
                    data, ctype = reply.body or b"", "application/octet-stream"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type or ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if reply.truncate is not None:  # the connection dies mid-body
                        self.wfile.write(data[: reply.truncate])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.close_connection = True

            do_POST = _serve
            do_GET = _serve

        return _Handler


# ---- what a server saw, measured -------------------------------------------------------------


def max_in_window(times: list[float], window: float) -> int:
    """The most starts any half-open window [t, t + window) holds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def utilisation(times: list[float], limit: int, window: float) -> float:
    """How promptly freed slots are reused while work waits: window / mean(start[i+N] - start[i]).

    1.0 means each start came exactly one window after the start whose slot it took; the rate
    over any span of saturated traffic is this fraction of the configured limit.
    """
    times = sorted(times)
    gaps = [times[i] - times[i - limit] for i in range(limit, len(times))]
    return window / (sum(gaps) / len(gaps))
