"""A background thread that takes results from Redis (BLPOP) so the supervisor's loop never blocks.

It wakes the loop through a pipe (`wake_fd`, for `Executor.handles()`), fetches a result's artifacts
before handing it over, and notices a broker that went away or came back restarted (a new `run_id`:
its queues may be gone, so the executor sends what is in flight again).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from loguru import logger
from podspool.daemon.config import ExecutorSettings
from podspool.daemon.executors.remote import blobs, wire
from podspool.daemon.executors.remote import broker as remote_broker
from podspool.daemon.ratelimit.redis_backend import outlast_outage
from pydantic import ValidationError

BLPOP_S = 1


@dataclass
class Arrival:
    """A signed result with its artifacts fetched (`files`), or why they could not be (`lost`), or why the
    result itself is refused (`bad`: signed, naming its task, but out of shape). `raw` is the envelope as
    it came, to give back to the broker unused."""

    doc: dict[str, Any]
    raw: bytes = b""
    files: list[tuple[str, bytes]] = field(default_factory=list)
    lost: str | None = None
    bad: str | None = None


@dataclass
class BrokerRestarted:
    run_id: str


class ResultListener:
    def __init__(self, settings: ExecutorSettings, results_key: str, signer: wire.Signer) -> None:
        self.results_key = results_key
        self.namespace = settings.namespace
        self.signer = signer
        self.client = remote_broker.client(settings, socket_timeout=BLPOP_S + 5.0)
        self.arrivals: queue.SimpleQueue[Arrival | BrokerRestarted] = queue.SimpleQueue()
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="podspool-results", daemon=True)
        self.up = False  # the broker answered the last time we asked (read by the main thread)
        self._refused = False  # the broker's ACL refused us a command (logged once)

    def start(self, wait_s: float = 3.0) -> None:
        """Start listening; wait up to `wait_s` for the broker's first answer, so the first tasks go out."""
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self.up and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(BLPOP_S + 6.0)
        self.client.close()
        for fd in (self.wake_fd, self._wake_w):
            os.close(fd)

    def taken(self) -> list[Arrival | BrokerRestarted]:
        """What the thread took since the last call, in order."""
        out: list[Arrival | BrokerRestarted] = []
        while True:
            try:
                out.append(self.arrivals.get_nowait())
            except queue.Empty:
                return out

    def drain_wake(self) -> None:
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop has plenty of wake-ups waiting already

    def _run(self) -> None:
        run_id: str | None = None
        while not self._stop.is_set():
            try:
                now_id = str(self.client.info("server")["run_id"])
                if not self.up:
                    logger.info("broker answers ({})", "restarted" if run_id not in (None, now_id) else "up")
                    self.up = True
                if run_id is not None and now_id != run_id:
                    self.arrivals.put(BrokerRestarted(now_id))
                    self.wake()
                run_id = now_id
                got = self.client.blpop([self.results_key], timeout=BLPOP_S)
            except redis.exceptions.NoPermissionError as exc:  # an ACL without a command we need: say so
                if self.up or not self._refused:
                    logger.error("the broker refuses a command podspool needs ({}); nothing can arrive until "
                                 "the Redis user may run it (`podspool doctor` names every one)", exc)
                    self.up, self._refused = False, True
                self._stop.wait(5.0)
                continue
            except (redis.RedisError, OSError) as exc:
                if self.up:
                    logger.warning("broker unreachable ({}); waiting for it, nothing in flight is lost", exc)
                    self.up = False
                self._stop.wait(0.5)
                continue
            if got:
                try:
                    arrival = self._fetch(got[1])
                except Exception as exc:  # one result, however strange, never ends the listener
                    logger.opt(exception=exc).error("dropped a result the listener could not read: {}", exc)
                    continue
                if arrival is not None:
                    self.arrivals.put(arrival)
                    self.wake()

    def _fetch(self, raw: bytes) -> Arrival | None:
        try:
            body = self.signer.open(json.loads(raw), "a result")
        except (ValueError, wire.WireError) as exc:  # unsigned: not even its task can be trusted
            logger.error("dropped a result from the broker: {}", exc)
            return None
        try:
            wire.check_result(body, self.namespace)
        except wire.WireError as exc:
            who = {k: body.get(k) for k in ("token", "nonce", "episode_id", "stage", "worker")}
            if not _names_its_task(who):
                logger.error("dropped a result from the broker: {}", exc)
                return None
            return Arrival(who, raw, bad=str(exc))
        try:
            # A broker that blinks right after BLPOP still holds the chunks: wait for it (stopping stops
            # the wait). One that restarted lost them: BlobMissing, and the executor sends the task again.
            return Arrival(body, raw, [(name, self._get(ref)) for name, ref in body["files"]])
        except (blobs.BlobMissing, redis.RedisError, OSError) as exc:
            return Arrival(body, raw, lost=str(exc))

    def _get(self, ref: dict[str, Any]) -> bytes:
        return outlast_outage(lambda: blobs.get(self.client, ref), pause=self._stop.wait)


def _names_its_task(who: dict[str, Any]) -> bool:
    """Whether a refused result still says which task it answers (so that task, and only it, fails)."""
    try:
        wire.ResultDoc.model_validate({"v": wire.VERSION, "issued": 0.0, "result": {"ok": False}, "files": [],
                                       **{k: v for k, v in who.items() if k != "worker"},
                                       "worker": str(who.get("worker"))[:300]})
        return True
    except ValidationError:
        return False
