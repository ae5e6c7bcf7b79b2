"""Worker heartbeats in Redis, for `status`: host, pid, stages, busy threads, last beat.

A Dramatiq middleware in each `podspool worker` process keeps one hash fresh every `EVERY_S`; the
hash expires after `EXPIRES_S` without a beat, so a dead host drops out of `status` on its own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import dramatiq
from loguru import logger
from podspool.daemon.executors.protocol import WorkerView
from podspool.daemon.executors.remote.names import Names

EVERY_S = 2.0
EXPIRES_S = 15


class Heartbeat(dramatiq.Middleware):
    def __init__(self, client: Any, names: Names, stages: Sequence[str], threads: int) -> None:
        self.client = client
        self.names = names
        self.stages = stages
        self.threads = threads
        self.host = socket.gethostname()
        self._busy = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        threading.Thread(target=self._beat_forever, name="podspool-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        try:
            self.client.delete(self.names.worker(self.host, os.getpid()))
        except Exception:  # the broker may be what is going away
            pass

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._busy += 1
        self.beat()

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        with self._lock:
            self._busy -= 1
        self.beat()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self.after_process_message(broker, message)

    def beat(self) -> None:
        key = self.names.worker(self.host, os.getpid())
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"host": self.host, "pid": os.getpid(), "stages": ",".join(self.stages),
                                        "busy": self._busy, "threads": self.threads, "last": repr(time.time())})
                pipe.expire(key, EXPIRES_S)
                pipe.execute()
        except Exception as exc:  # a missed beat is not worth a task; the next one may get through
            logger.debug("heartbeat failed: {}", exc)

    def _beat_forever(self) -> None:
        while not self._stop.wait(EVERY_S):
            self.beat()


def read_workers(client: Any, names: Names) -> list[WorkerView]:
    """Every worker with a live heartbeat, by host and pid."""
    views = []
    for key in client.scan_iter(match=names.workers_pattern, count=500):
        h = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        if not h:
            continue
        views.append(WorkerView(host=h.get("host", "?"), pid=int(h.get("pid", 0)), stage=h.get("stages", ""),
                                busy=int(h.get("busy", 0)), last_heartbeat=float(h.get("last", 0.0)),
                                extra={"threads": int(h.get("threads", 0))}))
    return sorted(views, key=lambda v: (v.host, v.pid))
