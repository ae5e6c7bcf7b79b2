"""The main loop's order on a real spool (core/recorder.py, Recorder.save): one syncfs a busy tick settles the
last tick's renames, a result is reported only once its move is durable, and what a result made ready is
handed out as soon as its folder has moved, before that sync.

The supervisor runs in this process, over a real spool, with an executor that runs no stage: each task
it is handed comes back done on its next poll. Every syncfs, "done" line and hand-over is recorded in
one list, in the order they happened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from loguru import logger
from podspool.daemon.config import load_config
from podspool.daemon.core import commit
from podspool.daemon.core.supervisor import Supervisor
from podspool.daemon.executors.protocol import StageTask, TaskOutcome
from podspool.daemon.spool import Spool
from podspool.stages.base import StageName, StageResult
from podspool_helpers import make_spool


class EchoExecutor:
    """Runs nothing: every task handed over comes back done on the next poll. Up to `slots` at a time."""

    def __init__(self, events: list[tuple[str, ...]], slots: int) -> None:
        self.events = events
        self.slots = slots
        self.tasks: list[StageTask] = []
        self.ready_r, self.ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # readable: outcomes are waiting
        self.memory = SimpleNamespace(rss=0, paused=False)  # the memory guard's view: nothing to guard
        self.rate_usage = None  # the rate windows are the spool's files

    def boot(self) -> None: ...
    def prepare(self, queued: int | None = None) -> None: ...
    def start(self, stages_with_work: set[StageName], once: bool = False, queued: int = 0) -> None: ...
    def reconfigure(self, cfg: Any) -> None: ...
    def stop(self) -> None:
        os.close(self.ready_r)
        os.close(self.ready_w)

    def size(self, stage: StageName) -> int: return self.slots
    def stage_view(self, stage: StageName) -> dict[str, int]: return {}
    def workers(self) -> list[Any]: return []
    def handles(self) -> list[Any]: return [self.ready_r]
    def in_flight(self) -> list[StageTask]: return list(self.tasks)
    def abandon(self) -> list[StageTask]: return []

    def free_slots(self, stage: StageName) -> int:
        return self.slots - sum(1 for t in self.tasks if t.stage == stage)

    def submit(self, task: StageTask) -> bool:
        self.events.append(("submit", task.stage, task.episode.episode_id))
        self.tasks.append(task)
        os.write(self.ready_w, b"!")
        return True

    def poll(self) -> list[TaskOutcome]:
        try:
            os.read(self.ready_r, 4096)
        except BlockingIOError:
            pass
        done, self.tasks = self.tasks, []
        if done:
            self.events.append(("tick",))
        return [TaskOutcome(t.task_id, t.episode.episode_id, t.stage, StageResult(ok=True)) for t in done]


def _run(root: Path, episodes: int, monkeypatch: pytest.MonkeyPatch, syncfs_works: bool = True) -> list[tuple[str, ...]]:
    make_spool(root)
    manifest = {"batch_id": "b", "topics": [f"Topic {i}" for i in range(episodes)]}
    (root / "inbox" / "b.json").write_text(json.dumps(manifest))
    old = os.stat(root / "inbox" / "b.json").st_mtime - 60
    os.utime(root / "inbox" / "b.json", (old, old))  # quiet: --once takes it at once
    events: list[tuple[str, ...]] = []
    real_syncfs = commit.syncfs

    def syncfs(anchor: Path) -> bool:
        # where each episode is now: a sync makes durable every move made before it
        events.append(("sync", *sorted(f"{loc}/{e}" for loc in ("research", "production", "audio", "done")
                                       for e in os.listdir(root / loc))))
        return real_syncfs(anchor) if syncfs_works else False

    monkeypatch.setattr(commit, "syncfs", syncfs)
    if not syncfs_works:  # each folder is fsynced instead: that makes its entries durable
        real_fsync_dir = commit.fsio.fsync_dir

        def fsync_dir(path: str | Path) -> None:
            real_fsync_dir(path)
            events.append(("sync", *sorted(f"{os.path.basename(path)}/{e}" for e in os.listdir(path))))

        monkeypatch.setattr(commit.fsio, "fsync_dir", fsync_dir)
    sink = logger.add(lambda m: events.append(("done", m.record["extra"]["episode"], m.record["extra"]["stage"])),
                      filter=lambda r: " done in " in r["message"], level="INFO")
    try:
        sp = Spool(root)
        sp.ensure()
        sup = Supervisor(sp, load_config(root / "podspool.toml"), once=True, executor=EchoExecutor(events, 2))
        sup.run()
    finally:
        logger.remove(sink)
    assert sorted(os.listdir(root / "done")) == [f"ep_{i:03d}_b" for i in range(1, episodes + 1)]
    return events


def _durable_at(events: list[tuple[str, ...]], i: int, folder: str) -> bool:
    """Whether a sync before event i saw `folder` (so its move was made durable by then)."""
    return any(e[0] == "sync" and folder in e[1:] for e in events[:i])


NEXT = {"research": "production", "production": "audio", "audio": "done"}


def test_a_result_is_reported_only_once_its_move_is_durable_and_its_next_stage_starts_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _run(tmp_path / "spool", 8, monkeypatch)
    done = [(i, e) for i, e in enumerate(events) if e[0] == "done"]
    assert len(done) == 8 * 3
    for i, (_, eid, stage) in done:
        assert _durable_at(events, i, f"{NEXT[stage]}/{eid}"), f"{stage} of {eid} reported before its move was synced"
    early = 0
    for _, (_, eid, stage) in done:
        if stage == "audio":
            continue
        start = events.index(("submit", NEXT[stage], eid))
        early += not _durable_at(events, start, f"{NEXT[stage]}/{eid}")
    assert early > 0  # a busy loop hands a next stage out before the sync that makes its move durable
    ticks, syncs = events.count(("tick",)), sum(1 for e in events if e[0] == "sync")
    assert ticks >= 8 and syncs <= ticks + 1  # a whole commit a tick would take two syncs each


def test_without_syncfs_each_tick_settles_its_own_renames_before_reporting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _run(tmp_path / "spool", 4, monkeypatch, syncfs_works=False)
    # every file and folder is fsynced instead, so no later sync can settle an earlier group's renames
    done = [(i, e) for i, e in enumerate(events) if e[0] == "done"]
    assert len(done) == 4 * 3
    for i, (_, eid, stage) in done:
        assert _durable_at(events, i, f"{NEXT[stage]}/{eid}"), f"{stage} of {eid} reported before its move was synced"
