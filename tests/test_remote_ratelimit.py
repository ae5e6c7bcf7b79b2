"""What only the Redis backend has: resizing and corruption in Redis, the lease, the server-aligned clock.
(The shared window contract runs against it in test_ratelimit.py, across hosts in test_remote_batch.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from podspool.daemon.ratelimit import RateLimiter
from podspool.daemon.ratelimit.redis_backend import LeaseLost, RedisBackend, redis_clock
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)
from test_ratelimit import FakeClock


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:  # noqa: F811
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_lowering_n_keeps_the_newest_starts(client: redis.Redis) -> None:
    clock = FakeClock()
    backend = RedisBackend(client)
    before = RateLimiter(backend, {"api": (5, 60.0)}, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        before.acquire("api")
    after = RateLimiter(backend, {"api": (2, 60.0)}, clock=clock, sleep=clock.sleep)  # a reload: N 5 -> 2
    assert after.try_acquire("api") == pytest.approx(60.1)
    raising = RateLimiter(backend, {"api": (8, 60.0)}, clock=clock, sleep=clock.sleep)  # N 2 -> 8
    assert [raising.try_acquire("api") for _ in range(7)][:6] == [0.0] * 6


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
