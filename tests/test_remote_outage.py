"""A broker restart in the middle of what a stage asks of Redis (a rate-limit decision, the quality gates'
lock) is a slow call for the stage, never a failed attempt, and a result whose artifacts it lost sends its
task again: against a real redis-server killed and started again on the same port (no persistence, so it
forgets leases, locks and chunks)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import redis
from podspool.daemon.executors.protocol import StageTask
from podspool.daemon.executors.remote import wire
from podspool.daemon.executors.remote.actors import GateLock
from podspool.daemon.ratelimit.redis_backend import RedisBackend, RedisLimiter
from podspool.stages.base import EpisodeInput
from redis_fixture import RedisServer, redis_server, redis_url  # noqa: F401  (fixtures)
from remote_harness import TEST_BROKER_KEY, make_executor, write_config

DOWN_S = 0.8  # longer than redis-py's own few quick retries


def _restart_in_background(server: RedisServer) -> threading.Thread:
    server.stop()
    back = threading.Thread(target=lambda: (time.sleep(DOWN_S), server.start()))
    back.start()
    return back


def test_a_rate_decision_cut_by_a_restart_is_made_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1.0)
    restarts: list[threading.Thread] = []

    def clock() -> float:  # read between LOAD and COMMIT: the broker goes away right there
        if not restarts:
            restarts.append(_restart_in_background(server))
        return time.time()

    try:
        limiter = RedisLimiter(RedisBackend(client), {"api": (2, 60.0)}, clock=clock)
        t0 = time.monotonic()
        assert limiter.try_acquire("api") == 0.0  # granted once Redis is back, not ConnectionError/LeaseLost
        assert time.monotonic() - t0 >= DOWN_S * 0.9
        restarts[0].join()
        assert limiter.try_acquire("api") == 0.0
        assert limiter.try_acquire("api") > 59  # the restarted window counts again: N=2 per 60 s holds
    finally:
        for t in restarts:
            t.join()
        client.close()
        server.stop()


def test_the_gate_lock_waits_out_a_restart_and_a_forgotten_lock_is_no_failure(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1.0)
    try:
        gate = GateLock(client, "podspool:gates", lease_s=120)
        with gate:
            server.restart()  # the restarted broker forgot the lock: releasing it is not the stage's error
        back = _restart_in_background(server)
        t0 = time.monotonic()
        with gate:  # taken once the broker is back
            assert time.monotonic() - t0 >= DOWN_S * 0.9
            assert client.get("podspool:gates") is not None
        back.join()
        assert client.get("podspool:gates") is None  # released: the next stage does not wait out the lease
    finally:
        client.close()
        server.stop()


def test_a_result_whose_artifacts_the_broker_lost_sends_its_task_again_once(tmp_path: Path,
                                                                            redis_url: str) -> None:  # noqa: F811
    config = write_config(tmp_path / "podspool.toml", redis_url)
    folder = tmp_path / "spool" / "eps" / "ep_001_l"
    folder.mkdir(parents=True)
    episode = EpisodeInput(episode_id="ep_001_l", batch_id="l", number=1, topic="Tides")
    ex = make_executor(config, tmp_path / "spool" / "state")  # no workers: we play the worker's part
    client = redis.Redis.from_url(redis_url)
    try:
        queue = f"{ex.names.broker_namespace}:{ex.names.queue('production')}"
        assert ex.submit(StageTask(7, "production", episode, str(folder)))
        token = f"{ex.life}-7"  # the executor's token for task 7 (as test_remote_failures builds it)
        assert client.llen(queue) == 1
        # a result naming a chunk the restarted broker no longer has (no persistence)
        [nonce] = ex._nonces[token]  # the send's nonce, as the worker reads it from the signed message
        doc = {"token": token, "nonce": nonce, "episode_id": episode.episode_id, "stage": "production",
               "worker": "h/1", "issued": time.time(), "result": {"ok": True}, "logs": [],
               "files": [["audio.wav", {"size": 3, "sha256": "0" * 64, "keys": [ex.names.blob(token, "a", 0)]}]]}
        envelope = json.dumps(wire.Signer(TEST_BROKER_KEY.encode()).seal(doc))
        client.rpush(ex.results_key, envelope)
        deadline = time.monotonic() + 10
        outcomes = []
        while client.llen(queue) < 2 and time.monotonic() < deadline:
            outcomes += ex.poll()
            time.sleep(0.05)
        assert client.llen(queue) == 2 and not outcomes  # sent again under its token, not a failed attempt
        client.rpush(ex.results_key, envelope)  # lost a second time: now it is reported
        while not outcomes and time.monotonic() < deadline:
            outcomes += ex.poll()
            time.sleep(0.05)
        [outcome] = outcomes
        assert not outcome.result.ok and "lost its artifacts" in (outcome.result.error or "")
        assert client.llen(queue) == 2
    finally:
        client.close()
        ex.stop()
