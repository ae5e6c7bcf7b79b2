"""Remote stage work when things go wrong: the broker restarts, a task is poison, the supervisor dies
and comes back, sources live only on the supervisor's host, an artifact is damaged in the broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis
from document_makers import make_pdf
from fakeapi import FakeApi, Reply
from loguru import logger
from podspool.daemon.config import load_config
from podspool.daemon.executors.protocol import StageTask
from podspool.daemon.executors.remote import blobs, wire
from podspool.daemon.executors.remote.executor import DramatiqExecutor
from podspool.daemon.executors.remote.names import Names
from podspool.stages.base import EpisodeInput
from podspool_helpers import cli
from redis_fixture import RedisServer, redis_server, redis_url  # noqa: F401  (fixtures)
from remote_harness import (
    TEST_BROKER_KEY,
    Drive,
    drive,
    make_executor,
    wait_for_workers,
    wait_outcomes,
    worker_groups,
    write_config,
)


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_broker_restart_mid_batch_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()  # our own: this test kills it
    try:
        config = write_config(tmp_path / "podspool.toml", server.url, latency_ms=100)
        with worker_groups(config, tmp_path / "host-a", tmp_path / "host-b"):
            ex = make_executor(config, tmp_path / "spool" / "state")
            restarted: list[int] = []
            try:
                wait_for_workers(ex, 2)

                def restart_once(seen: Drive) -> None:
                    if not restarted and len(seen.done) >= 4:
                        restarted.append(len(seen.done))
                        server.restart(down_s=1.0)  # no persistence: queues and results are gone

                seen = drive(ex, tmp_path / "spool" / "eps", 16, on_progress=restart_once, timeout=90)
            finally:
                ex.stop()
    finally:
        server.stop()
    assert restarted
    assert not seen.failed
    assert sorted(seen.done) == sorted(set(seen.done)) and len(seen.done) == 16
    assert set(seen.applied.values()) == {1}


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_poison_tasks_fail_and_the_rest_finish(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    # `extra` lands inside [providers.sim]: every call for a topic containing "Hang" never returns
    config = write_config(tmp_path / "podspool.toml", redis_url, latency_ms=20, time_limit=1,
                          extra='hang_topic = "Hang"\n')
    spool = tmp_path / "spool" / "eps"
    with worker_groups(config, tmp_path / "host-a") as (host,):
        ex = make_executor(config, tmp_path / "spool" / "state")
        client = redis.Redis.from_url(redis_url)
        try:
            wait_for_workers(ex, 1)
            tasks = []
            for i, topic in enumerate(["Hang forever", "Crashes its worker", "Tides", "Sleep"], 900):
                ep = EpisodeInput(episode_id=f"ep_{i}_x", batch_id="x", number=i, topic=topic)
                (spool / ep.episode_id).mkdir(parents=True)
                tasks.append(StageTask(i, "research", ep, str(spool / ep.episode_id)))
            # 901 has already killed its worker max_deliveries times
            client.set(Names().deliveries(f"{ex.life}-901"), 3)
            for t in tasks:
                assert ex.submit(t)
            outcomes = {o.episode_id: o for o in wait_outcomes(ex, 4, timeout=30)}
        finally:
            client.close()
            ex.stop()
            host.kill9()  # its hung thread would hold a graceful stop for the whole grace
    assert outcomes["ep_902_x"].result.ok and outcomes["ep_903_x"].result.ok  # the rest are unaffected
    assert not outcomes["ep_900_x"].result.ok and "time limit" in (outcomes["ep_900_x"].result.error or "")
    poison = outcomes["ep_901_x"].result
    assert not poison.ok and not poison.retryable and "poison" in (poison.error or "")
    assert not (spool / "ep_900_x" / "research.json").exists()


def _slow_search(request: object) -> Reply:
    return Reply(delay=1.0, body={"answer": "a", "results": [
        {"url": "https://example.org/a", "title": "A", "content": "Tides follow the moon.", "score": 0.5}]})


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_result_of_a_dead_supervisor_is_reconciled_not_paid_twice(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with FakeApi(_slow_search) as fake:
        extra = f'[providers.websearch]\nbase_url = "{fake.base_url}"\n'
        config = write_config(tmp_path / "podspool.toml", redis_url, research="websearch", extra=extra)
        state = tmp_path / "spool" / "state"
        folder = tmp_path / "spool" / "eps" / "ep_001_r"
        folder.mkdir(parents=True)
        episode = EpisodeInput(episode_id="ep_001_r", batch_id="r", number=1, topic="Tides")
        with worker_groups(config, tmp_path / "host-a", env={"TAVILY_API_KEY": "tvly-k"}):
            first = make_executor(config, state)
            wait_for_workers(first, 1)
            assert first.submit(StageTask(1, "research", episode, str(folder)))
            first.stop()  # the supervisor dies with the task in flight
            client = redis.Redis.from_url(redis_url)
            deadline = time.monotonic() + 20
            while not client.llen(first.results_key) and time.monotonic() < deadline:
                time.sleep(0.05)  # the worker finishes and posts to the spool's result list anyway
            client.close()
            second = make_executor(config, state)  # restarted: same spool, a new life
            try:
                assert second.results_key == first.results_key
                time.sleep(1.5)  # its listener has taken the old result meanwhile
                second.poll()
                assert second.submit(StageTask(1, "research", episode, str(folder)))  # the recovery scan's re-run
                [outcome] = wait_outcomes(second, 1, timeout=10)
            finally:
                second.stop()
        searches = [r for r in fake.requests if r.path == "/search"]
    assert outcome.result.ok and outcome.episode_id == "ep_001_r"
    assert len(searches) == 1, "paid once"
    assert json.loads((folder / "research.json").read_text())["provider"] == "websearch"


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_local_sources_travel_with_the_task_and_keep_their_names(tmp_path: Path, redis_url: str,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "supervisor-host" / "notes"
    sources.mkdir(parents=True)
    (sources / "tides.md").write_text("# Tides\n\nThe moon pulls the oceans, and tides follow the moon twice a day.\n")
    make_pdf(sources / "springs.pdf", ["A cover page.", "Spring tides come when sun and moon line up at full moon."])
    config = write_config(tmp_path / "podspool.toml", redis_url, research="local")
    # the roots are the supervisor's; the worker host has no such folder
    # URLs travel as they are and are fetched by the worker host (here from a page on 127.0.0.1, which
    # the host's own config allows)
    page = FakeApi(Reply(body="<html><body><p>Harbours publish tide tables for sailors.</p></body></html>",
                         content_type="text/html; charset=utf-8"))
    url = f"{page.base_url}/tides"
    config.write_text(config.read_text().replace(
        'provider = "local"\n', f'provider = "local"\nsource_roots = ["{sources.parent}"]\nallow_private_urls = true\n', 1))
    folder = tmp_path / "spool" / "eps" / "ep_001_s"
    folder.mkdir(parents=True)
    episode = EpisodeInput(episode_id="ep_001_s", batch_id="s", number=1, topic="Tides and the moon",
                           sources=("notes/tides.md", "notes/springs.pdf", url))
    lines: list[str] = []
    hid = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG", format="{message}")
    with page, worker_groups(config, tmp_path / "host-a"):  # noqa: SIM117
        ex = make_executor(config, tmp_path / "spool" / "state")
        try:
            wait_for_workers(ex, 1)
            assert ex.submit(StageTask(1, "research", episode, str(folder)))
            [outcome] = wait_outcomes(ex, 1)
        finally:
            ex.stop()
            logger.remove(hid)
    assert outcome.result.ok, outcome.result.error
    # the worker's log line came home, tagged with the host/pid that ran the task
    assert f"[{outcome.worker}] local research ep_001_s: " in "\n".join(lines), lines
    assert outcome.worker.rsplit("/", 1)[1].isdigit(), outcome.worker
    doc = json.loads((folder / "research.json").read_text())
    assert doc["grounded"] and doc["findings"]
    # the source's own name (as on the supervisor's host), not the worker's temporary copy nor a path
    assert "tides.md" in {f["source"] for f in doc["findings"]} <= {"tides.md", "springs.pdf", url}
    assert doc["episode_sources"] == ["notes/tides.md", "notes/springs.pdf", url]
    # a PDF travels as bytes, not as text: its text layer is read on the worker, page and all
    pdf = [f for f in doc["findings"] if f["source"] == "springs.pdf"]
    assert pdf and "Spring tides" in pdf[0]["text"] and "page 2" in json.dumps(pdf[0])
    assert [r.path for r in page.requests] == ["/tides"]


def test_large_artifacts_are_chunked_and_damage_is_caught(redis_url: str) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    names = Names("t")
    data = bytes(range(256)) * (3 * blobs.CHUNK // 256 + 7)  # a little over 3 chunks: megabytes of audio
    ref = blobs.put(client, names, "tok", "audio.wav", data, ttl_s=60)
    assert len(ref["keys"]) == 4 and "data" not in ref
    assert all(0 < client.ttl(k) <= 60 for k in ref["keys"])
    assert blobs.get(client, ref) == data
    small = blobs.put(client, names, "tok", "script.md", b"**Alex:** hi", ttl_s=60)
    assert "keys" not in small and blobs.get(client, small) == b"**Alex:** hi"
    client.set(ref["keys"][1], b"x" * blobs.CHUNK)  # same size, other bytes
    with pytest.raises(blobs.BlobMissing, match="damaged"):
        blobs.get(client, ref)
    client.delete(ref["keys"][2])  # expired, or a broker restarted without persistence
    with pytest.raises(blobs.BlobMissing, match="expired"):
        blobs.get(client, ref)
    client.close()


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_status_sees_the_workers_and_doctor_checks_the_broker(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    config = write_config(tmp_path / "podspool.toml", redis_url)
    with worker_groups(config, tmp_path / "host-a", stages=("audio",)):
        ex = DramatiqExecutor(load_config(config), tmp_path / "state")
        ex.start(set())
        try:
            wait_for_workers(ex, 1)
            [view] = ex.workers()
        finally:
            ex.stop()
    assert view.stage == "audio" and view.busy == 0 and view.pid > 0
    assert abs(time.time() - view.last_heartbeat) < 10
    ok = cli("doctor", "--spool", str(tmp_path / "spool"), "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok   broker {redis_url} answers" in ok.stdout
    down = tmp_path / "down.toml"
    down.write_text(config.read_text().replace(redis_url, "redis://127.0.0.1:9/0"))
    bad = cli("doctor", "--spool", str(tmp_path / "spool"), "--config", str(down))
    assert bad.returncode == 1 and "FAIL broker redis://127.0.0.1:9/0 answers" in bad.stdout
    refused = cli("worker", "--config", str(down))  # a worker with no broker says so and exits
    assert refused.returncode == 1 and "does not answer" in refused.stderr
    assert cli("worker", "--stage", "mixing", "--config", str(config)).returncode == 2


def test_results_a_stopping_supervisor_took_and_did_not_use_go_back_to_the_broker(tmp_path: Path,
                                                                              redis_url: str) -> None:  # noqa: F811
    """Its listener's BLPOP outlasts stop(): a result popped then, or one waiting in the stash for the
    recovery scan, goes back to the head of the list, so the next life uses it instead of paying again."""
    config = write_config(tmp_path / "podspool.toml", redis_url)
    state = tmp_path / "spool" / "state"
    state.mkdir(parents=True)
    ex = make_executor(config, state)
    client = redis.Redis.from_url(redis_url)
    try:
        signer = wire.Signer(TEST_BROKER_KEY.encode())

        def result(eid: str) -> str:  # a previous life's token: its first 12 hex digits are not ours
            return json.dumps(signer.seal({"token": f"{'0' * 12}-{eid[3:6]}", "nonce": uuid.uuid4().hex,
                                           "episode_id": eid, "stage": "research", "worker": "w",
                                           "issued": time.time(), "result": {"ok": True}, "files": [],
                                           "logs": []}))

        client.rpush(ex.results_key, result("ep_001_x"))  # a previous life's: stashed once polled
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not ex._stash:
            ex.poll()
            time.sleep(0.05)
        assert ("ep_001_x", "research") in ex._stash
        client.rpush(ex.results_key, result("ep_002_x"))  # taken by the listener, never polled
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and client.llen(ex.results_key):
            time.sleep(0.05)
        assert client.llen(ex.results_key) == 0
        ex.stop()
        back = [json.loads(json.loads(raw)["body"])["episode_id"] for raw in client.lrange(ex.results_key, 0, -1)]
        assert back == ["ep_001_x", "ep_002_x"]
    finally:
        client.close()
