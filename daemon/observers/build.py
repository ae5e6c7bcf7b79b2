"""The supervisor's observer hooks, built from the configuration (runtime view, metrics, timeline, alerts)."""

from __future__ import annotations

from collections.abc import Mapping

from podspool.daemon.config import Config
from podspool.daemon.observers.hooks import Hook
from podspool.daemon.observers.metrics import MetricsHook
from podspool.daemon.observers.runtime import RuntimeHook
from podspool.daemon.observers.timeline import TimelineHook
from podspool.daemon.spool import Spool


def build_hooks(spool: Spool, cfg: Config, secrets: Mapping[str, str]) -> list[Hook]:
    hooks: list[Hook] = [RuntimeHook(spool.state), MetricsHook(spool.root), TimelineHook(spool.root / "batches")]
    if cfg.notify.webhook_url:  # alerts import requests and tenacity: ~50 ms of every start, only for this
        from podspool.daemon.observers.alerts import AlertsHook

        hooks.append(AlertsHook(cfg.notify.webhook_url, timeout_s=cfg.notify.timeout_s, secrets=secrets,
                                spool=str(spool.root)))
    return hooks
