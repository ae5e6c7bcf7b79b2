"""Shared fixtures. The autouse fixture fails any test that leaves a child process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from multiprocessing import forkserver, resource_tracker

import psutil
import pytest


@pytest.fixture
def own_fork_server() -> Iterator[None]:
    """For a test whose processes come from this test process's fork server (and its resource tracker):
    both are stopped after it, or the leak check rightly reports them (private hooks, made for tests
    like this)."""
    yield
    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _no_child_leaks() -> Iterator[None]:
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [p for p in me.children(recursive=True) if p.pid not in before and _alive(p)]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in leaked:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not leaked, f"test leaked child processes: {[(p.pid, _cmd(p)) for p in leaked]}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:120]
    except psutil.Error:
        return "?"
