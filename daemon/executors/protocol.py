"""The seam between the supervisor and whatever runs stage work: typed messages and the Executor protocol.

The supervisor hands a `StageTask` to an executor and later takes a `TaskOutcome` back; it never learns
whether the work ran in a local process (`local`, the default) or on a Dramatiq worker on another host
(`dramatiq`). Either way the supervisor stays the only writer of the spool: an executor may write an
episode's stage artifacts into its folder (the remote one does, with what came back), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from podspool.stages.base import EpisodeInput, StageName, StageResult

if TYPE_CHECKING:
    from podspool.daemon.config import Config

# api, window seconds -> (requests started in the window now, paused until): where an executor keeps its
# windows other than in the spool's files (Dramatiq: Redis)
WindowUsage = Callable[[str, float], "tuple[int, float] | None"]


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class MemoryView(Protocol):
    """The memory guard as the loop reads it."""

    @property
    def rss(self) -> int: ...  # bytes, of the supervisor and its local workers

    @property
    def paused(self) -> bool: ...  # admission paused for memory


@dataclass(frozen=True)
class StageTask:
    """One stage of one episode, as handed to an executor."""

    task_id: int  # unique within one supervisor's life
    stage: StageName
    episode: EpisodeInput
    folder: str  # the episode folder on the supervisor's host


@dataclass
class TaskOutcome:
    """What came back for a task. A worker that died or timed out is an outcome too (ok=False)."""

    task_id: int
    episode_id: str
    stage: StageName
    result: StageResult
    worker: str = ""  # who ran it, for the log: "pid 1234" or "host/pid"
    files: tuple[tuple[str, str], ...] = ()  # (temp, final) the worker left for the commit (fsio.hold_renames)


@dataclass
class WorkerView:
    """One worker as `status` shows it."""

    host: str
    pid: int
    stage: str
    busy: int
    last_heartbeat: float  # time.time()
    extra: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs stage tasks. Every method is called from the supervisor's main thread only."""

    def boot(self) -> None:
        """Begin what takes time and needs no spool (a process that imports the stages' libraries), so
        it runs while the supervisor recovers and takes the inbox; `start` follows."""
        ...

    def prepare(self, queued: int | None = None) -> None:
        """Begin starting workers for about `queued` episodes (None: all it will need) without waiting,
        so they boot while the supervisor takes the inbox."""
        ...

    def start(self, stages_with_work: set[StageName], once: bool = False, queued: int = 0) -> None:
        """Get ready (pre-spawn, connect); may wait briefly for the stages that have work now.
        `once`/`queued`: a `run --once` with this many episodes queued (no need for more workers)."""
        ...

    def size(self, stage: StageName) -> int:
        """The stage's configured concurrency (a batch strategy's cap is compared with it)."""
        ...

    def reconfigure(self, cfg: Config) -> None:
        """SIGHUP: take the new configuration (workers restart after their current task)."""
        ...

    def stage_view(self, stage: StageName) -> dict[str, int]:
        """{busy, saving, processes, pool_size} for dashboards and metrics."""
        ...

    def free_slots(self, stage: StageName) -> int:
        """How many more tasks of `stage` it can take right now."""
        ...

    def submit(self, task: StageTask) -> bool:
        """Hand a task over; False when it could not be taken now (nothing was started)."""
        ...

    def poll(self) -> list[TaskOutcome]:
        """Outcomes that arrived since the last call (non-blocking); dead or timed-out work included."""
        ...

    def handles(self) -> list[int | HasFileno]:
        """File descriptors / connections / sentinels the main loop may wait on for news."""
        ...

    def in_flight(self) -> list[StageTask]:
        """Tasks handed over and not yet reported."""
        ...

    def abandon(self) -> list[StageTask]:
        """Stop all work now (shutdown past its grace); returns the tasks that will not report."""
        ...

    def stop(self) -> None:
        """Release every resource (idle workers, connections)."""
        ...

    def workers(self) -> list[WorkerView]:
        ...

    @property
    def memory(self) -> MemoryView: ...

    @property
    def rate_usage(self) -> WindowUsage | None:
        """How full the rate windows are, where they are not the spool's files (None: read those)."""
        ...
