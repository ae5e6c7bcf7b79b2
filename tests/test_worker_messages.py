"""A worker's log sink and its Freed messages: what rides with a quick task's result, and what goes at once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from loguru import logger
from podspool.daemon.executors.local import outbox as worker_outbox
from podspool.daemon.executors.local.messages import Log
from podspool.stages.base import EpisodeInput


def _sink() -> tuple[list[Any], worker_outbox.HeldLogs, int]:
    sent: list[Any] = []
    held = worker_outbox.HeldLogs(sent.append)
    return sent, held, logger.add(held.sink, level="DEBUG", format="{message}")


def test_a_quick_tasks_lines_wait_for_its_result_in_order_and_an_error_flushes_them() -> None:
    sent, held, hid = _sink()
    try:
        logger.info("outside a task")  # a worker's own lines (warm-up) go at once
        assert [m.text for m in sent] == ["outside a task"]
        held.begin()
        logger.info("one")
        logger.debug("two")
        assert len(sent) == 1
        logger.error("three")  # an error goes at once, after the lines it follows
        assert [m.text for m in sent] == ["outside a task", "one", "two", "three"]
        logger.warning("four")
        assert [m.text for m in held.end()] == ["four"]
        assert all(isinstance(m, Log) for m in sent)
    finally:
        logger.remove(hid)


def test_a_long_tasks_lines_go_as_they_happen_and_threads_hold_their_own(monkeypatch: Any) -> None:
    monkeypatch.setattr(worker_outbox, "HOLD_LOGS_S", 0.05)
    sent, held, hid = _sink()
    other: list[Log] = []
    try:
        held.begin()
        logger.info("early")

        def second_task() -> None:
            held.begin()
            logger.info("other task")
            other.extend(held.end())

        t = threading.Thread(target=second_task)
        t.start()
        t.join()
        assert [m.text for m in other] == ["other task"] and sent == []
        time.sleep(0.1)
        logger.info("late")  # past HOLD_LOGS_S: sent now, after what was held
        assert [m.text for m in sent] == ["early", "late"]
        assert held.end() == ()
    finally:
        logger.remove(hid)


def test_a_task_says_it_is_past_its_call_only_when_its_save_is_slow(monkeypatch: Any) -> None:
    from podspool.daemon.executors.local.messages import Freed

    monkeypatch.setattr(worker_outbox, "FREED_AFTER_S", 0.05)
    sent: list[Any] = []
    frees = worker_outbox.LateFrees(sent.append)
    assert frees.wait_ms() is None  # nothing due: the worker's loop waits on the supervisor alone
    frees.call_over(1)
    frees.call_over(2)
    assert 0 < frees.wait_ms() <= 50
    frees.task_done(1)  # a quick save: its result says it all, no Freed
    frees.send_due()
    assert sent == []
    time.sleep(0.06)
    assert frees.wait_ms() == 0
    frees.send_due()  # task 2 is still saving: the supervisor may send the next task now
    assert sent == [Freed(2)] and frees.wait_ms() is None


def _worker_pipe() -> tuple[Connection, Connection, Callable[[Any], None]]:
    """A real pipe: the supervisor's end, the worker's end, and a send on the worker's end that threads
    may share (as worker_main's)."""
    sup_end, worker_end = multiprocessing.Pipe()
    send_lock = threading.Lock()

    def send(msg: Any) -> None:
        with send_lock:
            worker_end.send(msg)

    return sup_end, worker_end, send


def _episode() -> EpisodeInput:
    return EpisodeInput(episode_id="ep_001_b", batch_id="b", number=1, topic="t", title=None, notes=None,
                        sources=())


def test_the_workers_loop_wakes_to_send_a_late_freed_while_a_task_saves() -> None:
    """workers.serve, the worker's main loop, on a real pipe: a task past its call and still saving
    FREED_AFTER_S later is announced while it saves, not after (so the supervisor may overlap the next
    call with the save). A loop that waited on the pipe alone slept through the deadline."""
    from podspool.daemon.executors.local.messages import Done, Run, Stop
    from podspool.daemon.executors.local.workers import serve
    from podspool.stages.base import StageResult

    sup_end, worker_end, send = _worker_pipe()

    frees = worker_outbox.LateFrees(send)

    def task(run: Run) -> None:
        time.sleep(0.01)  # the provider call
        frees.call_over(run.task_id)
        time.sleep(0.3)  # a slow save (loudness, mp3)
        frees.task_done(run.task_id)
        send(Done(run.task_id, StageResult(ok=True)))

    loop = threading.Thread(target=serve, args=(worker_end, frees, lambda run: threading.Thread(
        target=task, args=(run,), daemon=True).start()), daemon=True)
    loop.start()
    episode = _episode()
    started = time.monotonic()
    sup_end.send(Run(7, "/nowhere", episode))
    got: list[tuple[str, float]] = []
    while not got or got[-1][0] != "Done":
        assert sup_end.poll(5), got
        got.append((type(sup_end.recv()).__name__, time.monotonic() - started))
    assert [name for name, _ in got] == ["Freed", "Done"], got
    assert got[0][1] < 0.2, got  # within the save, not at its end (0.31 s)
    sup_end.send(Stop())
    loop.join(5)
    assert not loop.is_alive()


def test_a_worker_runs_its_tasks_on_its_loop_until_a_save_is_slow_then_on_task_threads(monkeypatch: Any) -> None:
    """workers.placer behind workers.serve, on a real pipe. While saves are quick, a task runs on the
    loop's own thread (no hand-over). A save that outlasts FREED_AFTER_S there cannot be announced (the
    loop is running it), and it sends the tasks after it to task threads, where a slow save's Freed goes
    out while it saves."""
    from podspool.daemon.executors.local.messages import Done, Run, Stop
    from podspool.daemon.executors.local.workers import placer, serve
    from podspool.stages.base import StageResult

    monkeypatch.setattr(worker_outbox, "FREED_AFTER_S", 0.05)
    sup_end, worker_end, send = _worker_pipe()

    frees = worker_outbox.LateFrees(send)
    ran_on: dict[int, str] = {}
    slow = {2, 3}

    def task(run: Run) -> None:
        ran_on[run.task_id] = threading.current_thread().name
        frees.call_over(run.task_id)
        time.sleep(0.2 if run.task_id in slow else 0.0)  # the save
        frees.task_done(run.task_id)
        send(Done(run.task_id, StageResult(ok=True)))

    def to_thread(run: Run) -> None:
        threading.Thread(target=task, args=(run,), name="task-thread", daemon=True).start()

    loop = threading.Thread(target=serve, args=(worker_end, frees, placer(frees, task, to_thread)), name="loop",
                            daemon=True)
    loop.start()
    episode = _episode()
    said: dict[int, list[str]] = {}
    for task_id in (1, 2, 3, 4):
        sup_end.send(Run(task_id, "/nowhere", episode))
        while "Done" not in said.get(task_id, []):
            assert sup_end.poll(5), said
            msg = sup_end.recv()
            said.setdefault(msg.task_id, []).append(type(msg).__name__)
    assert ran_on == {1: "loop", 2: "loop", 3: "task-thread", 4: "task-thread"}
    assert said == {1: ["Done"], 2: ["Done"], 3: ["Freed", "Done"], 4: ["Done"]}
    sup_end.send(Stop())
    loop.join(5)
    assert not loop.is_alive()
