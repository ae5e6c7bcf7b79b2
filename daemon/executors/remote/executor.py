"""`DramatiqExecutor`: the supervisor's side of remote stage work (see the package docstring)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import dramatiq
import redis
from loguru import logger
from podspool.daemon.config import Config
from podspool.daemon.executors.local.guards import MemoryGuard
from podspool.daemon.executors.protocol import HasFileno, StageTask, TaskOutcome, WindowUsage, WorkerView
from podspool.daemon.executors.remote import blobs, payload, wire
from podspool.daemon.executors.remote import broker as remote_broker
from podspool.daemon.executors.remote.broker import PLUMBING_RETRIES
from podspool.daemon.executors.remote.heartbeat import read_workers
from podspool.daemon.executors.remote.names import Names
from podspool.daemon.executors.remote.results import Arrival, BrokerRestarted, ResultListener
from podspool.daemon.executors.remote.wire import STUCK_GRACE_S
from podspool.daemon.ratelimit.redis_backend import RedisBackend, redis_clock
from podspool.stages import fsio
from podspool.stages.base import StageName, StageResult
from podspool.stages.settings import scaled_time_limit
from podspool.stages.sources.resolve import SourceError

SPOOL_ID_FILE = "remote.json"
STASH_S = 600.0  # how long a previous life's result waits for the recovery scan to ask for it
STASH_MAX = 256


def spool_id(state_dir: Path) -> str:
    """This spool's id, kept under its state folder: its result list outlives any one supervisor."""
    path = state_dir / SPOOL_ID_FILE
    try:
        return str(fsio.read_json(path)["spool_id"])
    except (OSError, ValueError, KeyError, TypeError):
        state_dir.mkdir(parents=True, exist_ok=True)
        sid = uuid.uuid4().hex
        fsio.write_json(path, {"spool_id": sid})
        return sid


class DramatiqExecutor:
    """Sends each StageTask as a Dramatiq message; writes what comes back into the episode folder.

    `secrets` is accepted for the seam's sake and not used: a worker host reads its own keys, and no key
    ever travels through the broker. `key` signs tasks and checks results (wire.py); by default it is
    read like an API key (`PODSPOOL_BROKER_KEY` or its credential), and without one this raises KeyMissing.
    """

    def __init__(self, cfg: Config, state_dir: Path, secrets: Mapping[str, str] | None = None,
                 key: bytes | None = None) -> None:
        self.cfg = cfg
        self.signer = wire.Signer(key if key is not None else wire.load_key())
        self.names = Names(cfg.executor.namespace)
        self.spool_id = spool_id(Path(state_dir))
        self.results_key = self.names.results(self.spool_id)
        self.life = uuid.uuid4().hex[:12]  # this supervisor's life: a token from another one is not ours
        self._flight: dict[str, StageTask] = {}
        self._nonces: dict[str, set[str]] = {}  # token in flight -> the nonces this life sent it under
        self._due: dict[str, float] = {}  # token in flight -> when (monotonic) it is given up on
        self._ready: list[TaskOutcome] = []
        self._stash: dict[tuple[str, str], tuple[float, Arrival]] = {}
        self._client: Any = None
        self._broker: Any = None
        self._listener: ResultListener | None = None
        self._resend: set[str] = set()  # tokens in flight to send again (same token: a twin is dropped)
        self._lost_once: set[str] = set()  # tokens already sent again because the broker lost their artifacts
        self._memory = MemoryGuard()
        self._views: list[WorkerView] = []
        self._views_at = float("-inf")
        self._rates_seen: dict[tuple[str, float], tuple[float, tuple[int, float] | None]] = {}

    # ---- the Executor protocol ----------------------------------------------------------------

    def boot(self) -> None:
        """Nothing to start early: the workers are Dramatiq's, elsewhere."""

    def prepare(self, queued: int | None = None) -> None:
        """Nothing to spawn: the workers are Dramatiq's."""

    def start(self, stages_with_work: set[StageName], once: bool = False, queued: int = 0) -> None:
        if self._listener is not None:
            return
        settings = self.cfg.executor
        self._client = remote_broker.client(settings)
        self._broker = remote_broker.make_broker(settings)
        self._clock = redis_clock(self._client)
        self._listener = ResultListener(settings, self.results_key, self.signer)
        self._listener.start()

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: stage settings and rates travel with each task, so tasks sent from now on use them
        (the broker URL and namespace are read once: changing them needs a restart)."""
        self.cfg = cfg

    def size(self, stage: StageName) -> int:
        """[concurrency] caps a stage's tasks in flight across every worker host (queued ones included):
        set it to the worker threads that serve the stage, e.g. 2 hosts x 4 threads = 8."""
        return int(getattr(self.cfg.concurrency, stage))

    def free_slots(self, stage: StageName) -> int:
        # The global cap on episodes in flight (max_sessions_in_memory) is the supervisor's admission.
        return max(0, self.size(stage) - sum(1 for t in self._flight.values() if t.stage == stage))

    def stage_view(self, stage: StageName) -> dict[str, int]:
        running = sum(1 for t in self._flight.values() if t.stage == stage)
        processes = sum(1 for w in self.workers() if stage in w.stage.split(","))
        return {"busy": running, "saving": 0, "processes": processes, "pool_size": self.size(stage)}

    @property
    def memory(self) -> MemoryGuard:
        """The supervisor's own RSS (the work's memory is on the worker hosts); admission pauses above
        memory_soft_mb as with local pools."""
        return self._memory

    def submit(self, task: StageTask) -> bool:
        stashed = self._stash.pop((task.episode.episode_id, task.stage), None)
        if stashed is not None:
            logger.info("{} {}: applying the result a previous supervisor's task left in the broker",
                        task.stage, task.episode.episode_id)
            self._ready.append(self._apply(task, stashed[1]))
            self._forget(stashed[1])
            self._wake()
            return True
        if self._listener is None or not self._listener.up:
            return False  # the broker is away: no connect timeout on the main loop, the task waits in the spool
        token = f"{self.life}-{task.task_id}"
        try:
            self._send(task, token)
        except SourceError as exc:  # as the local stage would: a bad source will be just as bad next time
            self._ready.append(TaskOutcome(task.task_id, task.episode.episode_id, task.stage,
                                           StageResult(ok=False, retryable=False, error=str(exc))))
            self._wake()
            return True
        except (redis.RedisError, OSError, dramatiq.errors.ConnectionError) as exc:
            logger.warning("could not send {} {} to the broker ({}); will try again", task.stage,
                           task.episode.episode_id, exc)
            return False
        self._flight[token] = task
        return True

    def poll(self) -> list[TaskOutcome]:
        if self._listener is None:
            return []
        self._memory.check([], self.cfg.limits)
        self._listener.drain_wake()
        for item in self._listener.taken():
            if isinstance(item, BrokerRestarted):
                logger.warning("the broker restarted (run_id {}): sending the {} tasks in flight again",
                               item.run_id, len(self._flight))
                self._resend.update(self._flight)
            else:
                self._arrive(item)
        if self._resend:
            self._send_again()
        self._give_up_overdue()
        self._expire_stash()
        out, self._ready = self._ready, []
        return out

    def handles(self) -> list[int | HasFileno]:
        return [self._listener.wake_fd] if self._listener is not None else []

    def in_flight(self) -> list[StageTask]:
        return list(self._flight.values())

    def abandon(self) -> list[StageTask]:
        tasks = list(self._flight.values())
        if self._client is not None and self._flight:
            try:
                with self._client.pipeline(transaction=False) as pipe:
                    for token in self._flight:
                        pipe.set(self.names.cancelled(token), 1, ex=self.cfg.executor.artifact_ttl_s)
                    pipe.execute()
            except (redis.RedisError, OSError):
                pass  # their results will be dropped anyway: no task of ours is in flight any more
        self._flight.clear()
        self._nonces.clear()
        self._due.clear()
        return tasks

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._give_back_unused()
            self._listener = None
        if self._broker is not None:
            self._broker.close()
            self._broker = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def workers(self) -> list[WorkerView]:
        """Every worker process with a live heartbeat (read from Redis at most once a second)."""
        if self._client is None:
            return []
        if time.monotonic() - self._views_at > 1.0:
            try:
                self._views = read_workers(self._client, self.names)
            except (redis.RedisError, OSError):
                self._views = []
            self._views_at = time.monotonic()
        return self._views

    @property
    def rate_usage(self) -> WindowUsage:
        return self._window_usage

    def _window_usage(self, api: str, window_s: float) -> tuple[int, float] | None:
        """An API's window as the workers share it in Redis (for `status` and metrics.prom), read at most
        once a second per API; None while the broker is away; after `stop`, the last reading."""
        key = (api, window_s)
        at, seen = self._rates_seen.get(key, (0.0, None))
        if self._client is not None and time.monotonic() - at > 1.0:
            try:
                seen = RedisBackend(self._client, prefix=self.names.ratelimit_prefix).usage(api, window_s)
            except (redis.RedisError, OSError):
                seen = None
            self._rates_seen[key] = (time.monotonic(), seen)
        return seen

    # ---- inside ---------------------------------------------------------------------------------

    def deadline_s(self, limit_s: float) -> float:
        """How long a task may be in flight, while a worker serving its stage is alive: its time limit twice
        (one turn waiting in the queue behind the tasks before it, one running) plus a stuck worker's grace
        and the time a dead worker's messages take to come back. Past it the task fails, retryably."""
        return 2 * (limit_s + STUCK_GRACE_S) + self.cfg.executor.heartbeat_timeout_s

    def _send(self, task: StageTask, token: str) -> None:
        settings = self.cfg.executor
        stage_settings = self.cfg.stage_settings()
        limit_s = scaled_time_limit(float(getattr(stage_settings, task.stage).time_limit_s), task.episode.show.minutes)
        nonce, issued = uuid.uuid4().hex, self._clock()
        body = {
            "token": token, "nonce": nonce, "results": self.results_key, "stage": task.stage,
            "issued": issued, "expires": issued + self.deadline_s(limit_s),
            "episode": payload.episode_to_json(task.episode),
            "settings": stage_settings.model_dump(mode="json"),
            "rates": {api: list(r) for api, r in self.cfg.rate_limits.parsed().items()},
            "time_limit_s": limit_s,
            "sources": payload.pack_sources(task.episode, stage_settings.research.source_roots)
            if task.stage == "research" else {},
            "files": payload.pack_files(self._client, self.names, token, Path(task.folder), settings.artifact_ttl_s),
        }
        # Dramatiq's time limit a little past the stage's own deadline, so the stage can say why it stopped.
        message: dramatiq.Message[Any] = dramatiq.Message(queue_name=self.names.queue(task.stage), actor_name=self.names.actor(task.stage),
                                   args=(self.signer.seal(body),), kwargs={},
                                   options={"time_limit": int((limit_s + 1.0) * 1000), "max_retries": PLUMBING_RETRIES})
        self._broker.enqueue(message)
        self._nonces.setdefault(token, set()).add(nonce)
        self._due[token] = time.monotonic() + self.deadline_s(limit_s)

    def _send_again(self) -> None:
        for token in sorted(self._resend):
            task = self._flight.get(token)
            if task is not None:
                try:
                    self._send(task, token)
                except (redis.RedisError, OSError, dramatiq.errors.ConnectionError, SourceError):
                    return  # still down (or the sources went): keep the rest, try again next turn
            self._resend.discard(token)

    def _give_up_overdue(self) -> None:
        """Tasks past their deadline fail (retryably) while a worker for their stage is alive; with none
        alive the clock stops, and they wait for one (a queue with no worker is not the episode's fault)."""
        now = time.monotonic()
        overdue = [t for t, due in self._due.items() if now > due]
        if not overdue:
            return
        serving = {s for w in self.workers() for s in w.stage.split(",")}
        for token in overdue:
            task = self._flight.get(token)
            if task is None:
                self._due.pop(token, None)
                continue
            limit_s = scaled_time_limit(float(getattr(self.cfg.stage_settings(), task.stage).time_limit_s),
                                        task.episode.show.minutes)
            if task.stage not in serving:
                self._due[token] = now + self.cfg.executor.heartbeat_timeout_s
                continue
            self._drop_flight(token)
            self._cancel(token)
            self._ready.append(TaskOutcome(task.task_id, task.episode.episode_id, task.stage, StageResult(
                ok=False, error=f"no result from any worker within {self.deadline_s(limit_s):.0f} s (a worker "
                                "that refused the message logged why: a broker key that differs, another "
                                "podspool version)")))

    def _cancel(self, token: str) -> None:
        try:
            if self._client is not None:
                self._client.set(self.names.cancelled(token), 1, ex=self.cfg.executor.artifact_ttl_s)
        except (redis.RedisError, OSError):
            pass  # a late result is dropped anyway: the token is no longer in flight

    def _drop_flight(self, token: str) -> StageTask | None:
        self._nonces.pop(token, None)
        self._due.pop(token, None)
        self._resend.discard(token)
        return self._flight.pop(token, None)

    def _arrive(self, arrival: Arrival) -> None:
        doc = arrival.doc
        token = doc["token"]
        task = self._flight.get(token)
        if (task is None or task.episode.episode_id != doc["episode_id"] or task.stage != doc["stage"]
                or doc["nonce"] not in self._nonces.get(token, ())):
            self._not_ours(arrival)
            return
        if arrival.bad is not None:  # signed by a worker, out of shape: this task fails, nothing else does
            self._drop_flight(token)
            logger.bind(batch=task.episode.batch_id, episode=task.episode.episode_id, stage=task.stage).error(
                "refused the result of {} from {}: {}", token, doc.get("worker", "?"), arrival.bad)
            self._ready.append(TaskOutcome(task.task_id, task.episode.episode_id, task.stage, StageResult(
                ok=False, error=f"the worker's result was refused: {arrival.bad}"), worker=str(doc.get("worker", ""))))
            return
        self._drop_flight(token)
        if arrival.lost is not None and doc["token"] not in self._lost_once:
            # The broker restarted between the result and its chunks (or a blink outlasted the wait): the
            # work is done but its files are gone. That is the broker's loss, not a failed attempt of the
            # episode, so the task goes out once more instead (a second loss is reported as a failure).
            logger.warning("{} {}: the broker lost the artifacts of its result ({}); sending the task again",
                           task.stage, task.episode.episode_id, arrival.lost)
            self._lost_once.add(doc["token"])
            self._flight[doc["token"]] = task
            self._nonces[doc["token"]] = {doc["nonce"]}
            self._due[doc["token"]] = time.monotonic() + self.cfg.executor.heartbeat_timeout_s  # until sent again
            self._resend.add(doc["token"])
            return
        self._lost_once.discard(doc["token"])
        self._ready.append(self._apply(task, arrival))
        self._forget(arrival)

    def _not_ours(self, arrival: Arrival) -> None:
        """A late twin (redelivered, or sent again after a broker restart), or a previous life's result."""
        doc = arrival.doc
        from_before = not str(doc["token"]).startswith(self.life + "-")
        fresh = self._clock() - float(doc.get("issued", 0)) < self.cfg.executor.artifact_ttl_s
        if from_before and fresh and arrival.bad is None and doc["result"].get("ok") and arrival.lost is None:
            if len(self._stash) < STASH_MAX:
                self._stash[(doc["episode_id"], doc["stage"])] = (time.monotonic(), arrival)
            return
        logger.debug("dropped a result for task {} that is no longer in flight", doc["token"])
        self._forget(arrival)

    def _apply(self, task: StageTask, arrival: Arrival) -> TaskOutcome:
        doc = arrival.doc
        result = payload.result_from_json(doc["result"])
        if result.disk_errno is not None:  # the worker host's disk, not this host's: no pause of admission here
            result = replace(result, disk_errno=None, error=f"on worker {doc.get('worker')}: {result.error}")
        bound = logger.bind(batch=task.episode.batch_id, episode=task.episode.episode_id, stage=task.stage)
        for level, text in doc.get("logs", []):
            bound.log(level, "[{}] {}", doc.get("worker", "?"), text)
        if arrival.lost is not None:
            result = StageResult(ok=False, error=f"result from {doc.get('worker')} lost its artifacts: {arrival.lost}",
                                 cost_usd=result.cost_usd, usage=result.usage)
        else:
            try:
                for name, data in arrival.files:
                    if payload.is_artifact_name(name):
                        fsio.write_bytes(Path(task.folder) / name, data)
                    else:
                        bound.warning("ignored a file named {!r} from {}", name, doc.get("worker"))
            except OSError as exc:
                result = StageResult(ok=False, error=f"could not write the artifacts: {exc}",
                                     cost_usd=result.cost_usd, usage=result.usage)
        return TaskOutcome(task.task_id, task.episode.episode_id, task.stage, result, worker=str(doc.get("worker", "")))

    def _give_back_unused(self) -> None:
        """Results this life took from Redis and did not use go back to the head of the list for the next
        life: one the listener popped while stopping (its BLPOP outlasts stop()), and a previous life's
        waiting in the stash. Dropped, its stage would run and be paid for again (seen in CI). Their
        artifacts stay in Redis until used (_forget) or expired."""
        docs = [a.raw for _at, a in self._stash.values() if a.lost is None]
        assert self._listener is not None
        docs += [item.raw for item in self._listener.taken()
                 if isinstance(item, Arrival) and item.lost is None and item.bad is None]
        self._stash.clear()
        if not docs or self._client is None:
            return
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.results_key, *reversed(docs))
                pipe.expire(self.results_key, self.cfg.executor.artifact_ttl_s)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.warning("could not give {} unused result(s) back to the broker: {}", len(docs), exc)

    def _forget(self, arrival: Arrival) -> None:
        refs = {name: ref for name, ref in arrival.doc.get("files", [])}
        try:
            if self._client is not None:
                blobs.delete(self._client, refs)
        except (redis.RedisError, OSError):
            pass  # they expire on their own

    def _expire_stash(self) -> None:
        now = time.monotonic()
        for key, (at, arrival) in list(self._stash.items()):
            if now - at > STASH_S:
                del self._stash[key]
                self._forget(arrival)

    def _wake(self) -> None:
        if self._listener is not None:
            self._listener.wake()


