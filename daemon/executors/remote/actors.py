"""The worker's side: one Dramatiq actor per stage, running a shipped task in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
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
from podspool.daemon.core.lifecycle import DISK_ERRNOS
from podspool.daemon.credentials import redact_urls
from podspool.daemon.executors.remote import blobs, payload, wire
from podspool.daemon.executors.remote.names import Names
from podspool.daemon.executors.remote.wire import STUCK_GRACE_S
from podspool.daemon.ratelimit.redis_backend import RedisBackend, RedisLimiter, outlast_outage, redis_clock
from podspool.stages import artifacts
from podspool.stages.base import STAGE_NAMES, StageContext, StageName, StageResult
from podspool.stages.registry import run_stage
from podspool.stages.settings import StageSettings

MAX_LOG_LINES = 500  # per task: enough for an episode.log, not enough to flood the broker
GATE_LEASE_S = 120  # a host that dies inside the quality gates frees them after this
TEMP_PREFIX = "podspool-task-"  # + the worker's pid: sweep_temp_folders tells a dead worker's from a live one's
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
    """Runs one task message at a time per thread; shared by the stage actors of one worker process.

    A message is opened with the broker key and checked field by field before anything of it is used
    (wire.py); what the host keeps for itself (provider URLs and models, voices, `source_roots`,
    `sources_dir`: `host_owned`) comes from this host's config, never from the message."""

    def __init__(self, settings: ExecutorSettings, client: Any, secrets: dict[str, str],
                 collector: LogCollector, *, host: StageSettings, signer: wire.Signer) -> None:
        self.settings = settings
        self.client = client
        self.names = Names(settings.namespace)
        self.secrets = secrets  # this host's own keys: they never travel in a message
        self.collector = collector
        self.host = host
        self.signer = signer
        self.clock = redis_clock(client)
        self.backend = RedisBackend(client, prefix=self.names.ratelimit_prefix)
        self.who = f"{socket.gethostname()}/{os.getpid()}"
        self._lock = threading.Lock()
        self._running: dict[str, tuple[float, wire.TaskBody]] = {}  # nonce -> (give up at, task)
        self._answered: set[str] = set()  # nonces whose result was posted (by the task or the watchdog)
        threading.Thread(target=self._watch_stuck, name="podspool-stuck-watch", daemon=True).start()

    def run(self, envelope: Any, stage: StageName | None = None) -> None:
        try:
            task = wire.check_task(self.signer.open(envelope, "task message"), self.settings.namespace)
            if stage is not None and task.stage != stage:
                raise wire.WireError(f"a {task.stage} task on the {stage} queue")
        except wire.WireError as exc:
            # no result: a message we cannot trust names a return address we cannot trust either (the
            # supervisor's deadline for the task answers for it)
            logger.error("refused a task message: {}", exc)
            return
        if self.client.exists(self.names.cancelled(task.token), self.names.answered(task.nonce)):
            # the supervisor gave up on it (shutdown past its grace), or this send was answered already
            # (a replay of the message, or dramatiq's redelivery of one whose result landed)
            return
        with self._lock:
            self._running[task.nonce] = (time.monotonic() + task.time_limit_s + STUCK_GRACE_S, task)
        try:
            self._run(task)
        finally:
            with self._lock:
                self._running.pop(task.nonce, None)
                self._answered.discard(task.nonce)

    def _claim(self, nonce: str) -> bool:
        """True for whoever answers a task first: the task itself, or the watchdog."""
        with self._lock:
            if nonce in self._answered:
                return False
            self._answered.add(nonce)
            return True

    def _watch_stuck(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                stuck = [task for give_up, task in self._running.values() if now > give_up]
            for task in stuck:
                if not self._claim(task.nonce):
                    continue
                result = StageResult(ok=False, error=f"{task.stage} exceeded its time limit of "
                                                     f"{task.time_limit_s:.0f} s on {self.who} "
                                                     "(stuck in a blocking call)")
                try:
                    self._post(task, result, [], claimed=True)
                    # a redelivery of this message (its thread still holds it) has nothing left to do
                    self.client.set(self.names.cancelled(task.token), 1, ex=self.settings.artifact_ttl_s)
                except Exception as exc:  # the broker is away: dramatiq redelivers, the task runs again
                    logger.warning("could not report stuck task {}: {}", task.token, exc)

    def _run(self, task: wire.TaskBody) -> None:
        episode_id = task.episode.episode_id
        with logger.contextualize(task=task.nonce, batch=task.episode.batch_id, episode=episode_id,
                                  stage=task.stage):
            try:
                result, files = self._attempt(task)
            except Interrupt:  # dramatiq's time limit outside the stage itself
                result, files = StageResult(ok=False, error=f"{task.stage} exceeded its time limit of "
                                                            f"{task.time_limit_s:.0f} s on {self.who}"), []
            except Exception as exc:  # anything outside the stage: a failed attempt, never a silent task
                result, files = self._failure(exc), []
            self._post_until_it_lands(task, result, files)

    def _attempt(self, task: wire.TaskBody) -> tuple[StageResult, list[tuple[str, bytes]]]:
        if self.clock() > task.expires:
            return StageResult(ok=False, error=f"the task message expired before {self.who} took it "
                                               "(it waited past its deadline)"), []
        deliveries = self._count_delivery(task.token)
        if deliveries > self.settings.max_deliveries:
            return StageResult(ok=False, retryable=False,
                               error=f"task was delivered {deliveries} times: it kills or hangs the workers "
                                     "that run it (poison), so it is not run again"), []
        episode = payload.episode_from_json(task.episode.model_dump())
        problem = payload.foreign_voice_paths(episode)
        if problem:
            return StageResult(ok=False, retryable=False, error=problem), []
        settings = host_owned(StageSettings.model_validate(task.settings), self.host)
        with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
            return self._run_in(Path(tmp), task, settings, episode)

    def _failure(self, exc: BaseException) -> StageResult:
        """A failure outside the stage, as a failed (retryable) result that says whose it is: the worker
        host's disk is its own, never a reason for the supervisor to pause its admission."""
        text = redact_urls(f"{type(exc).__name__}: {exc}")[:2000]
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return StageResult(ok=False, error=f"the worker {self.who} could not work on its own disk: {text}")
        if isinstance(exc, blobs.BlobMissing):
            return StageResult(ok=False, error=f"an input of the task was lost by the broker: {text}")
        logger.opt(exception=exc).warning("the task failed outside its stage")
        return StageResult(ok=False, error=f"the worker {self.who} could not run the task: {text}")

    def _post_until_it_lands(self, task: wire.TaskBody, result: StageResult, files: list[tuple[str, bytes]]) -> None:
        """The stage is paid for: a broker that blinks must not make dramatiq run it again, so posting is
        retried here (up to POST_FOR_S) rather than by dramatiq's retries, which would rerun the stage."""
        delay, deadline = 0.5, time.monotonic() + POST_FOR_S
        while True:
            try:
                self._post(task, result, files)
                return
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning("could not post the result of {} ({}); trying again in {:.0f} s", task.token,
                               exc, delay)
                with self._lock:
                    self._answered.discard(task.nonce)  # not answered after all
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _count_delivery(self, token: str) -> int:
        key = self.names.deliveries(token)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.settings.artifact_ttl_s)
            n, _ = pipe.execute()
        return int(n)

    def _run_in(self, tmp: Path, task: wire.TaskBody, settings: StageSettings,
                episode: Any) -> tuple[StageResult, list[tuple[str, bytes]]]:
        folder = tmp / episode.episode_id
        shipped = payload.unpack_files(self.client, {k: v.model_dump(exclude_none=True) for k, v in task.files.items()},
                                       folder)
        spec_to_local: dict[str, str] = {}
        if task.sources:
            try:
                spec_to_local = payload.unpack_sources(task.sources, tmp / "sources", task.nonce[-8:])
            except ValueError as exc:  # not base64: a message from a podspool that shipped text
                return StageResult(ok=False, error=f"a source arrived unreadable ({exc})"), []
            episode = replace(episode, sources=tuple(spec_to_local.get(s, s) for s in episode.sources))
            settings.research.source_roots = [str(tmp / "sources")]
        rates = {api: (int(n), float(w)) for api, (n, w) in task.rates.items()}
        ctx = StageContext(settings=settings, secrets=self.secrets, deadline=time.monotonic() + task.time_limit_s,
                           limiter=RedisLimiter(self.backend, rates, clock=self.clock),
                           gate_lock=GateLock(self.client, self.names.gate_lock, GATE_LEASE_S))
        started = time.monotonic()
        try:
            result = run_stage(task.stage, folder, episode, ctx)
        except Interrupt:  # dramatiq's time limit: the stage is abandoned like a local worker past its limit
            result = StageResult(ok=False, error=f"{task.stage} exceeded its time limit of "
                                                 f"{task.time_limit_s:.0f} s on {self.who}")
        if ctx.calls:
            result.details["api_calls"] = dict(ctx.calls)
        result.details.setdefault("remote_seconds", round(time.monotonic() - started, 3))
        if spec_to_local and (folder / artifacts.RESEARCH_JSON).exists():
            doc = json.loads((folder / artifacts.RESEARCH_JSON).read_text(encoding="utf-8"))
            doc = payload.relabel_research(doc, spec_to_local, tmp / "sources")
            (folder / artifacts.RESEARCH_JSON).write_text(json.dumps(doc))
        return result, payload.outputs(folder, shipped)

    def _post(self, task: wire.TaskBody, result: StageResult, files: list[tuple[str, bytes]],
              claimed: bool = False) -> None:
        """Artifacts first, then the signed result that names them, so a result never points at nothing."""
        if not claimed and not self._claim(task.nonce):
            return  # the watchdog already answered for this task
        ttl = self.settings.artifact_ttl_s
        refs = [[name, blobs.put(self.client, self.names, task.token, name, data, ttl)] for name, data in files]
        logs = [[level, redact_urls(text)[:wire.MAX_TEXT]] for level, text in self.collector.take(task.nonce)]
        doc = {"token": task.token, "nonce": task.nonce, "episode_id": task.episode.episode_id,
               "stage": task.stage, "worker": self.who, "issued": self.clock(),
               "result": payload.result_to_json(result), "files": refs, "logs": logs}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(task.results, json.dumps(self.signer.seal(doc)))
            pipe.expire(task.results, ttl)
            pipe.set(self.names.answered(task.nonce), 1, ex=ttl)
            pipe.execute()


def host_owned(sent: StageSettings, host: StageSettings) -> StageSettings:
    """The message's stage settings with everything that belongs to the worker host taken from the host's
    own config: every provider's URL, model, key name and voices, the folders research may read, and
    whether a source URL may reach a private address of the host's network."""
    research = sent.research.model_copy(update={"source_roots": list(host.research.source_roots),
                                                "sources_dir": host.research.sources_dir,
                                                # which addresses a fetch may reach is the host's network's
                                                "allow_private_urls": host.research.allow_private_urls})
    return sent.model_copy(update={"providers": host.providers.model_copy(deep=True), "research": research})


def sweep_temp_folders(tmp_root: str | None = None) -> int:
    """Remove task folders left by worker processes that died (kill -9 leaves them); a live worker's
    folders (its pid in the name) are left alone. Returns how many went."""
    root = Path(tmp_root or tempfile.gettempdir())
    gone = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for e in entries:
        if not e.name.startswith(TEMP_PREFIX) or not e.is_dir(follow_symlinks=False):
            continue
        pid = e.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            if e.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        gone += 1
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def declare_actors(broker: Any, runner: TaskRunner, stages: tuple[StageName, ...] = STAGE_NAMES) -> None:
    names = runner.names
    for stage in stages:
        dramatiq.actor(broker=broker, actor_name=names.actor(stage), queue_name=names.queue(stage))(
            _actor_for(runner, stage))


def _actor_for(runner: TaskRunner, stage: StageName) -> Any:
    def run_task(envelope: Any) -> None:
        runner.run(envelope, stage)  # the queue's own stage: a message for another stage is refused

    run_task.__name__ = f"run_{stage}"
    return run_task
