"""A Redis backend: one window per API in Redis, shared by every process on every host.

The strategy stays `window.py`'s sliding-window log; this is only its storage, so the promise is the
same (never more than N grants in any window), now across hosts. A transaction is two Lua scripts,
each atomic on the server: LOAD takes a short lease on the API (SET NX PX) and returns the header and
the one slot the strategy reads; COMMIT writes the slot and header back and drops the lease, but only
while the lease is still ours. Two round trips per decision, whatever the number of hosts.

Why a lease rather than the whole check-and-add in Lua: the decision then lives in one place
(`window.try_acquire`), and this backend passes the very contract tests the file backend passes.
A holder that dies mid-transaction blocks its API for at most `LEASE_MS`. A holder frozen past its
lease (SIGSTOP, a swap storm) finds its COMMIT refused and raises `LeaseLost`: its request does not
start, so the window is never overfilled.

Clocks: the start times are the hosts' wall clocks. `redis_clock` aligns a host's clock to the Redis
server's (`TIME`, refreshed every minute), so skew between hosts does not widen or narrow windows;
what is left is half a round trip of uncertainty, well inside the strategy's margin on a LAN.
Durability: whatever the Redis server keeps (RDB/AOF); a restarted Redis without persistence forgets
the window, so a fresh burst of N may follow a broker restart. While Redis is away, requests wait for
it (up to `OUTAGE_WAIT_S`) rather than start unlimited: `RedisLimiter` makes the whole decision again
when Redis went away (or restarted and forgot the lease) anywhere inside it, so a broker restart is a
slow call for the stage, never a failed attempt.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from podspool.daemon.ratelimit import RateLimiter
from podspool.daemon.ratelimit.backend import PauseMark, resized

LEASE_MS = 2000
OUTAGE_WAIT_S = 120.0  # how long a request waits for an absent Redis before its call fails
OUTAGE_POLL_S = 0.25
# What an absent or restarting Redis looks like to a client (redis-py's own few retries already spent).
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError)
T = TypeVar("T")
CLOCK_REFRESH_S = 60.0

_LOAD = """
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local h = redis.call('HMGET', KEYS[1], 'cap', 'head', 'paused')
local cap = tonumber(h[1] or '-1')
local want = tonumber(ARGV[3])
if cap == want and redis.call('LLEN', KEYS[2]) == cap then
  local slot = false
  if cap > 0 then slot = redis.call('LINDEX', KEYS[2], tonumber(h[2])) end
  return {h[1], h[2], h[3] or '0', {slot}}
end
return {h[1] or '', h[2] or '0', h[3] or '0', redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# ARGV: token, head, paused, mode ('slot' idx value | 'ring' v1 v2 ... | 'none'), capacity
_COMMIT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local mode = ARGV[4]
if mode == 'slot' then
  redis.call('LSET', KEYS[2], tonumber(ARGV[6]), ARGV[7])
elseif mode == 'ring' then
  redis.call('DEL', KEYS[2])
  -- in chunks: Lua's unpack refuses ~8000 values, and a limit may be 10000/hour
  for i = 6, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
end
if mode ~= 'none' then
  redis.call('HSET', KEYS[1], 'cap', ARGV[5], 'head', ARGV[2], 'paused', ARGV[3])
end
redis.call('DEL', KEYS[3])
return 1
"""


class LeaseLost(RuntimeError):
    """This process held an API's window longer than its lease; nothing it decided was recorded."""


def outlast_outage(call: Callable[[], T], *, also: tuple[type[BaseException], ...] = (),
                   wait_s: float = OUTAGE_WAIT_S, pause: Callable[[float], Any] = time.sleep) -> T:
    """`call()`, tried again every OUTAGE_POLL_S while Redis is away (a restart, a blink) or it raises one
    of `also`, for up to `wait_s`; then the last error. `pause` returning True means give up now."""
    away_since: float | None = None
    catch: tuple[type[BaseException], ...] = (*REDIS_AWAY, *also)
    while True:
        try:
            return call()
        except catch:
            now = time.monotonic()
            away_since = now if away_since is None else away_since
            if now - away_since > wait_s or pause(OUTAGE_POLL_S) is True:
                raise


class _RedisState(PauseMark):
    """One API's window, valid between LOAD and COMMIT of one transaction."""

    def __init__(self, capacity: int, head: int, paused_until: float, ring: list[float] | None,
                 slot: float | None) -> None:
        self.capacity = capacity
        self.head = head
        self._paused_until = paused_until
        self._ring = ring  # the whole ring, only when it had to be (re)built
        self._slot = slot  # the slot at `head`, in the common case
        self._pushed: float | None = None
        self._dirty = ring is not None

    def oldest(self) -> float:
        if not self.capacity:
            return 0.0
        if self._ring is not None:
            return self._ring[self.head]
        return self._slot or 0.0

    def push(self, started: float) -> None:
        if not self.capacity:
            return
        if self._ring is not None:
            self._ring[self.head] = started
        self._pushed = started
        self._dirty = True

    def commit_args(self) -> list[Any]:
        """COMMIT's ARGV after the token."""
        head = self.head
        if self._pushed is not None:
            head = (self.head + 1) % self.capacity
        tail: list[Any]
        if self._ring is not None:
            tail = ["ring", self.capacity, *(repr(v) for v in self._ring)]
        elif self._pushed is not None:
            tail = ["slot", self.capacity, self.head, repr(self._pushed)]
        elif self._dirty:
            tail = ["slot-less", self.capacity]
        else:
            tail = ["none", self.capacity]
        return [head, repr(self._paused_until), *tail]


class RedisBackend:
    """Windows under `<prefix>rl:<api>` in the Redis that `client` (a `redis.Redis`) talks to."""

    def __init__(self, client: Any, prefix: str = "podspool:", lease_ms: int = LEASE_MS) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_ms = lease_ms
        self._load = client.register_script(_LOAD)
        self._commit = client.register_script(_COMMIT)
        # One transaction per API at a time inside this process, so threads do not spin on the lease.
        self._local = threading.Lock()

    def _keys(self, api: str) -> list[str]:
        base = f"{self.prefix}rl:{api}"
        return [base, base + ":ring", base + ":lease"]

    def _take(self, keys: list[str], token: str, capacity: int) -> list[Any]:
        delay = 0.0005
        while True:
            # The broker restarts or blinks: no grant can be made without it, so wait for it (a stage
            # waiting here is a slow call, not a failed attempt).
            got = outlast_outage(lambda: self._load(keys=keys, args=[token, self.lease_ms, capacity]))
            if got:
                return list(got)
            # someone else (another process, another host) is inside its two round trips
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.01)

    def usage(self, api: str, window_s: float) -> tuple[int, float]:
        """(starts in the last `window_s` seconds by the server's clock, paused_until), read without the
        lease in one round trip: a view for `status`, which must never disturb the limiter."""
        base, ring, _lease = self._keys(api)
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(base, "paused")
        pipe.lrange(ring, 0, -1)
        pipe.time()
        paused_s, values, (secs, micros) = pipe.execute()
        now = int(secs) + int(micros) / 1e6
        used = sum(1 for v in values if now - window_s < _num(v) <= now)
        return used, _num(paused_s)

    @contextmanager
    def transaction(self, api: str, capacity: int) -> Iterator[_RedisState]:
        keys = self._keys(api)
        token = uuid.uuid4().hex
        with self._local:
            cap_s, head_s, paused_s, values = self._take(keys, token, capacity)
            try:
                state = _state(capacity, cap_s, head_s, paused_s, values)
                yield state
            except BaseException:
                try:
                    self._commit(keys=keys, args=[token, 0, 0, "none", capacity])  # just drop the lease
                except REDIS_AWAY:
                    pass  # it lapses by itself within lease_ms; the error that got us here is the one to raise
                raise
            if not self._commit(keys=keys, args=[token, *state.commit_args()]):
                raise LeaseLost(f"rate window of {api} held past its {self.lease_ms} ms lease")


class RedisLimiter(RateLimiter):
    """`RateLimiter` over a `RedisBackend` that waits out a broker restart: a decision interrupted by an
    absent Redis (COMMIT, the clock) or by a lease the restarted Redis forgot was not recorded and its
    request has not started, so it is simply made again, for up to OUTAGE_WAIT_S."""

    def try_acquire(self, api: str) -> float:
        return outlast_outage(lambda: RateLimiter.try_acquire(self, api), also=(LeaseLost,))

    def pause(self, api: str, seconds: float) -> None:
        outlast_outage(lambda: RateLimiter.pause(self, api, seconds), also=(LeaseLost,))


def _num(raw: Any, default: float = 0.0) -> float:
    if raw in (None, b"", ""):
        return default
    return float(raw.decode() if isinstance(raw, bytes) else raw)


def _state(capacity: int, cap_s: Any, head_s: Any, paused_s: Any, values: list[Any]) -> _RedisState:
    paused = _num(paused_s)
    cap = int(_num(cap_s, -1))
    if cap == capacity and len(values) == 1:  # the common case: header and one slot
        return _RedisState(capacity, int(_num(head_s)), paused, None, _num(values[0]) if capacity else None)
    if cap < 0 and not values:  # a new API: nothing has started yet
        return _RedisState(capacity, 0, paused, [0.0] * capacity, None)
    ring = [_num(v) for v in values]
    if cap < 0 or len(ring) != cap:
        # We cannot know what started recently, so act as if a full window just did (as the file backend).
        return _RedisState(capacity, 0, 0.0, [time.time()] * capacity, None)
    head = int(_num(head_s))
    ordered = ring[head:] + ring[:head]  # oldest first
    return _RedisState(capacity, 0, paused, resized(ordered, capacity), None)


def redis_clock(client: Any, refresh_s: float = CLOCK_REFRESH_S,
                local: Callable[[], float] = time.time) -> Callable[[], float]:
    """This host's wall clock shifted onto the Redis server's, so every host counts windows alike."""
    offset = 0.0
    measured = float("-inf")
    lock = threading.Lock()

    def now() -> float:
        nonlocal offset, measured
        t = local()
        if t - measured > refresh_s or t < measured:
            with lock:
                before = local()
                secs, micros = client.time()
                after = local()
                offset = secs + micros / 1e6 - (before + after) / 2
                measured = after
            t = local()
        return t + offset

    return now
