"""Typed messages over the pipe between the supervisor and a local worker (pickled by multiprocessing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from podspool.stages.base import EpisodeInput, StageResult


@dataclass(frozen=True)
class Run:
    """Supervisor -> worker: run your stage on this episode folder."""

    task_id: int
    folder: str
    episode: EpisodeInput


@dataclass(frozen=True)
class Stop:
    """Supervisor -> worker: finish what you hold, then exit."""


@dataclass(frozen=True)
class Ready:
    """Worker -> supervisor: booted, its stage and provider imported."""


@dataclass(frozen=True)
class Freed:
    """Worker -> supervisor: the task is past its provider call (it may take the next one)."""

    task_id: int


@dataclass(frozen=True)
class Log:
    """Worker -> supervisor: one log line (the supervisor is the only writer of the log files)."""

    level: str
    text: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """Worker -> supervisor: the task's result, after the log lines the task held back (workers.py), and
    the files it left at their temp names for the supervisor's commit to rename: (temp, final), in order."""

    task_id: int
    result: StageResult
    logs: tuple[Log, ...] = ()
    files: tuple[tuple[str, str], ...] = ()


ToWorker = Run | Stop
FromWorker = Ready | Freed | Done | Log
