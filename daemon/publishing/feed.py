"""`podspool feed`: <spool>/feed/feed.xml, an RSS 2.0 podcast feed of every finished episode.

<spool>/feed/ is the folder to publish (serve it at `[publish] base_url`): feed.xml, and per episode
<episode_id>/episode.mp3, chapters.json and transcript.vtt as hard links to the episode's own files (no
extra bytes). So the enclosure URLs never change when a batch is archived, and a web server never needs
to see manifests or logs.

The feed only reads the spool (done/ and the archive) and writes only feed/, each file whole: it may run
while a daemon runs, and a kill -9 at any point leaves the previous feed.xml or the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podspool.daemon.core.batch_views import parse_time
from podspool.daemon.publishing import archive
from podspool.daemon.spool import Spool, read_manifest
from podspool.stages import artifacts, fsio
from podspool.stages.publish.chapters import clock
from podspool.stages.settings import PublishSettings

FEED_DIR = "feed"
FEED_XML = "feed.xml"
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
PUBLISHED = (artifacts.EPISODE_MP3, artifacts.CHAPTERS_JSON, artifacts.TRANSCRIPT_VTT)
MIME = {artifacts.EPISODE_MP3: "audio/mpeg", artifacts.CHAPTERS_JSON: "application/json+chapters",
        artifacts.TRANSCRIPT_VTT: "text/vtt"}


@dataclass
class Entry:
    episode_id: str
    batch_id: str
    folder: Path
    number: int
    title: str
    published: datetime
    seconds: float
    notes: str


def _read_entry(folder: Path) -> Entry | None:
    """An episode fit for the feed (finished, with a published mp3), or None."""
    try:
        m = read_manifest(folder)
        audio = fsio.read_json(folder / artifacts.AUDIO_JSON)
        notes = (folder / artifacts.SHOWNOTES_MD).read_text(encoding="utf-8")
        if m.status != "done" or not (folder / artifacts.EPISODE_MP3).is_file():
            return None
    except (OSError, ValueError):
        return None  # not published (older episodes), or moved away while we read: found again there
    publish = audio.get("publish") or {}
    when = parse_time(m.finished_at) or (folder / artifacts.AUDIO_JSON).stat().st_mtime
    return Entry(episode_id=m.session_id, batch_id=m.batch_id, folder=folder, number=m.episode_number,
                 title=publish.get("title") or m.title or m.topic, published=datetime.fromtimestamp(when, UTC),
                 seconds=float(audio.get("seconds") or 0.0), notes=notes)


def entries(root: Path) -> list[Entry]:
    """Finished episodes of done/ and of the archive, each once, oldest first.

    done/ is listed before the archive: an episode archived meanwhile is then seen twice, never missed.
    """
    found: dict[str, Entry] = {}
    folders = [loc.folder for loc in Spool(root).scan() if loc.location == "done"]
    folders += [a.folder for a in archive.archived_episodes(root)]
    for folder in folders:
        if folder.name in found:
            continue
        entry = _read_entry(folder) or _read_entry(_moved(root, folder))
        if entry is not None:
            found[entry.episode_id] = entry
    return sorted(found.values(), key=lambda e: (e.published, e.batch_id, e.number))


def _moved(root: Path, folder: Path) -> Path:
    """Where an episode of done/ went if it was archived while we read it."""
    for a in archive.archived_episodes(root):
        if a.episode_id == folder.name:
            return a.folder
    return folder


def _link_into(entry: Entry, root: Path, target_dir: Path) -> None:
    """feed/<id>/<file> becomes another name of the episode's file (link under a temp name, rename over)."""
    if not target_dir.is_dir():
        target_dir.mkdir(mode=0o755)
        fsio.fsync_dir(target_dir.parent)
    for name in PUBLISHED:
        dst = target_dir / name
        for folder in (entry.folder, _moved(root, entry.folder)):
            src = folder / name
            try:
                if dst.exists() and os.path.samefile(src, dst):
                    break
                tmp = fsio.temp_name_for(dst)
                os.link(src, tmp)
            except FileNotFoundError:
                continue  # archived while we linked: try where it went
            try:
                fsio.crashpoint(f"feed link {entry.episode_id}/{name}")  # test hook
                os.replace(tmp, dst)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsio.fsync_dir(target_dir)
            break


class _PodcastIndex:
    """feedgen extension for the podcast namespace (Podcasting 2.0): chapters and transcript per item."""

    def extend_ns(self) -> dict[str, str]:
        return {"podcast": PODCAST_NS}

    def extend_rss(self, feed: Any) -> Any:
        return feed

    def extend_atom(self, feed: Any) -> Any:
        return feed


class _PodcastIndexEntry(_PodcastIndex):
    def __init__(self) -> None:
        self.links: list[tuple[str, str, str]] = []  # (element, url, type)

    def extend_rss(self, item: Any) -> Any:
        from lxml import etree

        for element, url, mime in self.links:
            etree.SubElement(item, f"{{{PODCAST_NS}}}{element}", url=url, type=mime)
        return item


def render(items: list[Entry], show: PublishSettings, base_url: str) -> bytes:
    """The RSS 2.0 document (feedgen, with the itunes and podcast namespaces)."""
    from feedgen.feed import FeedGenerator

    base = base_url.rstrip("/")
    fg = FeedGenerator()
    fg.load_extension("podcast")
    fg.register_extension("podcastindex", _PodcastIndex, _PodcastIndexEntry)
    fg.title(show.title)
    fg.description(show.description)
    fg.language(show.language)
    fg.author({"name": show.author, **({"email": show.email} if show.email else {})})
    fg.link(href=f"{base}/{FEED_XML}", rel="self")
    fg.link(href=f"{base}/", rel="alternate")  # after "self": feedgen's RSS <link> is the last link given
    fg.generator("podspool")
    fg.podcast.itunes_author(show.author)
    fg.podcast.itunes_summary(show.description)
    fg.podcast.itunes_category(show.category)
    fg.podcast.itunes_explicit("yes" if show.explicit else "no")
    if show.email:
        fg.podcast.itunes_owner(name=show.author, email=show.email)
    if show.image:
        fg.image(url=show.image, title=show.title, link=f"{base}/")
        fg.podcast.itunes_image(show.image)
    for e in items:  # feedgen puts each new entry first: the newest episode leads the feed
        url = f"{base}/{e.episode_id}/"
        fe = fg.add_entry()
        fe.guid(f"podspool:{e.episode_id}", permalink=False)  # the episode id never changes
        fe.title(e.title)
        fe.description(e.notes)
        fe.published(e.published)
        fe.enclosure(url + artifacts.EPISODE_MP3, str((e.folder / artifacts.EPISODE_MP3).stat().st_size),
                     MIME[artifacts.EPISODE_MP3])
        fe.podcast.itunes_duration(clock(e.seconds))
        fe.podcast.itunes_episode(e.number)
        fe.podcast.itunes_explicit("yes" if show.explicit else "no")
        fe.podcastindex.links = [("chapters", url + artifacts.CHAPTERS_JSON, MIME[artifacts.CHAPTERS_JSON]),
                                 ("transcript", url + artifacts.TRANSCRIPT_VTT, MIME[artifacts.TRANSCRIPT_VTT])]
    return bytes(fg.rss_str(pretty=True))


def write_feed(root: Path, show: PublishSettings, base_url: str | None = None) -> tuple[Path, int]:
    """Link every finished episode's files into <spool>/feed/ and write feed.xml whole; (path, episodes)."""
    out = root / FEED_DIR
    out.mkdir(mode=0o755, exist_ok=True)
    sp = Spool(root)
    sp.clean_temps(out)  # a killed earlier run's temp files (a live writer's are kept)
    items = entries(root)
    for e in items:
        sp.clean_temps(out / e.episode_id)
        _link_into(e, root, out / e.episode_id)
    fsio.write_bytes(out / FEED_XML, render(items, show, base_url or show.base_url), mode=0o644)
    return out / FEED_XML, len(items)
