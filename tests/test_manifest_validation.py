"""Batch manifest validation: every kind of bad input is a named problem, never an exception."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from podspool.daemon.intake.validate import ManifestProblem, check_file, check_manifest
from podspool.daemon.models import BatchManifest, episode_id


def check(doc: object, roots: list[Path] | None = None) -> BatchManifest:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return check_manifest(raw, roots or [Path.cwd()])


def problems(doc: object, roots: list[Path] | None = None) -> str:
    with pytest.raises(ManifestProblem) as info:
        check(doc, roots)
    assert info.value.problems, "a rejection must name at least one problem"
    return " | ".join(info.value.problems)


def test_topics_are_numbered_from_starting_episode() -> None:
    m = check({"batch_id": "b", "starting_episode": 7, "topics": ["A", "B"]})
    assert [(e.number, e.topic) for e in m.all_episodes()] == [(7, "A"), (8, "B")]
    assert episode_id(7, "b") == "ep_007_b"


def test_topics_and_episodes_together() -> None:
    m = check({"topics": ["A"], "episodes": [{"number": 5, "topic": "E", "title": "t", "notes": "n"}]})
    assert [e.number for e in m.all_episodes()] == [1, 5]
    assert m.batch_id is None  # the default id is given at intake
    assert m.effective_strategy() == "small_batch"


def test_strategy_defaults_by_size() -> None:
    assert check({"topics": [f"t{i}" for i in range(11)]}).effective_strategy() == "medium_batch"
    assert check({"topics": [f"t{i}" for i in range(51)]}).effective_strategy() == "large_batch"


@pytest.mark.parametrize(("doc", "expected"), [
    ({"topics": ["a"], "colour": "red"}, "colour: unknown field"),
    ({"topics": ["a"], "episodes": [{"number": 1, "topic": "b"}]}, "duplicate episode numbers: 1"),
    ({"batch_id": "../etc", "topics": ["a"]}, "batch_id"),
    ({"batch_id": "a" * 65, "topics": ["a"]}, "batch_id"),
    ({"batch_id": "has space", "topics": ["a"]}, "batch_id"),
    ({}, "at least one episode"),
    ({"topics": []}, "at least one episode"),
    ({"episodes": [{"number": 0, "topic": "a"}]}, "episodes.0.number"),
    ({"episodes": [{"number": 100000, "topic": "a"}]}, "episodes.0.number"),
    ({"episodes": [{"number": True, "topic": "a"}]}, "episodes.0.number"),
    ({"episodes": [{"number": "3", "topic": "a"}]}, "episodes.0.number"),
    ({"episodes": [{"number": 1, "topic": "   "}]}, "topic is blank"),
    ({"episodes": [{"number": 1}]}, "episodes.0.topic"),
    ({"episodes": [{"number": 1, "topic": "a", "extra": 1}]}, "episodes.0.extra: unknown field"),
    ({"topics": ["a"], "strategy": "huge_batch"}, "strategy"),
    ({"topics": ["a"], "budget_usd": -1}, "budget_usd"),
    ({"topics": ["a"], "priority": "high"}, "priority"),
    ({"starting_episode": 99999, "topics": ["a", "b"]}, "run past 99999"),
    ([1, 2], "must be a JSON object"),
])
def test_invalid_manifests_name_their_problem(doc: object, expected: str) -> None:
    assert expected in problems(doc)


def test_every_problem_is_named_at_once() -> None:
    text = problems({"batch_id": "bad id", "topics": ["a"], "colour": 1, "strategy": "x"})
    assert "batch_id" in text and "colour" in text and "strategy" in text


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"topics": ["a"], "budget_usd": NaN}', "finite"),
    (b'{"topics": ["a"], "budget_usd": Infinity}', "finite"),
    (b'{"topics": ["a"], "budget_usd": 1e999999}', "too large"),
    (b'{"topics": ["a"], "priority": ' + b"9" * 5000 + b"}", "too large"),
    (b'{"topics": ["a"], "topics": ["b"]}', "duplicate key 'topics'"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"topics": ["caf\xe9"]}', "not UTF-8"),
    (b'{"topics": ["a"]', "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_json_hazards_are_problems(raw: bytes, expected: str) -> None:
    assert expected in problems(raw)


def test_sources_outside_the_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "ok.md").write_text("fine")
    (tmp_path / "secret.md").write_text("no")
    m = check({"episodes": [{"number": 1, "topic": "a", "sources": ["ok.md", "https://example.org/x"]}]}, [root])
    assert m.all_episodes()[0].sources == ["ok.md", "https://example.org/x"]
    text = problems({"episodes": [{"number": 1, "topic": "a", "sources": ["../secret.md"]}]}, [root])
    assert "episode 1" in text


def test_file_checks(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"topics": ["a"]}))
    assert check_file(good, 1024, [tmp_path]).manifest.all_episodes()[0].topic == "a"
    link = tmp_path / "link.json"
    os.symlink(good, link)
    with pytest.raises(ManifestProblem, match="symbolic link"):
        check_file(link, 1024, [tmp_path])
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"topics": ["a" * 400] * 10}))
    with pytest.raises(ManifestProblem, match="over the limit"):
        check_file(big, 1024, [tmp_path])
    with pytest.raises(ManifestProblem, match="not a regular file"):
        check_file(tmp_path, 1024, [tmp_path])
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ManifestProblem, match="not a regular file"):
        check_file(fifo, 1024, [tmp_path])


def test_the_episode_count_hint_counts_what_a_manifest_lists_and_never_raises(tmp_path: Path) -> None:
    from podspool.daemon.intake.validate import episode_count_hint

    def hint(content: bytes, max_bytes: int = 10_000) -> int:
        path = tmp_path / "m.json"
        path.write_bytes(content)
        return episode_count_hint(path, max_bytes)

    doc = {"topics": ["A", "B"], "episodes": [{"number": 5, "topic": "E"}]}
    assert hint(json.dumps(doc).encode()) == 3
    assert hint(json.dumps({"topics": ["A"] * 40}).encode()) == 40
    assert hint(json.dumps({"topics": "not a list"}).encode()) == 0
    assert hint(b"[1, 2]") == 0 and hint(b"{not json") == 0 and hint(b"\xff\xfe") == 0
    assert hint(json.dumps(doc).encode(), max_bytes=5) == 0  # over the size limit: not read at all
    assert episode_count_hint(tmp_path / "gone.json", 10_000) == 0
