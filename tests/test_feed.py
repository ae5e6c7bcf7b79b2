"""`podspool feed`, read by a real feed parser (feedparser), and killed at every durable step."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import feedparser
import pytest
from podspool_helpers import cli, read_json
from publish_helpers import EIDS, copy_spool, finished_spool, temp_files

BASE = "https://pod.example.org/show"


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_spool(tmp_path_factory.mktemp("feed") / "spool")


def _feed(spool: Path, *extra: str, env: dict[str, str] | None = None) -> int:
    return cli("feed", "--spool", str(spool), "--base-url", BASE, *extra, env=env, timeout=60).returncode


def _check_feed(spool: Path, base: str = BASE) -> feedparser.FeedParserDict:
    """Every done episode, whole, with links that resolve to the episode's own files under feed/."""
    d = feedparser.parse((spool / "feed" / "feed.xml").read_bytes())
    assert not d.bozo, d.get("bozo_exception")
    assert d.version == "rss20"
    assert {e.id for e in d.entries} == {f"podspool:{eid}" for eid in EIDS}
    for e in d.entries:
        eid = e.id.split(":", 1)[1]
        folder = next(p for p in (spool / "done" / eid, *spool.glob(f"archive/*/episodes/{eid}")) if p.is_dir())
        enclosure = next(link for link in e.links if link.rel == "enclosure")
        assert enclosure.type == "audio/mpeg"
        assert int(enclosure.length) == (folder / "episode.mp3").stat().st_size
        seconds = read_json(folder / "audio.json")["seconds"]
        m, s = e.itunes_duration.split(":")
        assert abs(int(m) * 60 + int(s) - seconds) <= 1
        assert e.podcast_chapters["type"] == "application/json+chapters"
        assert e.podcast_transcript["type"] == "text/vtt"
        for url, name in ((enclosure.href, "episode.mp3"), (e.podcast_chapters["url"], "chapters.json"),
                          (e.podcast_transcript["url"], "transcript.vtt")):
            assert url == f"{base}/{eid}/{name}"
            served = spool / "feed" / url[len(base) + 1:]  # what a web server rooted at feed/ would send
            assert os.path.samefile(served, folder / name)
        assert e.published_parsed is not None and e.title
    return d


def test_feed_lists_every_done_episode_for_a_feed_reader(spool: Path) -> None:
    (spool / "podspool.toml").write_text((spool / "podspool.toml").read_text() + """
[publish]
title = "Deep Questions"
author = "Ada Host"
description = "Two hosts, one question."
language = "en-gb"
image = "https://pod.example.org/cover.png"
explicit = false
category = "Science"
email = "ada@example.org"
""")
    assert _feed(spool) == 0
    d = _check_feed(spool)
    f = d.feed
    assert (f.title, f.language, f.author, f.subtitle) == ("Deep Questions", "en-gb", "Ada Host",
                                                          "Two hosts, one question.")
    assert f.image.href == "https://pod.example.org/cover.png"
    assert b"<itunes:explicit>no</itunes:explicit>" in (spool / "feed" / "feed.xml").read_bytes()
    assert f.tags[0].term == "Science"
    assert [e.itunes_episode for e in d.entries] == ["2", "1"] or d.entries[0].published >= d.entries[1].published
    assert temp_files(spool / "feed") == []


def test_feed_is_unchanged_by_a_rerun_and_refuses_a_bad_url(spool: Path) -> None:
    assert _feed(spool) == 0
    first = {e.id: e.enclosures[0].href for e in feedparser.parse(spool / "feed" / "feed.xml").entries}
    assert _feed(spool) == 0
    again = {e.id: e.enclosures[0].href for e in feedparser.parse(spool / "feed" / "feed.xml").entries}
    assert first == again
    assert _feed(spool, "--base-url", "ftp://nope") == 2


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_kill_9_at_every_durable_step_of_feed(spool: Path, tmp_path: Path) -> None:
    """A crash leaves the old feed.xml or the new one, never a torn one; the next run finishes the job."""
    old = "https://old.example.org"
    count_file = tmp_path / "ops.log"
    probe = copy_spool(spool, tmp_path / "probe")
    shutil.rmtree(probe / "feed", ignore_errors=True)
    assert _feed(probe, env={"PODSPOOL_CRASH_COUNT": str(count_file)}) == 0
    n_ops = len(count_file.read_text().splitlines())
    assert n_ops == 3 * len(EIDS) + 1  # three links per episode, then feed.xml
    for k in range(1, n_ops + 1):  # a first run, killed at each step
        s = copy_spool(probe, tmp_path / f"a{k}")
        shutil.rmtree(s / "feed")
        assert _feed(s, env={"PODSPOOL_CRASH_AT": str(k)}) == -9, k
        assert not (s / "feed" / "feed.xml").exists(), k  # feed.xml is the last step
        _rerun_and_check(s, k)
    for k in (1, 2, 3):  # a later run, killed at each step: two stale links, then feed.xml
        s = copy_spool(probe, tmp_path / f"b{k}")
        assert cli("feed", "--spool", str(s), "--base-url", old).returncode == 0
        for eid in EIDS:  # replaced since: the links must be made again
            (s / "feed" / eid / "episode.mp3").unlink()
        assert _feed(s, env={"PODSPOOL_CRASH_AT": str(k)}) == -9, k
        d = feedparser.parse((s / "feed" / "feed.xml").read_bytes())  # never torn: the old one, whole
        assert not d.bozo and {e.enclosures[0].href[: len(old)] for e in d.entries} == {old}, k
        _rerun_and_check(s, k)


def _rerun_and_check(s: Path, k: int) -> None:
    assert _feed(s) == 0, k
    _check_feed(s)
    assert temp_files(s / "feed") == [], k
    assert sorted(p.name for p in (s / "done").iterdir()) == EIDS, k
