"""The Dramatiq Redis broker and Redis clients, built from `[executor]` settings (never a global)."""

from __future__ import annotations

from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, TimeLimit
from podspool.daemon.config import ExecutorSettings
from podspool.daemon.executors.remote.names import Names

# Dramatiq's own retries cover our plumbing only (a Redis error while posting a result): stage
# failures come back as results, and episode-level retries are the supervisor's.
PLUMBING_RETRIES = 2


def client(settings: ExecutorSettings, *, socket_timeout: float | None = 10.0) -> Any:
    """A Redis client with timeouts, so an unreachable broker costs seconds, never a hung loop."""
    return redis.Redis.from_url(settings.broker_url, socket_timeout=socket_timeout, socket_connect_timeout=2.0,
                                health_check_interval=30)


def make_broker(settings: ExecutorSettings, extra: list[Middleware] | None = None) -> RedisBroker:
    names = Names(settings.namespace)
    middleware: list[Middleware] = [TimeLimit(), Retries(max_retries=PLUMBING_RETRIES, min_backoff=500,
                                                         max_backoff=5000)]
    return RedisBroker(client=client(settings), namespace=names.broker_namespace,
                       heartbeat_timeout=int(settings.heartbeat_timeout_s * 1000),
                       maintenance_chance=settings.maintenance_chance,
                       middleware=middleware + (extra or []))


def answers(settings: ExecutorSettings) -> str | None:
    """None when the broker answers PING, else why not (for `doctor`)."""
    try:
        c = client(settings, socket_timeout=3.0)
        try:
            c.ping()
        finally:
            c.close()
        return None
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
