"""The local executor's worker pools: spawned ahead on a helper thread, stopped all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest
from podspool.daemon.config import Config
from podspool.daemon.executors.local.pool import LocalExecutor
from podspool.daemon.executors.local.workers import Worker
from podspool.stages.base import STAGE_NAMES
from podspool_helpers import wait_for

pytestmark = pytest.mark.usefixtures("own_fork_server")  # the workers come from this process's fork server


def _executor(tmp_path: Path) -> LocalExecutor:
    cfg = Config.model_validate({"research": {"provider": "sim"}, "production": {"provider": "sim"},
                                 "audio": {"provider": "sim"}})
    state = tmp_path / "state"
    state.mkdir()
    return LocalExecutor(cfg, str(state), {}, lambda folder: 0)


def test_prepared_workers_are_the_ones_start_uses_and_stop_ends_them_all(tmp_path: Path, monkeypatch: Any) -> None:
    ex = _executor(tmp_path)
    spawned: list[Worker] = []
    real_start = Worker.start

    def counting_start(self: Worker) -> None:
        spawned.append(self)
        real_start(self)

    monkeypatch.setattr(Worker, "start", counting_start)
    ex.boot()
    ex.prepare(queued=2)  # returns at once: the spawns run on a helper thread
    wait_for(lambda: len(spawned) == 6, timeout=30)  # two per stage (audio's pool is two anyway)
    ex.start(set(STAGE_NAMES), once=True, queued=2)
    try:
        sizes = {stage: len(ex.pools[stage]) for stage in STAGE_NAMES}
        assert sizes == {stage: min(2, ex.size(stage)) for stage in STAGE_NAMES}
        assert len(spawned) == sum(sizes.values())  # start spawned none of its own: prepare's were taken
        assert all(w.ready and w.alive() for w in ex._all())
        pids = [w.process.pid for w in ex._all()]
    finally:
        killed: list[int] = []
        monkeypatch.setattr(Worker, "kill", lambda self: killed.append(1))
        ex.stop()
    assert killed == []  # idle workers exit when asked (Stop), none is killed
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids)
    assert all(not ws for ws in ex.pools.values())


def test_a_run_with_nothing_queued_prepares_no_worker(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    ex.prepare(queued=0)
    ex.start(set(), once=True, queued=0)
    assert ex._all() == []
    ex.stop()
