"""Every Redis key, queue and actor name of the remote executor, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from podspool.stages.base import StageName

# `podspool worker` tells the worker processes dramatiq starts which stages they serve through this
STAGES_ENV = "PODSPOOL_WORKER_STAGES"
# ... and which process is their parent: they exit when it dies (worker_entry.die_with_parent)
PARENT_ENV = "PODSPOOL_WORKER_PARENT"


@dataclass(frozen=True)
class Names:
    namespace: str = "podspool"

    def queue(self, stage: StageName) -> str:
        return f"{self.namespace}.{stage}"

    def actor(self, stage: StageName) -> str:
        return f"{self.namespace}.run_{stage}"

    @property
    def broker_namespace(self) -> str:
        """Dramatiq's own keys (queues, acks, heartbeats) live under this prefix."""
        return f"{self.namespace}:dramatiq"

    @property
    def ratelimit_prefix(self) -> str:
        return f"{self.namespace}:"

    def results(self, spool_id: str) -> str:
        """The list one spool's supervisor takes results from; it outlives the supervisor."""
        return f"{self.namespace}:results:{spool_id}"

    def blob(self, token: str, name: str, part: int) -> str:
        return f"{self.namespace}:blob:{token}:{name}:{part}"

    def deliveries(self, token: str) -> str:
        return f"{self.namespace}:deliveries:{token}"

    def answered(self, nonce: str) -> str:
        """Set when a send of a task is answered: the same message again is a replay, not work."""
        return f"{self.namespace}:answered:{nonce}"

    def cancelled(self, token: str) -> str:
        return f"{self.namespace}:cancelled:{token}"

    def worker(self, host: str, pid: int) -> str:
        return f"{self.namespace}:worker:{host}:{pid}"

    @property
    def workers_pattern(self) -> str:
        return f"{self.namespace}:worker:*"

    @property
    def gate_lock(self) -> str:
        """Quality gates run one episode at a time across every host, as on one host."""
        return f"{self.namespace}:lock:quality"
