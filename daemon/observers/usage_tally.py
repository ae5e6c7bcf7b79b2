"""API requests per API, counted from the usage each finished phase wrote into its artifact.

The manifest keeps costs but not usage; the artifacts (research.json, quality.json, audio.json)
keep the usage list of the run that produced them. A finished phase's artifact never changes, so
each one is read once and cached by (episode, stage): the metrics hook stays cheap on a big spool.
A phase that finished while the daemon runs is noted from its result instead (`note`), so no
artifact is read for it at all. Requests of failed attempts are not in any artifact, so they are
not counted here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from podspool.daemon.models import EpisodeManifest
from podspool.stages import fsio
from podspool.stages.base import STAGE_NAMES, Usage

ARTIFACT = {"research": "research.json", "production": "quality.json", "audio": "audio.json"}


class UsageTally:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._seen: dict[tuple[str, str], dict[str, int]] = {}

    def note(self, episode_id: str, stage: str, usage: Iterable[Usage]) -> None:
        """A phase's usage as its result reported it: the same list its artifact holds."""
        counted: dict[str, int] = {}
        for u in usage:
            counted[u.api] = counted.get(u.api, 0) + u.requests
        self._seen[(episode_id, stage)] = counted

    def take(self, location: str, m: EpisodeManifest) -> dict[str, int]:
        """api -> requests of one finished episode, which leaves the cache."""
        total = self.requests_by_api([(location, m)], forget_others=False)
        for stage in STAGE_NAMES:
            self._seen.pop((m.session_id, stage), None)
        return total

    def requests_by_api(self, episodes: list[tuple[str, EpisodeManifest]], forget_others: bool = True) -> dict[str, int]:
        """api -> requests, over every done phase of `episodes` ((location, manifest) pairs)."""
        live: set[tuple[str, str]] = set()
        for location, m in episodes:
            for stage in STAGE_NAMES:
                if m.phases.get(stage) != "done":
                    continue
                key: tuple[str, str] = (m.session_id, stage)
                live.add(key)
                if key not in self._seen:
                    counted = self._read(self.root / location / m.session_id / ARTIFACT[stage])
                    if counted is None:
                        continue  # moved under our feet: counted next time
                    self._seen[key] = counted
        if forget_others:
            for key in list(self._seen):
                if key not in live:  # `podspool retry` reopened the phase: count its new run instead
                    del self._seen[key]
        total: dict[str, int] = {}
        for key in live:
            counted = self._seen.get(key, {})
            for api, n in counted.items():
                total[api] = total.get(api, 0) + n
        return total

    @staticmethod
    def _read(path: Path) -> dict[str, int] | None:
        try:
            doc: Any = fsio.read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        out: dict[str, int] = {}
        for u in doc.get("usage") or [] if isinstance(doc, dict) else []:
            if isinstance(u, dict) and isinstance(u.get("api"), str):
                out[u["api"]] = out.get(u["api"], 0) + int(u.get("requests") or 0)
        return out
