"""`podspool feed`, read by a real feed parser (feedparser) and an XML reader (lxml), its cover by Pillow, its
problems named by `--check`, and killed at every durable step."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import feedparser
import pytest
import webvtt
from lxml import etree
from mutagen.mp3 import MP3
from PIL import Image
from podspool_helpers import cli
from publish_helpers import BASE, EIDS, SHOW, copy_spool, finished_spool, temp_files

NS = {"itunes": "http://www.itunes.com/dtds/podcast-1.0.dtd", "podcast": "https://podcastindex.org/namespace/1.0",
      "content": "http://purl.org/rss/1.0/modules/content/"}
# written here from the Podcasting 2.0 namespace's text, not imported from podspool
PODCAST_NAMESPACE = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")
MARKDOWN = re.compile(r"^\s*#|\*\*|__|`|\]\(|^\s*[-*+] |\\[\\`*_\[\]<>#]", re.MULTILINE)


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    s = finished_spool(tmp_path_factory.mktemp("feed") / "spool")
    assert _feed(s) == 0
    return s


def _feed(spool: Path, *extra: str, env: dict[str, str] | None = None) -> int:
    return cli("feed", "--spool", str(spool), "--base-url", BASE, *extra, env=env, timeout=60).returncode


def _xml(spool: Path) -> etree._Element:
    return etree.fromstring((spool / "feed" / "feed.xml").read_bytes())


def _folder(spool: Path, eid: str) -> Path:
    return next(p for p in (spool / "done" / eid, *spool.glob(f"archive/*/episodes/{eid}")) if p.is_dir())


def _check_feed(spool: Path, base: str = BASE) -> feedparser.FeedParserDict:
    """Every done episode, whole, with links that resolve to the episode's own files under feed/."""
    d = feedparser.parse((spool / "feed" / "feed.xml").read_bytes())
    assert not d.bozo, d.get("bozo_exception")
    assert d.version == "rss20"
    assert {e.id for e in d.entries} == {f"podspool:{eid}" for eid in EIDS}
    for e in d.entries:
        eid = e.id.split(":", 1)[1]
        folder = _folder(spool, eid)
        enclosure = next(link for link in e.links if link.rel == "enclosure")
        assert enclosure.type == "audio/mpeg"
        assert int(enclosure.length) == (folder / "episode.mp3").stat().st_size
        assert abs(int(e.itunes_duration) - MP3(folder / "episode.mp3").info.length) <= 1
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
    d = _check_feed(spool)
    f = d.feed
    assert (f.title, f.language, f.author, f.subtitle) == ("Deep Questions", "en-gb", "Ada Host",
                                                          "Two hosts, one question.")
    assert f.tags[0].term == "Science"
    assert [e.itunes_episode for e in d.entries] == ["2", "1"] or d.entries[0].published >= d.entries[1].published
    assert temp_files(spool / "feed") == []


def test_channel_has_what_apple_and_podcasting_2_ask(spool: Path) -> None:
    d = feedparser.parse((spool / "feed" / "feed.xml").read_bytes())
    channel = _xml(spool).find("channel")
    assert channel is not None
    # artwork: a file under feed/, square, 1400-3000 px, RGB, its name's extension its format's
    href = d.feed.image.href
    assert href.startswith(BASE + "/") and channel.find("itunes:image", NS).get("href") == href
    cover = spool / "feed" / href[len(BASE) + 1:]
    with Image.open(cover) as im:
        assert im.format in ("PNG", "JPEG") and cover.suffix == {"PNG": ".png", "JPEG": ".jpg"}[im.format]
        assert im.width == im.height and 1400 <= im.width <= 3000 and im.mode == "RGB"
    owner = channel.find("itunes:owner", NS)
    assert owner is not None
    assert (owner.findtext("itunes:name", namespaces=NS), owner.findtext("itunes:email", namespaces=NS)) == \
        ("Ada Host", "ada@example.org")
    assert channel.findtext("itunes:explicit", namespaces=NS) == "false"
    assert channel.findtext("itunes:type", namespaces=NS) == "episodic"
    assert channel.find("itunes:category", NS).get("text") == "Science"
    feed_url = "pod.example.org/show/feed.xml"  # the feed's URL without its scheme
    assert channel.findtext("podcast:guid", namespaces=NS) == str(uuid.uuid5(PODCAST_NAMESPACE, feed_url))
    locked = channel.find("podcast:locked", NS)
    assert locked.text == "yes" and locked.get("owner") == "ada@example.org"
    assert channel.findtext("language") == "en-gb"


def test_items_carry_html_notes_plain_descriptions_and_their_people(spool: Path) -> None:
    d = feedparser.parse((spool / "feed" / "feed.xml").read_bytes())
    items = {i.findtext("guid"): i for i in _xml(spool).iter("item")}
    for e in d.entries:
        eid = e.id.split(":", 1)[1]
        item = items[e.id]
        html = item.findtext("content:encoded", namespaces=NS)
        assert e.content[0].type == "text/html" and "<h2>Chapters</h2>" in html and "<li>" in html
        for text in (e.description, item.findtext("itunes:summary", namespaces=NS)):
            assert text and not MARKDOWN.search(text), text
            assert "Chapters" in text and "<" not in text.replace("<v ", "")
        voices = list(dict.fromkeys(c.voice for c in webvtt.read(_folder(spool, eid) / "transcript.vtt")))
        people = [(p.text, p.get("role")) for p in item.findall("podcast:person", NS)]
        assert people == [(v, "host") for v in voices] and len(voices) == 2
        number = str(int(eid.split("_")[1]))
        assert item.findtext("podcast:episode", namespaces=NS) == item.findtext("itunes:episode", namespaces=NS) \
            == number
        assert item.findtext("podcast:season", namespaces=NS) == item.findtext("itunes:season", namespaces=NS) \
            == "1"
        assert item.findtext("itunes:explicit", namespaces=NS) == "false"


def test_a_revoiced_episode_keeps_its_guid_and_a_new_batch_is_a_new_season(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    redone = s / "done" / EIDS[0] / "episode.mp3"
    new_take = redone.read_bytes() + bytes(4096)  # another take: other bytes, same episode
    redone.unlink()
    redone.write_bytes(new_take)
    later = s / "done" / "ep_001_later"  # the first episode of a batch finished after this one
    shutil.copytree(s / "done" / EIDS[1], later)
    manifest = json.loads((later / "manifest.json").read_text())
    manifest.update(session_id="ep_001_later", batch_id="later", episode_number=1,
                    finished_at="2099-01-01T00:00:00+00:00")
    (later / "manifest.json").write_text(json.dumps(manifest))
    cast = s / "done" / EIDS[1] / "manifest.json"  # a show whose cast has roles: the feed names them
    manifest = json.loads(cast.read_text())
    manifest["show"]["cast"] = [{"name": "Alex", "role": "moderator"}, {"name": "Sam", "role": "guest"}]
    cast.write_text(json.dumps(manifest))
    (s / "podspool.toml").write_text((s / "podspool.toml").read_text().replace("explicit = false",
                                                                             "explicit = true"))
    assert _feed(s) == 0
    items = {i.findtext("guid"): i for i in _xml(s).iter("item")}
    assert set(items) == {f"podspool:{eid}" for eid in [*EIDS, "ep_001_later"]}
    assert items[f"podspool:{EIDS[0]}"].find("enclosure").get("length") == str(len(new_take))
    seasons = {g: (i.findtext("itunes:season", namespaces=NS), i.findtext("itunes:episode", namespaces=NS))
               for g, i in items.items()}
    assert seasons == {f"podspool:{EIDS[0]}": ("1", "1"), f"podspool:{EIDS[1]}": ("1", "2"),
                       "podspool:ep_001_later": ("2", "1")}
    assert [(p.text, p.get("role")) for p in items[f"podspool:{EIDS[1]}"].findall("podcast:person", NS)] == \
        [("Alex", "host"), ("Sam", "guest")]  # the Podcast Taxonomy has no moderator: who moderates hosts
    assert _xml(s).find("channel").findtext("itunes:explicit", namespaces=NS) == "true"
    assert {i.findtext("itunes:explicit", namespaces=NS) for i in items.values()} == {"true"}


def test_the_feed_speaks_the_language_of_its_show(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    for eid in EIDS:  # a German batch, and no [publish] language: the episodes' own decides
        path = s / "done" / eid / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["show"]["language"] = "de"
        path.write_text(json.dumps(manifest))
    (s / "podspool.toml").write_text((s / "podspool.toml").read_text().replace('language = "en-gb"\n', ""))
    assert _feed(s) == 0
    assert feedparser.parse((s / "feed" / "feed.xml").read_bytes()).feed.language == "de"
    assert {i.find("podcast:transcript", NS).get("language") for i in _xml(s).iter("item")} == {"de"}


def _image(path: Path, size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> Path:
    Image.new(mode, size, "white" if mode != "CMYK" else (0, 0, 0, 0)).save(path, format=fmt)
    return path


def test_check_names_every_problem_of_a_broken_show_at_once(spool: Path, tmp_path: Path) -> None:
    _image(tmp_path / "small.png", (500, 500))
    bad = tmp_path / "bad.toml"
    bad.write_text(SHOW.replace('owner_email = "ada@example.org"\n', "")
                   .replace('category = "Science"', 'category = "Sciense"') + 'image = "small.png"\n')
    before = (spool / "feed" / "feed.xml").read_bytes()
    r = cli("feed", "--spool", str(spool), "--config", str(bad), "--check")
    assert r.returncode == 2, r.stderr
    problems = [line for line in r.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, r.stderr
    assert any("owner_email is not set" in p for p in problems)
    assert any("500 x 500 px" in p and "1400 to 3000" in p for p in problems)
    assert any("'Sciense' is not one of Apple Podcasts' categories (did you mean 'Science'?)" in p
               for p in problems)
    r = cli("feed", "--spool", str(spool), "--config", str(bad))  # refused: the served feed stays as it was
    assert r.returncode == 2 and "not written" in r.stderr
    assert (spool / "feed" / "feed.xml").read_bytes() == before
    s = copy_spool(spool, tmp_path / "s")  # told to: written, the 500 px image replaced by a plain cover
    r = cli("feed", "--spool", str(s), "--config", str(bad), "--force")
    assert r.returncode == 0 and "owner_email is not set" in r.stderr, r.stderr
    href = feedparser.parse((s / "feed" / "feed.xml").read_bytes()).feed.image.href
    with Image.open(s / "feed" / href[len(BASE) + 1:]) as im:
        assert im.size == (1400, 1400)
    good = tmp_path / "good.toml"
    good.write_text(SHOW)
    r = cli("feed", "--spool", str(spool), "--config", str(good), "--check")
    assert r.returncode == 0 and "no problems (2 episodes)" in r.stdout, r.stderr


def test_check_judges_the_image_as_apple_does(spool: Path, tmp_path: Path) -> None:
    _image(tmp_path / "wide.jpg", (1600, 1400), mode="CMYK", fmt="JPEG")
    _image(tmp_path / "named.jpg", (1400, 1400))  # a PNG under a .jpg name
    for name, wanted in (("wide.jpg", ["1600 x 1400 px, not square", "colour mode CMYK"]),
                         ("named.jpg", ["a PNG file but its name does not end in .png"]),
                         ("missing.png", ["cannot be read"])):
        config = tmp_path / f"{name}.toml"
        config.write_text(SHOW + f'image = "{tmp_path / name}"\n')
        r = cli("feed", "--spool", str(spool), "--config", str(config), "--check")
        assert r.returncode == 2
        for text in wanted:
            assert text in r.stderr, (name, r.stderr)


def test_a_configured_cover_is_published_under_a_name_of_its_own(spool: Path, tmp_path: Path) -> None:
    s = copy_spool(spool, tmp_path / "s")
    buf = io.BytesIO()
    Image.new("RGB", (1600, 1600), (20, 90, 160)).save(buf, format="JPEG")
    (s / "art").mkdir()
    (s / "art" / "cover.jpeg").write_bytes(buf.getvalue())
    config = (s / "podspool.toml").read_text().replace('category = "Science"', 'category = "Astronomy"')
    (s / "podspool.toml").write_text(config + 'image = "art/cover.jpeg"\n')
    old = {p.name for p in (s / "feed").glob("cover-*")}
    assert _feed(s) == 0
    href = feedparser.parse((s / "feed" / "feed.xml").read_bytes()).feed.image.href
    served = s / "feed" / href[len(BASE) + 1:]
    assert served.suffix == ".jpg" and served.read_bytes() == buf.getvalue()
    assert {p.name for p in (s / "feed").glob("cover-*")} == {served.name} and served.name not in old
    category = _xml(s).find("channel").find("itunes:category", NS)  # a subcategory alone names its parent
    assert (category.get("text"), [c.get("text") for c in category]) == ("Science", ["Astronomy"])


def test_feed_is_unchanged_by_a_rerun_and_refuses_a_bad_url(spool: Path) -> None:
    first = {e.id: e.enclosures[0].href for e in feedparser.parse(spool / "feed" / "feed.xml").entries}
    assert _feed(spool) == 0
    again = {e.id: e.enclosures[0].href for e in feedparser.parse(spool / "feed" / "feed.xml").entries}
    assert first == again
    assert _feed(spool, "--base-url", "ftp://nope") == 2
    r = cli("feed", "--spool", str(spool), "--base-url", "http://localhost:8000", "--check")
    assert r.returncode == 2 and "only this machine or network can reach" in r.stderr


@pytest.mark.soak  # long: run by .ci/run under its own time bound (pytest -m soak)
def test_kill_9_at_every_durable_step_of_feed(spool: Path, tmp_path: Path) -> None:
    """A crash leaves the old feed.xml or the new one, never a torn one; the next run finishes the job."""
    old = "https://old.example.org"
    count_file = tmp_path / "ops.log"
    probe = copy_spool(spool, tmp_path / "probe")
    shutil.rmtree(probe / "feed", ignore_errors=True)
    assert _feed(probe, env={"PODSPOOL_CRASH_COUNT": str(count_file)}) == 0
    n_ops = len(count_file.read_text().splitlines())
    assert n_ops == 1 + 3 * len(EIDS) + 1  # the cover, three links per episode, then feed.xml
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
