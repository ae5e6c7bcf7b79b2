"""What only the Redis backend has: corruption in Redis, the lease, the server-aligned clock, the read-only view.
(The shared window contract, resizing included, runs against it in test_ratelimit.py, across hosts in
test_remote_batch.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from podspool.daemon.ratelimit import RateLimiter
from podspool.daemon.ratelimit.redis_backend import LeaseLost, RedisBackend, redis_clock
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:  # noqa: F811
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_damaged_window_waits_a_window_instead_of_bursting(client: redis.Redis) -> None:
    limiter = RateLimiter(RedisBackend(client), {"api": (3, 1.0)})
    limiter.acquire("api")
    client.rpop("podspool:rl:api:ring")  # the ring no longer matches its header
    assert limiter.try_acquire("api") > 0.9


def test_a_dead_holders_lease_delays_at_most_the_lease(client: redis.Redis) -> None:
    backend = RedisBackend(client, lease_ms=300)
    client.set("podspool:rl:api:lease", "a host that died mid-transaction", px=300)
    limiter = RateLimiter(backend, {"api": (10, 1.0)})
    t0 = time.monotonic()
    assert limiter.try_acquire("api") == 0.0
    assert 0.1 < time.monotonic() - t0 < 1.0


def test_a_holder_past_its_lease_records_nothing(client: redis.Redis) -> None:
    backend = RedisBackend(client, lease_ms=100)
    with pytest.raises(LeaseLost), backend.transaction("api", 2) as state:
        time.sleep(0.25)  # frozen (SIGSTOP, swap) past the lease; someone else may have gone meanwhile
        state.push(time.time())
    assert RateLimiter(backend, {"api": (2, 60.0)}).try_acquire("api") == 0.0  # the push never landed
    assert RateLimiter(backend, {"api": (2, 60.0)}).try_acquire("api") == 0.0


def test_every_host_counts_on_the_servers_clock(client: redis.Redis) -> None:
    skewed = redis_clock(client, local=lambda: time.time() + 120.0)  # a host two minutes fast
    server_s, server_us = client.time()
    assert skewed() == pytest.approx(server_s + server_us / 1e6, abs=0.05)


def test_status_reads_the_shared_window_from_redis_without_taking_a_grant(client: redis.Redis) -> None:
    from podspool.daemon.ratelimit.view import headroom

    backend = RedisBackend(client, prefix="view:")
    limiter = RateLimiter(backend, {"api": (5, 2.0)}, clock=redis_clock(client))
    for _ in range(3):
        limiter.acquire("api")
    assert backend.usage("api", 2.0) == (3, 0.0)
    assert backend.usage("api", 2.0) == (3, 0.0)  # reading takes nothing
    assert limiter.try_acquire("api") == 0.0  # and left the two grants it did not use
    limiter.pause("api", 30)
    view = headroom(Path("/nonexistent"), {"api": (5, 2.0), "other": (10, 60.0)}, usage=backend.usage)
    assert view["api"]["used"] == 4 and view["api"]["headroom"] == 1 and 25 < view["api"]["paused_s"] <= 30
    assert view["other"] == {"limit": 10, "window_s": 60.0, "used": 0, "headroom": 10, "paused_s": 0.0}


def test_a_window_of_twenty_thousand_grants_is_stored_and_counted(client: redis.Redis) -> None:
    # Lua's unpack refuses ~8000 values: the ring is written in chunks (a limit of 20000/hour raised
    # ResponseError on the first grant)
    backend = RedisBackend(client, prefix="big:")
    limiter = RateLimiter(backend, {"api": (20000, 3600.0)})
    for _ in range(3):
        assert limiter.try_acquire("api") == 0.0
    assert client.llen("big:rl:api:ring") == 20000
    assert backend.usage("api", 3600.0)[0] == 3
