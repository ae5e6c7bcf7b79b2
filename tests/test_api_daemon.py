"""The real daemon against a fake Perplexity on 127.0.0.1: the shared limit holds across processes and a
restart, a poison episode fails alone, and the key never leaves the process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from fakeapi import FakeApi, Reply, Request, error, max_in_window, utilisation
from podspool_helpers import cli, episodes_in, start_daemon, wait_for, write_manifest

KEY = "pplx-test-SECRET-0123456789abcdef"
LIMIT, WINDOW = 4, 1.0

CONFIG = """
[concurrency]
research = 5
production = 2
audio = 2
[limits]
max_retries = 1
retry_backoff_s = 0.05
inbox_settle_s = 0.2
[rate_limits]
perplexity = "{limit}/second"
[research]
provider = "perplexity"
[production]
provider = "sim"
[audio]
provider = "sim"
[providers.perplexity]
api = "sonar"
base_url = "{url}"
max_attempts = 2
max_retry_time_s = 0.5
timeout_s = 5
[providers.sim]
latency_ms = 0
"""


def sonar(request: Request) -> Reply:
    if "POISON" in request.body.decode("utf-8", "replace"):
        return error(503, "upstream overloaded", type_="server_error")
    return Reply(delay=0.3, body={
        "model": "sonar",
        "choices": [{"message": {"role": "assistant", "content": "Tides follow the Moon.[1] Two bulges form.[2]"}}],
        "citations": ["https://a.example/tides", "https://b.example/bulges"],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50,
                  "cost": {"total_cost": 0.0061}},
    })


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_limit_holds_across_processes_and_a_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    env = {"PERPLEXITY_API_KEY": KEY}
    topics = [f"Ocean tides {i}" for i in range(1, 25)]
    topics[6] = "POISON topic"
    with FakeApi(sonar) as fake:
        (spool / "podspool.toml").write_text(CONFIG.format(limit=LIMIT, url=fake.base_url))
        write_manifest(spool / "inbox" / "api.json", {"batch_id": "api", "topics": topics})
        first = start_daemon(spool, env=env)
        try:
            wait_for(lambda: len(fake.requests) >= 10, 60, first, "10 requests before the kill")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            first_err = first.stderr.read() if first.stderr else ""
        before_restart = len(fake.requests)
        rerun = cli("run", "--once", "--spool", str(spool), env=env, timeout=150)
        assert rerun.returncode == 0, rerun.stderr[-3000:]

    arrivals = [r.arrived for r in fake.requests]
    # the contract measures windows where requests start, in the daemon (X-Request-Start), with no
    # allowance; what the server saw is reported too (it adds loopback and scheduling jitter)
    starts = [int(r.headers["x-request-start"].removeprefix("t=")) / 1e6 for r in fake.requests]
    assert max_in_window(starts, WINDOW) <= LIMIT, "the daemon started more requests than the limit"
    # how promptly the second run reused freed slots while research work waited
    used = utilisation(sorted(starts)[before_restart:], LIMIT, WINDOW)
    print(f"\nrequests {len(arrivals)} (restart after {before_restart}); most in any {WINDOW}s window: "
          f"{max_in_window(starts, WINDOW)} started by the daemon, {max_in_window(arrivals, WINDOW)} "
          f"seen by the server, of {LIMIT}; second-run utilisation {used:.3f}")
    assert used >= 0.9

    assert episodes_in(spool, "failed") == ["ep_007_api"]
    assert len(episodes_in(spool, "done")) == 23
    m = json.loads((spool / "failed" / "ep_007_api" / "manifest.json").read_text())
    assert m["attempts"] == 2 and all("503" in e["error"] or "overloaded" in e["error"] for e in m["errors"])
    done = json.loads((spool / "done" / "ep_001_api" / "manifest.json").read_text())
    assert done["costs"]["research"] == 0.0061  # the server's reported cost, not a guess
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in fake.requests)

    # metrics.prom counts every attempt the second daemon made, as the server saw them
    second = fake.requests[before_restart:]
    prom = (spool / "metrics.prom").read_text()
    errors = sum(1 for r in second if b"POISON" in r.body)
    assert f'podspool_api_calls_total{{api="perplexity",outcome="requests"}} {len(second)}' in prom
    assert f'podspool_api_calls_total{{api="perplexity",outcome="errors"}} {errors}' in prom or errors == 0

    # the key is in no file of the spool and no output, whatever failed
    for path in spool.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"key leaked into {path}"
    for text in (first_err, rerun.stdout, rerun.stderr):
        assert KEY not in text
    assert os.environ.get("PERPLEXITY_API_KEY") != KEY
