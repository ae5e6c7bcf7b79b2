"""The dispatcher and the recorder, tested directly: a real spool in a temp folder, a fake executor that
runs nothing, and injected clocks. No daemon, no subprocess: each rule is one call and its effect."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from podspool.daemon.config import Config, load_config
from podspool.daemon.core import recovery
from podspool.daemon.core.batches import BatchBook
from podspool.daemon.core.commit import CommitGroup
from podspool.daemon.core.disk import DiskPause
from podspool.daemon.core.dispatcher import MARK_RUNNING_AFTER_S, Dispatcher
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.core.recorder import Recorder
from podspool.daemon.executors.protocol import StageTask, TaskOutcome
from podspool.daemon.intake import accept
from podspool.daemon.models import EpisodeManifest
from podspool.daemon.observers.hooks import Hook, Observers
from podspool.daemon.spool import Spool
from podspool.stages.base import StageName, StageResult
from podspool_helpers import make_spool


class FakeExecutor:
    """Takes tasks up to `slots` per stage and runs none; the test decides what comes back."""

    rate_usage = None

    def __init__(self, slots: int = 5) -> None:
        self.slots = slots
        self.running: list[StageTask] = []
        self.submitted: list[StageTask] = []
        self.outcomes: list[TaskOutcome] = []
        self.memory = SimpleNamespace(rss=0, paused=False)

    def size(self, stage: StageName) -> int:
        return self.slots

    def free_slots(self, stage: StageName) -> int:
        return self.slots - sum(1 for t in self.running if t.stage == stage)

    def submit(self, task: StageTask) -> bool:
        self.running.append(task)
        self.submitted.append(task)
        return True

    def poll(self) -> list[TaskOutcome]:
        out, self.outcomes = self.outcomes, []
        done = {o.task_id for o in out}
        self.running = [t for t in self.running if t.task_id not in done]
        return out

    def finish(self, task: StageTask, result: StageResult) -> None:
        self.outcomes.append(TaskOutcome(task.task_id, task.episode.episode_id, task.stage, result))

    def in_flight(self) -> list[StageTask]:
        return list(self.running)


class Seen(Hook):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_episode_done(self, manifest: EpisodeManifest) -> None:
        self.events.append(("done", manifest.session_id))

    def on_episode_failed(self, manifest: EpisodeManifest) -> None:
        self.events.append(("failed", manifest.session_id))

    def on_batch_complete(self, session: dict[str, Any], episodes: Iterable[EpisodeManifest]) -> None:
        self.events.append(("batch", session["batch_id"]))


class Loop:
    """The owners the supervisor wires, over one accepted batch, with clocks the test moves."""

    def __init__(self, root: Path, episodes: int, manifest: dict[str, Any] | None = None, cap: int = 10,
                 slots: int = 5, max_retries: int = 2) -> None:
        make_spool(root)
        self.spool = Spool(root)
        self.spool.ensure()
        cfg = load_config(root / "podspool.toml")
        self.cfg: Config = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={
            "max_sessions_in_memory": cap, "max_retries": max_retries, "retry_backoff_s": 10.0,
            "retry_backoff_max_s": 10.0})})
        doc = {"batch_id": "b", "topics": [f"Topic {i}" for i in range(1, episodes + 1)], **(manifest or {})}
        (root / "inbox" / "b.json").write_text(json.dumps(doc))
        assert accept.take(self.spool, self.cfg, root / "inbox" / "b.json") is not None
        self.now = 1000.0
        self.wall_step = 0.0  # the wall clock set back (or forward) by hand
        self.executor = FakeExecutor(slots)
        self.seen = Seen()
        self.disk = DiskPause(lambda: 5.0, clock=self.clock)
        self.episodes = EpisodeBook(loader=recovery.manifest_loader(self.spool), clock=self.clock, wall=self.wall)
        self.batches = BatchBook(self.spool, 5, self.episodes, Observers([self.seen]))
        recovery.recover(self.spool, self.episodes, self.batches)
        self.dispatcher = Dispatcher(self.spool, lambda: self.cfg, self.episodes, self.batches, self.executor,
                                     self.disk, clock=self.clock)
        self.recorder = Recorder(self.spool, lambda: self.cfg, self.episodes, self.batches, self.executor,
                                 self.disk, Observers([self.seen]), result_came=self.dispatcher.result_came,
                                 retire=lambda eid: None, clock=self.clock, wall=self.wall)

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1.7e9 + self.now + self.wall_step

    def tick(self) -> None:
        """One turn of the supervisor's loop, as core/supervisor.py runs it."""
        group = self.recorder.begin_tick()
        planned = self.recorder.plan(self.recorder.take(), group)
        self.dispatcher.mark_running(group)
        self.dispatcher.run()
        durable = self.recorder.save(planned, group)
        self.dispatcher.run()
        self.recorder.report(durable)
        self.recorder.settle_last()

    def manifest(self, location: str, eid: str) -> EpisodeManifest:
        return self.spool.read_manifest(self.spool.folder(location, eid))


def ok(cost: float = 0.5) -> StageResult:
    return StageResult(ok=True, cost_usd=cost)


def test_later_stages_first_and_the_admission_cap_holds(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 12, cap=3, slots=5)
    loop.dispatcher.run()
    assert [t.episode.episode_id for t in loop.executor.submitted] == ["ep_001_b", "ep_002_b", "ep_003_b"]
    assert loop.episodes.admitted == {"ep_001_b", "ep_002_b", "ep_003_b"}
    first = loop.executor.submitted[0]
    loop.executor.finish(first, ok())
    loop.tick()
    # ep_001 moved on to production and started there; the freed research slot takes no 4th episode
    assert loop.executor.submitted[-1].stage == "production"
    assert loop.executor.submitted[-1].episode.episode_id == "ep_001_b"
    assert len(loop.executor.submitted) == 4 and len(loop.episodes.admitted) == 3


def test_a_result_moves_the_folder_counts_its_cost_and_is_reported_once_durable(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 2)
    loop.dispatcher.run()
    task = loop.executor.submitted[0]
    loop.executor.finish(task, ok(0.25))
    loop.tick()
    m = loop.manifest("production", "ep_001_b")
    assert m.phases.research == "done" and m.costs.research == 0.25 and m.attempts == 1
    assert not loop.spool.folder("research", "ep_001_b").exists()
    assert loop.batches["b"].tally.costs["research"] == 0.25
    assert loop.episodes.get("ep_001_b").location == "production"  # type: ignore[union-attr]


def test_a_failed_attempt_waits_its_backoff_on_the_injected_wall_clock(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 1)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], StageResult(ok=False, error="503 from the API"))
    loop.tick()
    m = loop.manifest("research", "ep_001_b")
    assert m.phases.research == "failed" and m.attempts == 1 and m.not_before == pytest.approx(loop.wall() + 10)
    assert len(loop.executor.submitted) == 1  # not before its time
    loop.now += 10.5
    loop.dispatcher.run()
    assert len(loop.executor.submitted) == 2 and loop.executor.submitted[1].episode.attempt == 2


def test_a_wall_clock_set_back_does_not_delay_a_retry(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 1)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], StageResult(ok=False, error="503 from the API"))
    loop.tick()
    loop.wall_step = -3600.0  # an NTP step back by an hour, after the retry time was written down
    loop.now += 10.5
    loop.dispatcher.run()
    assert len(loop.executor.submitted) == 2  # due after its 10 s, on the monotonic clock


def test_exhausted_retries_fail_the_episode_and_complete_the_batch(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 1, max_retries=0)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], StageResult(ok=False, error="bad request", retryable=False))
    loop.tick()
    assert loop.spool.folder("failed", "ep_001_b").is_dir()
    assert loop.batches.finished.get("failed") == 1 and len(loop.episodes) == 0
    assert loop.seen.events == [("failed", "ep_001_b"), ("batch", "b")]


def test_a_batch_at_its_budget_starts_nothing_more(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 3, manifest={"budget_usd": 0.4}, cap=1)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], ok(0.5))
    loop.tick()
    # ep_001's production would be a start of an admitted episode; the cost reached the budget: held
    assert [t.episode.episode_id for t in loop.executor.submitted] == ["ep_001_b"]
    assert loop.batches["b"].over_budget() and loop.batches["b"].held_logged


def test_a_result_the_disk_refuses_is_held_and_recorded_once_after_the_pause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = Loop(tmp_path / "spool", 2)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], ok(0.25))
    real_write = CommitGroup.write

    def full(self: CommitGroup, path: Path, data: bytes, owner: object, replaces: bool | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CommitGroup, "write", full)
    loop.tick()
    assert loop.disk.active() and len(loop.recorder.held) == 1 and loop.recorder.busy
    assert loop.spool.folder("research", "ep_001_b").is_dir()
    monkeypatch.setattr(CommitGroup, "write", real_write)
    loop.executor.finish(loop.executor.submitted[1], ok(0.25))
    loop.tick()  # still paused: the new result is held too, nothing is recorded
    assert len(loop.recorder.held) == 2 and loop.batches["b"].tally.costs["research"] == 0
    loop.now += 6
    loop.tick()
    assert not loop.recorder.held and loop.batches["b"].tally.costs["research"] == 0.5  # each counted once
    assert loop.manifest("production", "ep_001_b").costs.research == 0.25


def test_a_phase_running_long_is_marked_in_its_manifest_and_a_quick_one_is_not(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 2, cap=2)
    loop.dispatcher.run()
    loop.executor.finish(loop.executor.submitted[0], ok())
    loop.tick()  # ep_001 finished before its mark was due: one write, with its result
    assert loop.manifest("production", "ep_001_b").phases.production == "pending"
    assert loop.manifest("research", "ep_002_b").phases.research == "pending"
    loop.now += MARK_RUNNING_AFTER_S + 0.1
    loop.tick()
    assert loop.manifest("research", "ep_002_b").phases.research == "in_progress"
    assert loop.manifest("production", "ep_001_b").phases.production == "in_progress"
    assert loop.dispatcher.next_mark_in() is None  # every running phase is marked


def test_a_result_for_an_episode_no_longer_running_there_is_dropped(tmp_path: Path) -> None:
    loop = Loop(tmp_path / "spool", 1)
    loop.dispatcher.run()
    task = loop.executor.submitted[0]
    loop.executor.finish(task, ok())
    loop.executor.outcomes.append(TaskOutcome(task.task_id, task.episode.episode_id, "audio", ok()))
    loop.tick()
    assert loop.manifest("production", "ep_001_b").costs.total == 0.5  # the stray one added nothing
