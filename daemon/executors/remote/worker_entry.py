"""The module `dramatiq` imports in each worker process that `podspool worker` starts.

Dramatiq's CLI finds its broker as a module attribute, so this module builds one on import, from
the configuration `podspool worker` resolved (`PODSPOOL_CONFIG`) and the stages it serves
(`PODSPOOL_WORKER_STAGES`). Nothing else imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

from podspool.daemon.config import load_config
from podspool.daemon.credentials import load_secrets
from podspool.daemon.executors.remote import broker as remote_broker
from podspool.daemon.executors.remote.actors import LogCollector, TaskRunner, declare_actors
from podspool.daemon.executors.remote.heartbeat import Heartbeat
from podspool.daemon.executors.remote.names import STAGES_ENV, Names
from podspool.daemon.observers.logs import setup
from podspool.stages.base import STAGE_NAMES


def _build() -> object:
    path = os.environ.get("PODSPOOL_CONFIG") or None
    cfg = load_config(Path(path) if path else None)
    stages = [s for s in (os.environ.get(STAGES_ENV) or ",".join(STAGE_NAMES)).split(",") if s in STAGE_NAMES]
    secrets = load_secrets()
    collector = LogCollector()
    setup(None, level=cfg.logging.level, stderr=True, secrets=secrets)
    from loguru import logger

    logger.add(collector, level="DEBUG", format="{message}", filter=lambda r: "task" in r["extra"])
    settings = cfg.executor
    client = remote_broker.client(settings)
    heartbeat = Heartbeat(client, Names(settings.namespace), stages, settings.threads)
    broker = remote_broker.make_broker(settings, extra=[heartbeat])
    declare_actors(broker, TaskRunner(settings, client, secrets, collector))
    return broker


broker = _build()
