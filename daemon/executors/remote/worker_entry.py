"""The module `dramatiq` imports in each worker process that `podspool worker` starts.

Dramatiq's CLI finds its broker as a module attribute, so this module builds one on import, from
the configuration `podspool worker` resolved (`PODSPOOL_CONFIG`) and the stages it serves
(`PODSPOOL_WORKER_STAGES`). Nothing else imports it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

from podspool.daemon.config import load_config
from podspool.daemon.credentials import BROKER_PASSWORD_ENV, load_secrets, read_credential
from podspool.daemon.executors.remote import broker as remote_broker
from podspool.daemon.executors.remote import wire
from podspool.daemon.executors.remote.actors import LogCollector, TaskRunner, declare_actors
from podspool.daemon.executors.remote.heartbeat import Heartbeat
from podspool.daemon.executors.remote.names import PARENT_ENV, STAGES_ENV, Names
from podspool.daemon.observers.logs import setup
from podspool.stages.base import STAGE_NAMES

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A worker process outlives a `podspool worker` killed with -9 and goes on taking work, unless the
    kernel tells it its parent died (prctl PR_SET_PDEATHSIG: SIGTERM, so its task in hand still finishes
    within dramatiq's shutdown grace). A parent that died before the call is caught by its pid."""
    parent = os.environ.get(PARENT_ENV, "")
    if not sys.platform.startswith("linux") or not parent.isdigit():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def _build() -> object:
    die_with_parent()
    path = os.environ.get("PODSPOOL_CONFIG") or None
    cfg = load_config(Path(path) if path else None)
    stages = [s for s in (os.environ.get(STAGES_ENV) or ",".join(STAGE_NAMES)).split(",") if s in STAGE_NAMES]
    secrets = load_secrets()
    key = wire.load_key()  # `podspool worker` checked it is there before starting us
    collector = LogCollector()
    password = read_credential(BROKER_PASSWORD_ENV)
    setup(None, level=cfg.logging.level, stderr=True,
          secrets={**secrets, "broker key": key.decode(), **({"broker password": password} if password else {})})
    from loguru import logger

    logger.add(collector, level="DEBUG", format="{message}", filter=lambda r: "task" in r["extra"])
    settings = cfg.executor
    client = remote_broker.client(settings)
    heartbeat = Heartbeat(client, Names(settings.namespace), stages, settings.threads)
    broker = remote_broker.make_broker(settings, extra=[heartbeat])
    declare_actors(broker, TaskRunner(settings, client, secrets, collector, host=cfg.stage_settings(),
                                      signer=wire.Signer(key)))
    return broker


broker = _build()
