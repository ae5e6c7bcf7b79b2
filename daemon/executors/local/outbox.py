"""What a worker process tells the supervisor, and when: log lines and "past my call" (Freed).

Each pipe message costs the worker a write and the supervisor a read, and often a wake-up of its own,
for every task. So a quick task's log lines ride in its result (HeldLogs), and a task says it is past
its provider call only when its save is slow (LateFrees). A slow task sends both as they happen: an
operator tailing a long call sees its lines, and the supervisor overlaps the next call with the save.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from podspool.daemon.executors.local.messages import Freed, Log

FREED_AFTER_S = 0.02  # a task still saving this long after its call tells the supervisor it may send the next
HOLD_LOGS_S = 0.5  # a task's log lines below ERROR_LEVEL travel with its result while it is younger
ERROR_LEVEL = 40  # loguru's ERROR


class HeldLogs:
    """The log sink of a worker: a task's lines ride with its result while the task is young.

    Sent one by one, a stage's two or three lines cost more pipe messages than its result. A task
    younger than HOLD_LOGS_S holds its lines and sends them in its Done message, in order; past that,
    or at an error, they go at once, so an operator tailing a long call sees them as they happen. A
    worker killed meanwhile loses at most HOLD_LOGS_S of its task's lines below error level.
    """

    def __init__(self, send: Any) -> None:
        self.send = send
        self.local = threading.local()  # per task thread: held lines and the time to stop holding

    def begin(self) -> None:
        self.local.held = []
        self.local.until = time.monotonic() + HOLD_LOGS_S

    def end(self) -> tuple[Log, ...]:
        held, self.local.held = self.local.held, None
        return tuple(held)

    def sink(self, message: Any) -> None:
        r = message.record
        exc = r["exception"]
        text = r["message"]
        if exc is not None and exc.type is not None:
            text += f" ({exc.type.__name__}: {exc.value})"
        line = Log(r["level"].name, text, {k: str(v) for k, v in r["extra"].items()})
        held = getattr(self.local, "held", None)
        try:
            if held is not None:
                if r["level"].no < ERROR_LEVEL and time.monotonic() < self.local.until:
                    held.append(line)
                    return
                self.local.held = []
                for h in held:
                    self.send(h)
            self.send(line)
        except (OSError, ValueError):
            pass


class LateFrees:
    """A task past its provider call lets the supervisor send this worker the next one (Freed). One that
    finishes within FREED_AFTER_S says so with its result instead: most saves are that quick, and a
    Freed message cost a pipe write, a read and often a wake-up of the supervisor of its own."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.due: dict[int, float] = {}  # task id -> when its Freed is due (monotonic)
        self.running: set[int] = set()  # tasks handed over and not done
        self.slow_save = False  # a task of this worker saved past its Freed's due time

    def begin(self, task_id: int) -> None:
        """The main loop hands a task over (before it waits again: see wait_ms)."""
        with self.lock:
            self.running.add(task_id)

    def call_over(self, task_id: int) -> None:
        with self.lock:
            self.due[task_id] = time.monotonic() + FREED_AFTER_S

    def task_done(self, task_id: int) -> None:
        with self.lock:
            due = self.due.pop(task_id, None)
            self.running.discard(task_id)
            if due is not None and time.monotonic() >= due:
                self.slow_save = True  # its Freed fell due and was not sent: the worker's loop was running it

    def saves_quick(self) -> bool:
        """No task of this worker has yet saved for FREED_AFTER_S past its call (workers.placer)."""
        return not self.slow_save

    def wait_ms(self) -> int | None:
        """How long the main loop may wait for the supervisor before a Freed may fall due (None: no limit).

        A task still in its call may leave it at any moment, and nothing wakes the loop then: while one
        runs, the loop looks again every FREED_AFTER_S (a long call costs it a few wake-ups a second)."""
        with self.lock:
            first = min(self.due.values(), default=None)
            busy = bool(self.running)
        if first is None:
            return math.ceil(FREED_AFTER_S * 1000) if busy else None
        return max(0, math.ceil((first - time.monotonic()) * 1000))

    def send_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            late = [t for t, when in self.due.items() if when <= now]
            for t in late:
                del self.due[t]
        for t in late:  # a task may finish meanwhile: the supervisor ignores a Freed after its Done
            self.send(Freed(t))
