"""A worker's log sink: a young task's lines ride with its result; errors and a long task's lines go at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from loguru import logger
from podspool.daemon import workers
from podspool.daemon.messages import Log


def _sink() -> tuple[list[Any], workers._HeldLogs, int]:
    sent: list[Any] = []
    held = workers._HeldLogs(sent.append)
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
    monkeypatch.setattr(workers, "HOLD_LOGS_S", 0.05)
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
