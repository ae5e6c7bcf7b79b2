"""The shared rate limiter: the window logic with injected time, then real processes on real files."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from fakeapi import FakeApi, max_in_window, utilisation
from podspool.daemon.ratelimit import FileBackend, MemoryBackend, RateLimiter, SharedLimiter
from podspool.daemon.ratelimit.filestore import path_for
from podspool.daemon.ratelimit.redis_backend import RedisBackend
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)


class FakeClock:
    """Wall time that only moves when someone sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


BackendFactory = Callable[[Path], object]
BACKENDS = {"memory": lambda _d: MemoryBackend(), "file": lambda d: FileBackend(d)}


def _redis_backend(request: pytest.FixtureRequest) -> RedisBackend:
    import redis

    return RedisBackend(redis.Redis.from_url(request.getfixturevalue("redis_url")))


@pytest.fixture(params=[*sorted(BACKENDS), "redis"])
def make_limiter(request: pytest.FixtureRequest, tmp_path: Path,
                 redis_server: object) -> Callable[..., tuple[RateLimiter, FakeClock]]:  # noqa: F811
    """The same contract for every backend (dramatiq parametrises its rate-limit backends so).

    (`redis_server` starts before the child-leak check takes its snapshot, so it is not counted.)"""
    # one backend per test: a second limiter made in the same test is a reload over the same windows
    backend = _redis_backend(request) if request.param == "redis" else BACKENDS[request.param](tmp_path / "rl")

    def make(rates: dict[str, tuple[int, float]], clock: FakeClock | None = None) -> tuple[RateLimiter, FakeClock]:
        clock = clock or FakeClock()
        return RateLimiter(backend, rates, clock=clock, sleep=clock.sleep), clock  # type: ignore[arg-type]

    return make


def test_n_start_at_once_then_one_per_freed_slot(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, clock = make_limiter({"api": (5, 1.0)})
    t0 = clock.now
    starts = []
    for _ in range(12):
        limiter.acquire("api")
        starts.append(clock.now - t0)
    assert starts[:5] == [0.0] * 5
    # the sixth waits for the first to leave the window (plus the 45 ms safety margin)
    assert starts[5] == pytest.approx(1.045)
    assert starts[10] == pytest.approx(2.09)
    assert max_in_window(starts, 1.0) == 5


def test_sliding_not_fixed_window(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    """Starts late in one window then early in the next: a fixed window would allow 2N."""
    limiter, clock = make_limiter({"api": (3, 10.0)})
    clock.now = 1_000_009.0  # near the end of a "fixed" 10 s bucket
    for _ in range(3):
        limiter.acquire("api")
    clock.now = 1_000_010.5  # a new bucket has begun, the sliding window has not moved on
    assert limiter.try_acquire("api") == pytest.approx(8.6)  # 9 + 10 s + 100 ms margin - 10.5


def test_random_traffic_never_exceeds_and_never_waits_needlessly(
        make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, clock = make_limiter({"api": (4, 2.0)})
    rng = random.Random(7)
    starts: list[float] = []
    for _ in range(300):
        clock.now += rng.choice([0.0, 0.0, 0.05, 0.3, 1.1])
        limiter.acquire("api")
        starts.append(clock.now)
    assert max_in_window(starts, 2.0) == 4
    # a request that waited started exactly when the 4th most recent start left the window
    for i in range(4, len(starts)):
        assert starts[i] >= starts[i - 4] + 2.0
    assert all(s <= 2.06 + 1e-9 for s in clock.slept)


def test_pause_blocks_and_longer_pause_wins(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, clock = make_limiter({"api": (100, 1.0)})
    t0 = clock.now
    limiter.pause("api", 30.0)
    limiter.pause("api", 2.0)  # a shorter, later Retry-After does not shorten the first
    limiter.acquire("api")
    assert clock.now - t0 == pytest.approx(30.0)
    limiter.acquire("other")  # other APIs are not paused


def test_unknown_api_is_unlimited_but_can_be_paused(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, clock = make_limiter({"api": (1, 60.0)})
    for _ in range(1000):
        limiter.acquire("nobody-configured-me")
    assert clock.slept == []
    limiter.pause("nobody-configured-me", 3.0)
    assert limiter.try_acquire("nobody-configured-me") == pytest.approx(3.0)


def test_acquire_within_gives_up(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, _ = make_limiter({"api": (1, 60.0)})
    assert limiter.acquire_within("api", 0.0)
    assert not limiter.acquire_within("api", 0.0)


def test_clock_stepping_back_delays_at_most_one_window(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    limiter, clock = make_limiter({"api": (2, 10.0)})
    limiter.acquire("api")
    limiter.acquire("api")
    clock.now -= 3600.0
    assert limiter.try_acquire("api") == pytest.approx(10.1)


def test_lowering_n_keeps_the_newest_starts(make_limiter: Callable[..., tuple[RateLimiter, FakeClock]]) -> None:
    before, clock = make_limiter({"api": (5, 60.0)})
    for _ in range(5):
        before.acquire("api")
    after, _ = make_limiter({"api": (2, 60.0)}, clock)  # a reload: N 5 -> 2
    assert after.try_acquire("api") == pytest.approx(60.1)
    raising, _ = make_limiter({"api": (8, 60.0)}, clock)  # N 2 -> 8
    assert [raising.try_acquire("api") for _ in range(7)][:6] == [0.0] * 6


def test_corrupt_state_file_waits_a_window_instead_of_bursting(tmp_path: Path) -> None:
    path_for(tmp_path, "api").write_bytes(b"garbage that is not a window file")
    limiter = SharedLimiter(tmp_path, {"api": (3, 1.0)})
    assert limiter.try_acquire("api") > 0.9


def test_shared_limiter_pickles_to_its_arguments(tmp_path: Path) -> None:
    limiter = SharedLimiter(tmp_path, {"api": (3, 1.0)})
    limiter.acquire("api")  # opens a descriptor, which must not travel
    clone = pickle.loads(pickle.dumps(limiter))
    assert isinstance(clone, SharedLimiter)
    assert clone.state_dir == tmp_path and clone.rates == {"api": (3, 1.0)}
    clone.acquire("api")
    clone.acquire("api")
    assert limiter.try_acquire("api") > 0.9  # the clone spent the same budget


# ---- real processes ---------------------------------------------------------------------------

RATE = (5, 1.0)


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker_first() -> None:
    """spawn starts multiprocessing's resource tracker once per session; start it before the
    leak check looks, so it is not counted as a child this test leaked."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _hammer(limiter: SharedLimiter, url: str, until: float, out: mp.Queue) -> None:
    granted = []
    with requests.Session() as session:
        while time.time() < until:
            limiter.acquire("api")
            granted.append(time.time())
            session.post(url, json={"granted": granted[-1]}, timeout=5)
    out.put(granted)


def _pause_then_exit(limiter: SharedLimiter, seconds: float) -> None:
    limiter.pause("api", seconds)


def _fill(limiter: SharedLimiter, n: int) -> None:
    for _ in range(n):
        limiter.acquire("api")


def _run(ctx: mp.context.BaseContext, target: Callable[..., None], *args: object) -> None:
    p = ctx.Process(target=target, args=args)  # type: ignore[attr-defined]
    p.start()
    p.join(20)
    assert p.exitcode == 0


def test_four_processes_share_one_budget_at_full_speed(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # as the daemon starts its workers
    limiter = SharedLimiter(tmp_path / "state" / "ratelimit", {"api": RATE})
    out: mp.Queue = ctx.Queue()
    with FakeApi() as fake:
        until = time.time() + 4.0  # ~1 s of the budget goes on spawning interpreters
        procs = [ctx.Process(target=_hammer, args=(limiter, fake.base_url + "/x", until, out)) for _ in range(4)]
        for p in procs:
            p.start()
        granted = sorted(t for _ in procs for t in out.get(timeout=30))
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        arrived = sorted(r.arrived for r in fake.requests)
    limit, window = RATE
    assert len(granted) >= 12
    assert max_in_window(granted, window) <= limit
    lags = sorted(r.arrived - r.json()["granted"] for r in fake.requests)
    # Every grant reached the server. As the server saw them, the windows can hold more: a process
    # descheduled between its grant and its send (CI, two cores, five interpreters) sends late, into the
    # next grants (seen: 8 in a window, once in many runs). The contract measures windows where requests
    # start, allowing nothing for that jitter, and so does this test; the server's figure is printed.
    assert len(arrived) == len(granted)
    assert utilisation(granted, limit, window) >= 0.95
    print(f"\nstarts={len(granted)} max/window granted={max_in_window(granted, window)} "
          f"server={max_in_window(arrived, window)} utilisation={utilisation(granted, limit, window):.3f} "
          f"server-side={utilisation(arrived, limit, window):.3f} max lag={lags[-1] * 1000:.1f} ms")


def test_restart_cannot_burst(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    _run(ctx, _fill, SharedLimiter(tmp_path, {"api": (5, 2.0)}), 5)  # the old daemon spent the window
    after_restart = SharedLimiter(tmp_path, {"api": (5, 2.0)})
    wait = after_restart.try_acquire("api")
    assert 0.5 < wait <= 2.06


def test_pause_in_one_process_holds_off_another(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    _run(ctx, _pause_then_exit, SharedLimiter(tmp_path, {"api": (100, 1.0)}), 1.5)
    limiter = SharedLimiter(tmp_path, {"api": (100, 1.0)})
    t0 = time.monotonic()
    limiter.acquire("api")
    assert 0.3 < time.monotonic() - t0 <= 1.6
