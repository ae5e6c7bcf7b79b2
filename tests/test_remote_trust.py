"""Remote work trusts nothing it reads from Redis: a real redis-server, a real `podspool worker`, and an
attacker who can write to the broker (forged and replayed messages, forged and malformed results)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import psutil
import pytest
import redis
from fakeapi import FakeApi, Reply
from podspool.daemon.config import load_config
from podspool.daemon.executors.protocol import StageTask
from podspool.daemon.executors.remote import broker as remote_broker
from podspool.daemon.executors.remote import wire
from podspool.daemon.executors.remote.executor import DramatiqExecutor
from podspool.daemon.executors.remote.names import Names
from podspool.stages.base import EpisodeInput
from podspool_helpers import cli
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures)
from remote_harness import (
    TEST_BROKER_KEY,
    WorkerGroup,
    make_executor,
    wait_for_workers,
    wait_outcomes,
    worker_groups,
    write_config,
)

HOST_KEY = "tvly-the-worker-hosts-own-key"
SEARCH = {"answer": "a", "results": [{"url": "https://example.org/a", "title": "A",
                                      "content": "Tides follow the moon twice a day.", "score": 0.5}]}


def _enqueue(url: str, stage: str, envelope: Any) -> None:
    """Put a message on a stage's queue as anyone with access to Redis could."""
    cfg = load_config(None).executor.model_copy(update={"broker_url": url, "kind": "dramatiq"})
    broker = remote_broker.make_broker(cfg)
    names = Names()
    try:
        broker.enqueue(dramatiq.Message(queue_name=names.queue(stage), actor_name=names.actor(stage),  # type: ignore[arg-type]
                                        args=(envelope,), kwargs={}, options={}))
    finally:
        broker.close()


def _task_body(ex: DramatiqExecutor, episode_id: str, **over: Any) -> dict[str, Any]:
    body = {"token": f"{ex.life}-99", "nonce": uuid.uuid4().hex, "results": ex.results_key, "stage": "research",
            "issued": time.time(), "expires": time.time() + 60,
            "episode": {"episode_id": episode_id, "batch_id": "x", "number": 1, "topic": "Tides", "sources": []},
            "settings": {"research": {"provider": "websearch"},
                         "providers": {"websearch": {"base_url": over.pop("evil_url", "http://127.0.0.1:9")}}},
            "rates": {}, "time_limit_s": 20, "sources": {}, "files": {}}
    body.update(over)
    return body


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_forged_and_replayed_messages_run_nothing_and_the_host_decides_its_settings(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.md").write_text("# Secret\n\nPRIVATE-LEDGER tides follow the moon.\n")
    outside = tmp_path / "written-by-an-attacker"
    with FakeApi(Reply(body=SEARCH)) as honest, FakeApi(Reply(body=SEARCH)) as evil:
        worker_cfg = write_config(tmp_path / "worker.toml", redis_url, research="websearch",
                                  extra=f'[providers.websearch]\nbase_url = "{honest.base_url}"\n')
        # the supervisor's config (what the message carries) names another server and a private folder
        sup_cfg = write_config(tmp_path / "sup.toml", redis_url, research="websearch",
                               extra=f'[providers.websearch]\nbase_url = "{evil.base_url}"\n')
        sup_cfg.write_text(sup_cfg.read_text().replace('provider = "websearch"\n',
                                                       f'provider = "websearch"\nsources_dir = "{private}"\n', 1))
        with worker_groups(worker_cfg, tmp_path / "host-a", stages=("research",),
                           env={"TAVILY_API_KEY": HOST_KEY}) as (host,):
            ex = make_executor(sup_cfg, tmp_path / "spool" / "state")
            try:
                wait_for_workers(ex, 1)
                forger = wire.Signer(b"not-the-broker-key-at-all-0000")
                evil_body = _task_body(ex, "ep_001_x", evil_url=evil.base_url)
                _enqueue(redis_url, "research", forger.seal(evil_body))  # signed with another key
                _enqueue(redis_url, "research", {**evil_body, "v": 1})  # the old, unsigned format
                # signed with the real key, but an episode id that is a path out of the task folder
                real = wire.Signer(TEST_BROKER_KEY.encode())
                _enqueue(redis_url, "research", real.seal(_task_body(ex, str(outside / "ep"))))
                # a genuine task, through the supervisor's own executor
                folder = tmp_path / "spool" / "eps" / "ep_001_t"
                folder.mkdir(parents=True)
                ep = EpisodeInput(episode_id="ep_001_t", batch_id="t", number=1, topic="Tides")
                assert ex.submit(StageTask(1, "research", ep, str(folder)))
                [outcome] = wait_outcomes(ex, 1, timeout=20)
                time.sleep(0.5)  # the refusals are logged by now
            finally:
                ex.stop()
        log = host.log.read_text()
    assert outcome.result.ok, outcome.result.error
    assert not evil.requests, "a message decided where the worker host's key went"
    assert [r.headers.get("authorization") for r in honest.requests if r.path == "/search"] == [f"Bearer {HOST_KEY}"]
    research = (folder / "research.json").read_text()
    assert "PRIVATE-LEDGER" not in research, "a message's sources_dir was read on the worker host"
    assert not outside.exists() and not list(tmp_path.glob("**/written-by-an-attacker*"))
    assert log.count("refused a task message") == 3, log
    assert "not signed with this host's broker key" in log
    assert "message format v1, this podspool speaks v2" in log
    assert "episode.episode_id" in log


@pytest.mark.soak  # a worker group of its own: run by .ci/run under its own time bound (pytest -m soak)
def test_a_replayed_message_is_not_run_twice(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with FakeApi(Reply(body=SEARCH)) as api:
        cfg = write_config(tmp_path / "w.toml", redis_url, research="websearch",
                           extra=f'[providers.websearch]\nbase_url = "{api.base_url}"\n')
        with worker_groups(cfg, tmp_path / "host-a", stages=("research",), env={"TAVILY_API_KEY": HOST_KEY}):
            ex = make_executor(cfg, tmp_path / "spool" / "state")
            try:
                wait_for_workers(ex, 1)
                body = _task_body(ex, "ep_001_r")
                envelope = wire.Signer(TEST_BROKER_KEY.encode()).seal(body)
                _enqueue(redis_url, "research", envelope)
                client = redis.Redis.from_url(redis_url)
                deadline = time.monotonic() + 15
                while not client.exists(Names().answered(body["nonce"])) and time.monotonic() < deadline:
                    time.sleep(0.05)
                _enqueue(redis_url, "research", envelope)  # the copy, after the first was answered
                time.sleep(1.5)
                client.close()
            finally:
                ex.stop()
    assert len([r for r in api.requests if r.path == "/search"]) == 1, "paid once"


def _signed_result(ex: DramatiqExecutor, task_id: int, episode_id: str, **result: Any) -> str:
    token = f"{ex.life}-{task_id}"
    [nonce] = ex._nonces[token]
    doc = {"token": token, "nonce": nonce, "episode_id": episode_id, "stage": "research", "worker": "h/1",
           "issued": time.time(), "result": {"ok": True, **result}, "files": [], "logs": []}
    logs = result.pop("logs", None)
    if logs is not None:
        doc["logs"], doc["result"] = logs, {"ok": True, **result}
    return json.dumps(wire.Signer(TEST_BROKER_KEY.encode()).seal(doc))


def test_results_are_checked_and_a_bad_one_fails_its_task_only(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path / "podspool.toml", redis_url)
    ex = make_executor(cfg, tmp_path / "spool" / "state")  # no worker: the test plays every worker
    client = redis.Redis.from_url(redis_url)
    try:
        eps = {}
        for i in range(1, 6):
            eps[i] = EpisodeInput(episode_id=f"ep_00{i}_b", batch_id="b", number=i, topic="Tides")
            folder = tmp_path / "spool" / "eps" / eps[i].episode_id
            folder.mkdir(parents=True)
            assert ex.submit(StageTask(i, "research", eps[i], str(folder)))
        # an "ok" for task 1 posted by someone who read its token, without the key
        forged = {"token": f"{ex.life}-1", "nonce": next(iter(ex._nonces[f"{ex.life}-1"])), "episode_id": "ep_001_b",
                  "stage": "research", "worker": "evil", "issued": time.time(), "result": {"ok": True},
                  "files": [], "logs": []}
        client.rpush(ex.results_key, json.dumps({"v": 2, "body": json.dumps({**forged, "v": 2}), "sig": "0" * 64}))
        client.rpush(ex.results_key, b"\xff not json")
        client.rpush(ex.results_key, _signed_result(ex, 2, "ep_002_b", logs=[["NOPE", "a forged level"]]))
        client.rpush(ex.results_key, _signed_result(ex, 3, "ep_003_b", cost_usd="a lot"))
        client.rpush(ex.results_key, _signed_result(ex, 4, "ep_004_b", disk_errno=28, ok=False,
                                                    error="No space left on device"))
        client.rpush(ex.results_key, _signed_result(ex, 5, "ep_005_b", cost_usd=0.02))
        got = {o.episode_id: o for o in wait_outcomes(ex, 4, timeout=20)}
        time.sleep(0.3)
        got.update({o.episode_id: o for o in ex.poll()})
        still = [t.episode.episode_id for t in ex.in_flight()]
    finally:
        client.close()
        ex.stop()
    assert still == ["ep_001_b"], "the forged ok was not taken; task 1 waits for its real result"
    assert "ep_001_b" not in got
    assert not got["ep_002_b"].result.ok and "logs" in (got["ep_002_b"].result.error or "")
    assert not got["ep_003_b"].result.ok and "cost_usd" in (got["ep_003_b"].result.error or "")
    assert got["ep_002_b"].result.retryable and got["ep_003_b"].result.retryable
    # the worker's full disk is the worker's: no disk errno reaches the supervisor (no admission pause)
    assert got["ep_004_b"].result.disk_errno is None and "on worker h/1" in (got["ep_004_b"].result.error or "")
    assert got["ep_005_b"].result.ok and got["ep_005_b"].result.cost_usd == 0.02  # the listener lived on


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_task_without_a_result_fails_at_its_deadline(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path / "podspool.toml", redis_url)
    ex = make_executor(cfg, tmp_path / "spool" / "state")
    client = redis.Redis.from_url(redis_url)
    ex.deadline_s = lambda limit_s: 0.5  # type: ignore[method-assign]
    try:
        folder = tmp_path / "spool" / "eps" / "ep_001_d"
        folder.mkdir(parents=True)
        assert ex.submit(StageTask(1, "research", EpisodeInput("ep_001_d", "d", 1, "Tides"), str(folder)))
        time.sleep(1.0)
        assert ex.poll() == [] and ex.in_flight(), "no worker for the stage is alive: the clock stands still"
        # a worker that serves research is alive (its heartbeat), and never answers (it refused the message)
        client.hset(Names().worker("h", 1), mapping={"host": "h", "pid": 1, "stages": "research", "busy": 0,
                                                     "threads": 1, "last": repr(time.time())})
        ex._views_at = float("-inf")
        [outcome] = wait_outcomes(ex, 1, timeout=5)
    finally:
        client.close()
        ex.stop()
    assert not outcome.result.ok and outcome.result.retryable and "no result" in (outcome.result.error or "")
    assert not ex.in_flight()


@pytest.mark.soak  # a worker group of its own: run by .ci/run under its own time bound (pytest -m soak)
def test_worker_failures_outside_the_stage_come_back_as_failed_results(tmp_path: Path,
                                                                       redis_url: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path / "podspool.toml", redis_url)
    with worker_groups(cfg, tmp_path / "host-a", stages=("research",)):
        ex = make_executor(cfg, tmp_path / "spool" / "state")
        try:
            wait_for_workers(ex, 1)
            real = wire.Signer(TEST_BROKER_KEY.encode())
            ex._nonces[f"{ex.life}-98"] = set()
            # settings from a newer podspool (a field this one does not know), and an input blob that is gone
            newer = _task_body(ex, "ep_001_n", token=f"{ex.life}-98", settings={"research": {"from_the_future": 1}})
            lost = _task_body(ex, "ep_002_n", files={"script.md": {"size": 3, "sha256": "0" * 64,
                                                                   "keys": [Names().blob(f"{ex.life}-99", "s", 0)]}})
            for body in (newer, lost):
                ex._flight[body["token"]] = StageTask(int(body["token"].split("-")[1]), "research", EpisodeInput(
                    body["episode"]["episode_id"], "x", 1, "Tides"), str(tmp_path))
                ex._nonces[body["token"]] = {body["nonce"]}
                _enqueue(redis_url, "research", real.seal(body))
            got = {o.episode_id: o.result for o in wait_outcomes(ex, 2, timeout=20)}
        finally:
            ex.stop()
    assert not got["ep_001_n"].ok and got["ep_001_n"].retryable and "from_the_future" in (got["ep_001_n"].error or "")
    assert not got["ep_002_n"].ok and got["ep_002_n"].retryable and "lost" in (got["ep_002_n"].error or "")


def test_doctor_names_the_commands_a_redis_user_may_not_run_and_no_password_is_printed(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    client.execute_command("ACL", "SETUSER", "limited", "on", ">hunter2-secret", "~*", "&*",
                           "+@all", "-info")
    client.close()
    limited = redis_url.replace("redis://", "redis://limited:hunter2-secret@")
    config = write_config(tmp_path / "podspool.toml", limited)
    try:
        out = cli("doctor", "--spool", str(tmp_path / "spool"), "--config", str(config))
        limited_worker = cli("worker", "--config", str(config))
        down = tmp_path / "down.toml"
        down.write_text(config.read_text().replace(limited, "redis://:hunter2-secret@127.0.0.1:9/0"))
        worker = cli("worker", "--config", str(down))
        doctor_down = cli("doctor", "--spool", str(tmp_path / "spool"), "--config", str(down))
    finally:
        c = redis.Redis.from_url(redis_url)
        c.execute_command("ACL", "DELUSER", "limited")
        c.close()
    assert out.returncode == 1 and "FAIL broker" in out.stdout and "not permitted: INFO" in out.stdout, out.stdout
    assert worker.returncode == 1 and "does not answer" in worker.stderr
    assert limited_worker.returncode == 1 and "run INFO" in limited_worker.stderr, limited_worker.stderr
    for run in (out, worker, doctor_down, limited_worker):
        assert "hunter2-secret" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert "redis://:***@127.0.0.1:9/0" in worker.stderr


def test_worker_processes_die_with_their_parent_and_leftover_task_folders_are_swept(tmp_path: Path,
                                                                                    redis_url: str) -> None:  # noqa: F811
    cfg = write_config(tmp_path / "podspool.toml", redis_url)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = tmp / "podspool-task-999999999-abc"  # a pid above pid_max: its worker is gone
    (dead / "ep_001_x").mkdir(parents=True)
    (dead / "ep_001_x" / "audio.wav").write_bytes(b"\0" * 1000)
    live = tmp / f"podspool-task-{os.getpid()}-abc"  # a live process's: left alone
    live.mkdir()
    group = WorkerGroup(cfg, tmp_path / "host-a", processes=2, env={"TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 20
        children: list[psutil.Process] = []
        while len(children) < 2 and time.monotonic() < deadline:
            children = psutil.Process(group.proc.pid).children(recursive=True)
            time.sleep(0.1)
        assert len(children) >= 2
        assert not dead.exists() and live.exists()
        os.kill(group.proc.pid, signal.SIGKILL)  # the parent alone, as `kill -9 <pid>` would
        group.proc.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=15)
    finally:
        group.kill9()
    assert not alive, f"worker processes outlived their parent: {[p.pid for p in alive]}"


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:1/0"])
def test_no_key_no_remote_work(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path / "podspool.toml", url)
    env = {"PODSPOOL_BROKER_KEY": ""}
    worker = cli("worker", "--config", str(config), env=env)
    run = cli("run", "--once", "--spool", str(tmp_path / "spool"), "--config", str(config), env=env)
    for r in (worker, run):
        assert r.returncode == 2 and "PODSPOOL_BROKER_KEY" in r.stderr, r.stderr[-2000:]
