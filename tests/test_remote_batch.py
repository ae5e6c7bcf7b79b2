"""Remote stage work under a pretend supervisor driving the DramatiqExecutor (a real redis-server, real
`podspool worker` groups started as separate hosts would be): one rate limit across both groups as
counted by the fake server. The whole daemon on two groups, kill -9 included, is in test_remote_daemon.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeapi import FakeApi, Reply, max_in_window
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)
from remote_harness import (
    Drive,
    drive,
    make_executor,
    wait_for_workers,
    worker_groups,
    write_config,
)


def _exactly_once(seen: Drive, n: int) -> None:
    assert not seen.failed, seen.failed
    assert len(seen.done) == len(set(seen.done)) == n
    assert all(count == 1 for count in seen.applied.values()), [k for k, c in seen.applied.items() if c != 1]
    assert len(seen.applied) == 3 * n


def _tavily(request: object) -> Reply:
    return Reply(body={"answer": "Tides follow the moon.", "results": [
        {"url": "https://example.org/tides", "title": "Tides", "content": "Tides follow the moon.", "score": 0.9}]})


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_four_per_second_held_across_both_groups_at_the_server(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with FakeApi(_tavily) as fake:
        extra = f'[rate_limits]\nwebsearch = "4/second"\n[providers.websearch]\nbase_url = "{fake.base_url}"\n'
        config = write_config(tmp_path / "podspool.toml", redis_url, research="websearch", latency_ms=5,
                              extra=extra)
        env = {"TAVILY_API_KEY": "tvly-test-key"}  # each host has its own keys; none travels in a message
        n = 16
        with worker_groups(config, tmp_path / "host-a", tmp_path / "host-b", env=env):
            ex = make_executor(config, tmp_path / "spool" / "state")
            try:
                wait_for_workers(ex, 2)
                seen = drive(ex, tmp_path / "spool" / "episodes", n, timeout=90)
            finally:
                ex.stop()
        arrived = sorted(r.arrived for r in fake.requests if r.path == "/search")
    _exactly_once(seen, n)
    assert len(arrived) == n
    assert max_in_window(arrived, 1.0) <= 4
    span = arrived[-1] - arrived[0]
    # 16 starts at 4 per (1 s + margin) need at least 3 windows; far slower would mean a stall
    assert 3.0 <= span < 6.0, span
    assert len({w for w in seen.workers_used}) >= 2
    print(f"\nserver saw {len(arrived)} searches over {span:.2f} s, max {max_in_window(arrived, 1.0)} in any 1 s")
