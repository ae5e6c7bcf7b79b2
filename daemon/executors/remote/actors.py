"""The worker's side: one Dramatiq actor per stage, running a shipped task in a temporary folder."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Interrupt
from loguru import logger
from podspool.daemon.config import ExecutorSettings
from podspool.daemon.executors.remote import blobs, payload
from podspool.daemon.executors.remote.names import Names
from podspool.daemon.ratelimit.redis_backend import RedisBackend, RedisLimiter, outlast_outage, redis_clock
from podspool.stages import artifacts
from podspool.stages.base import STAGE_NAMES, StageContext, StageName, StageResult
from podspool.stages.registry import run_stage
from podspool.stages.settings import StageSettings

MAX_LOG_LINES = 500  # per task: enough for an episode.log, not enough to flood the broker
GATE_LEASE_S = 120  # a host that dies inside the quality gates frees them after this
# Dramatiq's time limit interrupts a thread only between bytecodes; one stuck in a blocking C call
# (a read with no timeout) never sees it. Past its limit plus this, the watchdog answers for it.
STUCK_GRACE_S = 3.0
POST_FOR_S = 600.0  # how long a finished task keeps trying to post its result to an absent broker


class LogCollector:
    """A loguru sink that keeps each task's lines, to send them home with its result."""

    def __init__(self) -> None:
        self._lines: dict[str, list[list[Any]]] = {}
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        r = message.record
        token = r["extra"].get("task")
        text = r["message"]
        if r["exception"] is not None and r["exception"].type is not None:
            text += f" ({r['exception'].type.__name__}: {r['exception'].value})"
        with self._lock:
            lines = self._lines.setdefault(token, [])
            if len(lines) < MAX_LOG_LINES:
                lines.append([r["level"].name, text])

    def take(self, token: str) -> list[list[Any]]:
        with self._lock:
            return self._lines.pop(token, [])


class GateLock:
    """The quality gates' lock across hosts, as a stage's `gate_lock`. It waits out a broker that is away
    (a restart, a blink) instead of failing the stage; a lock the restarted broker forgot (or whose lease
    ran out) has nothing left to release, which is not the stage's failure either."""

    def __init__(self, client: Any, name: str, lease_s: float) -> None:
        self._client = client
        self._lock = client.lock(name, timeout=lease_s)
        # Our own token, so a retried step can tell a SET or a release that landed before the connection
        # dropped (redis-py's Lock forgets its token before releasing, and would wait out its own lease).
        self._token = uuid.uuid4().hex

    def _acquire(self) -> bool:
        return bool(self._client.get(self._lock.name) == self._token.encode()
                    or self._lock.acquire(token=self._token))

    def __enter__(self) -> GateLock:
        outlast_outage(self._acquire)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            outlast_outage(lambda: self._lock.do_release(self._token))
        except redis.exceptions.LockError as err:
            logger.warning("the gate lock was gone when released ({}): the broker restarted or its lease ran out",
                           err)


class TaskRunner:
    """Runs one task message at a time per thread; shared by the stage actors of one worker process."""

    def __init__(self, settings: ExecutorSettings, client: Any, secrets: dict[str, str],
                 collector: LogCollector) -> None:
        self.settings = settings
        self.client = client
        self.names = Names(settings.namespace)
        self.secrets = secrets  # this host's own keys: they never travel in a message
        self.collector = collector
        self.clock = redis_clock(client)
        self.backend = RedisBackend(client, prefix=self.names.ratelimit_prefix)
        self.who = f"{socket.gethostname()}/{os.getpid()}"
        self._lock = threading.Lock()
        self._running: dict[str, tuple[float, dict[str, Any]]] = {}  # token -> (give up at, body)
        self._answered: set[str] = set()  # tokens whose result was posted (by the task or the watchdog)
        threading.Thread(target=self._watch_stuck, name="podspool-stuck-watch", daemon=True).start()

    def run(self, body: dict[str, Any]) -> None:
        token = body["token"]
        if self.client.exists(self.names.cancelled(token)):
            return  # the supervisor gave up on it (shutdown past its grace): nothing to do
        with self._lock:
            self._running[token] = (time.monotonic() + float(body["time_limit_s"]) + STUCK_GRACE_S, body)
        try:
            self._run(token, body)
        finally:
            with self._lock:
                self._running.pop(token, None)
                self._answered.discard(token)

    def _claim(self, token: str) -> bool:
        """True for whoever answers a task first: the task itself, or the watchdog."""
        with self._lock:
            if token in self._answered:
                return False
            self._answered.add(token)
            return True

    def _watch_stuck(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                stuck = [(t, body) for t, (give_up, body) in self._running.items() if now > give_up]
            for token, body in stuck:
                if not self._claim(token):
                    continue
                result = StageResult(ok=False, error=f"{body['stage']} exceeded its time limit of "
                                                     f"{float(body['time_limit_s']):.0f} s on {self.who} "
                                                     "(stuck in a blocking call)")
                try:
                    self._post(body, result, [], claimed=True)
                    # a redelivery of this message (its thread still holds it) has nothing left to do
                    self.client.set(self.names.cancelled(token), 1, ex=self.settings.artifact_ttl_s)
                except Exception as exc:  # the broker is away: dramatiq redelivers, the task runs again
                    logger.warning("could not report stuck task {}: {}", token, exc)

    def _run(self, token: str, body: dict[str, Any]) -> None:
        deliveries = self._count_delivery(token)
        stage: StageName = body["stage"]
        episode = payload.episode_from_json(body["episode"])
        if deliveries > self.settings.max_deliveries:
            result = StageResult(ok=False, retryable=False,
                                 error=f"task was delivered {deliveries} times: it kills or hangs the workers "
                                       "that run it (poison), so it is not run again")
            self._post(body, result, [])
            return
        with tempfile.TemporaryDirectory(prefix="podspool-task-") as tmp, \
                logger.contextualize(task=token, batch=episode.batch_id, episode=episode.episode_id, stage=stage):
            result, files = self._run_in(Path(tmp), body, stage, episode)
            self._post_until_it_lands(body, result, files)

    def _post_until_it_lands(self, body: dict[str, Any], result: StageResult, files: list[tuple[str, bytes]]) -> None:
        """The stage is paid for: a broker that blinks must not make dramatiq run it again, so posting is
        retried here (up to POST_FOR_S) rather than by dramatiq's retries, which would rerun the stage."""
        delay, deadline = 0.5, time.monotonic() + POST_FOR_S
        while True:
            try:
                self._post(body, result, files)
                return
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning("could not post the result of {} ({}); trying again in {:.0f} s", body["token"],
                               exc, delay)
                with self._lock:
                    self._answered.discard(body["token"])  # not answered after all
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _count_delivery(self, token: str) -> int:
        key = self.names.deliveries(token)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.settings.artifact_ttl_s)
            n, _ = pipe.execute()
        return int(n)

    def _run_in(self, tmp: Path, body: dict[str, Any], stage: StageName,
                episode: Any) -> tuple[StageResult, list[tuple[str, bytes]]]:
        folder = tmp / episode.episode_id
        shipped = payload.unpack_files(self.client, body["files"], folder)
        settings = StageSettings.model_validate(body["settings"])
        local_to_spec: dict[str, str] = {}
        if body.get("sources"):
            local_to_spec = payload.unpack_sources(body["sources"], tmp / "sources", body["token"][-8:])
            spec_to_local = {spec: local for local, spec in local_to_spec.items()}
            episode = replace(episode, sources=tuple(spec_to_local.get(s, s) for s in episode.sources))
            settings.research.source_roots = [str(tmp / "sources")]
        rates = {api: (int(n), float(w)) for api, (n, w) in body["rates"].items()}
        limit_s = float(body["time_limit_s"])
        ctx = StageContext(settings=settings, secrets=self.secrets, deadline=time.monotonic() + limit_s,
                           limiter=RedisLimiter(self.backend, rates, clock=self.clock),
                           gate_lock=GateLock(self.client, self.names.gate_lock, GATE_LEASE_S))
        started = time.monotonic()
        try:
            result = run_stage(stage, folder, episode, ctx)
        except Interrupt:  # dramatiq's time limit: the stage is abandoned like a local worker past its limit
            result = StageResult(ok=False, error=f"{stage} exceeded its time limit of {limit_s:.0f} s on {self.who}")
        if ctx.calls:
            result.details["api_calls"] = dict(ctx.calls)
        result.details.setdefault("remote_seconds", round(time.monotonic() - started, 3))
        if local_to_spec and (folder / artifacts.RESEARCH_JSON).exists():
            doc = json.loads((folder / artifacts.RESEARCH_JSON).read_text(encoding="utf-8"))
            (folder / artifacts.RESEARCH_JSON).write_text(json.dumps(payload.relabel(doc, local_to_spec)))
        return result, payload.outputs(folder, shipped)

    def _post(self, body: dict[str, Any], result: StageResult, files: list[tuple[str, bytes]],
              claimed: bool = False) -> None:
        """Artifacts first, then the result that names them, so a result never points at nothing."""
        token = body["token"]
        if not claimed and not self._claim(token):
            return  # the watchdog already answered for this task
        ttl = self.settings.artifact_ttl_s
        refs = [[name, blobs.put(self.client, self.names, token, name, data, ttl)] for name, data in files]
        doc = {"v": payload.VERSION, "token": token, "episode_id": body["episode"]["episode_id"],
               "stage": body["stage"], "worker": self.who, "result": payload.result_to_json(result),
               "files": refs, "logs": self.collector.take(token)}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(body["results"], json.dumps(doc))
            pipe.expire(body["results"], ttl)
            pipe.execute()


def declare_actors(broker: Any, runner: TaskRunner, stages: tuple[StageName, ...] = STAGE_NAMES) -> None:
    names = runner.names
    for stage in stages:
        def run_task(body: dict[str, Any]) -> None:
            runner.run(body)

        run_task.__name__ = f"run_{stage}"
        dramatiq.actor(broker=broker, actor_name=names.actor(stage), queue_name=names.queue(stage))(run_task)
