"""The Dramatiq Redis broker and Redis clients, built from `[executor]` settings (never a global)."""

from __future__ import annotations

from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, TimeLimit
from podspool.daemon.config import ExecutorSettings
from podspool.daemon.credentials import BROKER_PASSWORD_ENV, read_credential, redact_urls
from podspool.daemon.executors.remote.names import Names

# Dramatiq's own retries cover our plumbing only (a Redis error while posting a result): stage
# failures come back as results, and episode-level retries are the supervisor's.
PLUMBING_RETRIES = 2


# What podspool asks of Redis (dramatiq's broker included): a Redis user (ACL) lacking one of these makes
# remote work stall, so `doctor` checks each (COMMAND INFO would not say what *this user* may run).
COMMANDS_USED = ("PING", "INFO", "TIME", "GET", "SET", "MGET", "DEL", "EXISTS", "INCR", "EXPIRE", "PEXPIRE",
                 "RPUSH", "LPUSH", "BLPOP", "LLEN", "LRANGE", "HSET", "HGETALL", "SCAN", "EVALSHA", "EVAL",
                 "SCRIPT", "MULTI", "EXEC", "ZADD", "ZRANGEBYSCORE", "ZREM", "SADD", "SREM", "SMEMBERS")


def client(settings: ExecutorSettings, *, socket_timeout: float | None = 10.0) -> Any:
    """A Redis client with timeouts, so an unreachable broker costs seconds, never a hung loop. The
    password, when broker_url carries none, is the credential PODSPOOL_BROKER_PASSWORD (never in a file
    that is not a secret's)."""
    return redis.Redis.from_url(settings.broker_url, socket_timeout=socket_timeout, socket_connect_timeout=2.0,
                                health_check_interval=30, password=read_credential(BROKER_PASSWORD_ENV))


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
        return redact_urls(str(exc) or type(exc).__name__)


def missing_commands(settings: ExecutorSettings) -> list[str]:
    """The commands of COMMANDS_USED this Redis user may not run (ACL DRYRUN needs ACL rights itself, so
    each command is tried: harmless forms, on a key of podspool's own namespace)."""
    c = client(settings, socket_timeout=3.0)
    probe = f"{Names(settings.namespace).namespace}:doctor:probe"
    tries: dict[str, Any] = {
        "PING": lambda: c.ping(), "INFO": lambda: c.info("server"), "TIME": lambda: c.time(),
        "SET": lambda: c.set(probe, 1, ex=60), "GET": lambda: c.get(probe), "MGET": lambda: c.mget([probe]),
        "EXISTS": lambda: c.exists(probe), "INCR": lambda: c.incr(probe), "EXPIRE": lambda: c.expire(probe, 60),
        "PEXPIRE": lambda: c.pexpire(probe, 60000), "RPUSH": lambda: c.rpush(probe + ":l", 1),
        "LPUSH": lambda: c.lpush(probe + ":l", 1), "LLEN": lambda: c.llen(probe + ":l"),
        "LRANGE": lambda: c.lrange(probe + ":l", 0, 0), "BLPOP": lambda: c.blpop([probe + ":l"], timeout=1),
        "HSET": lambda: c.hset(probe + ":h", "a", 1), "HGETALL": lambda: c.hgetall(probe + ":h"),
        "SCAN": lambda: c.scan(0, match=probe, count=10), "EVAL": lambda: c.eval("return 1", 0),
        "EVALSHA": lambda: c.evalsha(c.script_load("return 1"), 0), "SCRIPT": lambda: c.script_exists("0" * 40),
        "MULTI": lambda: c.pipeline(transaction=True).get(probe).execute(),
        "EXEC": lambda: c.pipeline(transaction=True).get(probe).execute(),
        "ZADD": lambda: c.zadd(probe + ":z", {"a": 1}), "ZRANGEBYSCORE": lambda: c.zrangebyscore(probe + ":z", 0, 2),
        "ZREM": lambda: c.zrem(probe + ":z", "a"), "SADD": lambda: c.sadd(probe + ":s", "a"),
        "SMEMBERS": lambda: c.smembers(probe + ":s"), "SREM": lambda: c.srem(probe + ":s", "a"),
        "DEL": lambda: c.delete(probe, probe + ":l", probe + ":h", probe + ":z", probe + ":s"),
    }
    missing = []
    try:
        for name in COMMANDS_USED:
            try:
                tries[name]()
            except redis.exceptions.NoPermissionError:
                missing.append(name)
            except redis.exceptions.ResponseError as exc:
                if "NOPERM" in str(exc) or "no permissions" in str(exc).lower():
                    missing.append(name)
    finally:
        c.close()
    return missing
