"""`podspool feed`: <spool>/feed/feed.xml, an RSS 2.0 podcast feed of every finished episode.

<spool>/feed/ is the folder to publish (serve it at `[publish] base_url`): feed.xml, the cover
(cover-<hash>.png or .jpg), and per episode <episode_id>/episode.mp3, chapters.json and transcript.vtt as
hard links to the episode's own files (no extra bytes). So the enclosure URLs never change when a batch is
archived, and a web server never needs to see manifests or logs.

The feed only reads the spool (done/ and the archive) and writes only feed/, each file whole: it may run
while a daemon runs, and a kill -9 at any point leaves the previous feed.xml or the new one. What the
feed must hold to be listed (Apple Podcasts, Podcasting 2.0) is checked by feedcheck.py first.
"""

from __future__ import annotations

import html
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from podspool.daemon.core.batch_views import parse_time
from podspool.daemon.publishing import archive, notes
from podspool.daemon.publishing.artwork import COVER_PREFIX, Artwork
from podspool.daemon.publishing.categories import Category
from podspool.daemon.spool import Spool, read_manifest
from podspool.stages import artifacts, fsio
from podspool.stages.publish.public import public_text
from podspool.stages.settings import ProductionSettings
from podspool.stages.show import resolve

FEED_DIR = "feed"
FEED_XML = "feed.xml"
ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
# Podcasting 2.0's podcast:guid: a UUIDv5 of the feed URL (scheme and trailing slashes removed) in this namespace
PODCAST_GUID_NAMESPACE = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")
PUBLISHED = (artifacts.EPISODE_MP3, artifacts.CHAPTERS_JSON, artifacts.TRANSCRIPT_VTT)
MIME = {artifacts.EPISODE_MP3: "audio/mpeg", artifacts.CHAPTERS_JSON: "application/json+chapters",
        artifacts.TRANSCRIPT_VTT: "text/vtt"}
# the show's roles as the Podcast Taxonomy names them (podcast:person role); it has no moderator, who hosts
TAXONOMY_ROLE = {"host": "host", "guest": "guest", "narrator": "narrator", "moderator": "host"}
_VOICE = re.compile(r"<v(?:\.[^ >]*)? ([^>]+)>")


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
    bytes: int = 0
    cast: list[tuple[str, str]] = field(default_factory=list)  # (name, podcast:person role) of who speaks
    language: str = "en"
    season: int = 1  # set by seasons(): a batch is a season


@dataclass(frozen=True)
class Channel:
    """The show as the feed presents it, every value decided (feedcheck.py judges it)."""

    title: str
    description: str
    author: str
    owner_name: str
    owner_email: str | None
    language: str
    category: Category | None
    explicit: bool
    type: str
    base: str  # where feed/ is served, without a trailing slash
    artwork: Artwork

    @property
    def feed_url(self) -> str:
        return f"{self.base}/{FEED_XML}"

    @property
    def guid(self) -> str:
        return podcast_guid(self.feed_url)


def podcast_guid(feed_url: str) -> str:
    """podcast:guid as the namespace defines it: UUIDv5 of the URL without its scheme and trailing slashes."""
    parts = urlsplit(feed_url)
    bare = feed_url[len(parts.scheme) + 3:] if parts.scheme and feed_url[len(parts.scheme):].startswith("://") \
        else feed_url
    return str(uuid.uuid5(PODCAST_GUID_NAMESPACE, bare.rstrip("/")))


def _mp3_seconds(path: Path) -> float | None:
    from mutagen import MutagenError
    from mutagen.mp3 import MP3

    try:
        info = MP3(path).info
    except (MutagenError, OSError):
        return None
    return float(info.length) if info is not None else None


def _speakers(folder: Path) -> list[str]:
    """Who speaks, in order of first words: the transcript's voices."""
    try:
        text = (folder / artifacts.TRANSCRIPT_VTT).read_text(encoding="utf-8")
    except OSError:
        return []
    return list(dict.fromkeys(html.unescape(m.group(1).strip()) for m in _VOICE.finditer(text)))


def _read_entry(folder: Path, production: ProductionSettings) -> Entry | None:
    """An episode fit for the feed (finished, with a published mp3), or None."""
    try:
        m = read_manifest(folder)
        audio = fsio.read_json(folder / artifacts.AUDIO_JSON)
        text = (folder / artifacts.SHOWNOTES_MD).read_text(encoding="utf-8")
        if m.status != "done" or not (folder / artifacts.EPISODE_MP3).is_file():
            return None
        size = (folder / artifacts.EPISODE_MP3).stat().st_size
    except (OSError, ValueError):
        return None  # not published (older episodes), or moved away while we read: found again there
    publish = audio.get("publish") or {}
    when = parse_time(m.finished_at) or (folder / artifacts.AUDIO_JSON).stat().st_mtime
    # the show as the stages saw it: the manifest's fields over [production]'s defaults
    show = resolve(production.show_defaults(), m.show, hosts=production.hosts)
    roles = {member.name: TAXONOMY_ROLE.get(member.role, "host") for member in show.cast}
    spoken = _speakers(folder) or list(roles)
    seconds = _mp3_seconds(folder / artifacts.EPISODE_MP3) or float(audio.get("seconds") or 0.0)
    return Entry(episode_id=m.session_id, batch_id=m.batch_id, folder=folder, number=m.episode_number,
                 title=public_text(publish.get("title") or m.title or m.topic),
                 published=datetime.fromtimestamp(when, UTC), seconds=seconds, notes=public_text(text), bytes=size,
                 cast=[(name, roles.get(name, "host")) for name in spoken], language=show.language)


def entries(root: Path, production: ProductionSettings | None = None) -> list[Entry]:
    """Finished episodes of done/ and of the archive, each once, oldest first, each with its season.

    done/ is listed before the archive: an episode archived meanwhile is then seen twice, never missed.
    """
    production = production or ProductionSettings()
    found: dict[str, Entry] = {}
    folders = [loc.folder for loc in Spool(root).scan() if loc.location == "done"]
    folders += [a.folder for a in archive.archived_episodes(root)]
    for folder in folders:
        if folder.name in found:
            continue
        entry = _read_entry(folder, production) or _read_entry(_moved(root, folder), production)
        if entry is not None:
            found[entry.episode_id] = entry
    items = sorted(found.values(), key=lambda e: (e.published, e.batch_id, e.number))
    seasons(items)
    return items


def seasons(items: list[Entry]) -> None:
    """A batch is a season, numbered in the order the batches first published (oldest first): a new batch
    never renumbers an older one, and episode numbers, which restart in each batch, stay apart."""
    order: dict[str, int] = {}
    for e in items:  # oldest first
        order.setdefault(e.batch_id, len(order) + 1)
    for e in items:
        e.season = order[e.batch_id]


def _moved(root: Path, folder: Path) -> Path:
    """Where an episode of done/ went if it was archived while we read it."""
    for a in archive.archived_episodes(root):
        if a.episode_id == folder.name:
            return a.folder
    return folder


def channel_language(configured: str | None, items: list[Entry], default: str | None) -> str:
    """[publish] language, else the language most of the episodes are in, else [production]'s, else en."""
    if configured:
        return configured
    spoken = Counter(e.language for e in items).most_common(1)
    return spoken[0][0] if spoken else (default or "en")


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


def _yes_no(flag: bool) -> str:
    return "true" if flag else "false"  # Apple's values for itunes:explicit (no longer yes/no/clean)


class _Namespaces:
    """feedgen extension writing the itunes and podcast (Podcasting 2.0) elements of the channel. feedgen's
    own podcast extension is not used: it writes itunes:explicit only as yes/no/clean, not Apple's
    true/false, and knows nothing of the podcast namespace."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.people: list[tuple[str, str]] = []

    def extend_ns(self) -> dict[str, str]:
        return {"itunes": ITUNES_NS, "podcast": PODCAST_NS}

    def extend_rss(self, feed: Any) -> Any:
        from lxml import etree

        ch, c = feed[0], self.channel
        if c is None:
            return feed

        def add(parent: Any, tag: str, text: str | None = None, attrs: dict[str, str] | None = None) -> Any:
            el = etree.SubElement(parent, tag, attrs or {})
            if text is not None:
                el.text = text
            return el

        it, pc = f"{{{ITUNES_NS}}}", f"{{{PODCAST_NS}}}"
        add(ch, it + "author", c.author)
        add(ch, it + "summary", c.description)
        add(ch, it + "type", c.type)
        add(ch, it + "explicit", _yes_no(c.explicit))
        add(ch, it + "image", attrs={"href": c.artwork.href(c.base)})
        owner = add(ch, it + "owner")
        add(owner, it + "name", c.owner_name)
        if c.owner_email:
            add(owner, it + "email", c.owner_email)
        if c.category is not None:
            top = add(ch, it + "category", attrs={"text": c.category.name})
            if c.category.sub:
                add(top, it + "category", attrs={"text": c.category.sub})
        add(ch, pc + "guid", c.guid)
        # locked: no other host may import the feed unless its owner confirms by mail (podcast:locked)
        add(ch, pc + "locked", "yes", {"owner": c.owner_email} if c.owner_email else None)
        for name, role in self.people:
            add(ch, pc + "person", name, {"role": role})
        return feed

    def extend_atom(self, feed: Any) -> Any:
        return feed


class _NamespacesEntry:
    """The same for one item: explicit, season and episode, people, transcript and chapters."""

    def __init__(self) -> None:
        self.entry: Entry | None = None
        self.explicit = False
        self.base = ""
        self.summary = ""  # the notes as plain text, as <description> has them

    def extend_ns(self) -> dict[str, str]:
        return {"itunes": ITUNES_NS, "podcast": PODCAST_NS}

    def extend_rss(self, item: Any) -> Any:
        from lxml import etree

        e = self.entry
        if e is None:
            return item
        it, pc = f"{{{ITUNES_NS}}}", f"{{{PODCAST_NS}}}"
        url = f"{self.base}/{e.episode_id}/"
        for tag, text in ((it + "duration", str(int(round(e.seconds)))), (it + "episodeType", "full"),
                          (it + "episode", str(e.number)), (it + "season", str(e.season)),
                          (it + "explicit", _yes_no(self.explicit)),
                          (it + "summary", self.summary),
                          (pc + "season", str(e.season)), (pc + "episode", str(e.number))):
            etree.SubElement(item, tag).text = text
        for name, role in e.cast:
            etree.SubElement(item, pc + "person", role=role).text = name
        if (e.folder / artifacts.TRANSCRIPT_VTT).exists():
            # timed WebVTT: captions, in the episode's language (podcast:transcript)
            etree.SubElement(item, pc + "transcript", url=url + artifacts.TRANSCRIPT_VTT,
                             type=MIME[artifacts.TRANSCRIPT_VTT], language=e.language, rel="captions")
        if (e.folder / artifacts.CHAPTERS_JSON).exists():
            etree.SubElement(item, pc + "chapters", url=url + artifacts.CHAPTERS_JSON,
                             type=MIME[artifacts.CHAPTERS_JSON])
        return item

    def extend_atom(self, item: Any) -> Any:
        return item


def render(items: list[Entry], channel: Channel) -> bytes:
    """The RSS 2.0 document: feedgen writes RSS itself, _Namespaces the itunes and podcast elements."""
    from feedgen.feed import FeedGenerator

    base = channel.base
    fg = FeedGenerator()
    fg.register_extension("podspool", _Namespaces, _NamespacesEntry)
    fg.podspool.channel = channel
    fg.podspool.people = items[-1].cast if items else []  # the show's usual people: the newest episode's
    fg.title(channel.title)
    fg.description(channel.description)
    fg.language(channel.language)
    if channel.owner_email:
        fg.author({"name": channel.owner_name, "email": channel.owner_email})
    fg.link(href=channel.feed_url, rel="self")
    fg.link(href=f"{base}/", rel="alternate")  # after "self": feedgen's RSS <link> is the last link given
    fg.image(url=channel.artwork.href(base), title=channel.title, link=f"{base}/")
    fg.generator("podspool")
    for e in items:  # feedgen puts each new entry first: the newest episode leads the feed
        url = f"{base}/{e.episode_id}/"
        fe = fg.add_entry()
        fe.guid(f"podspool:{e.episode_id}", permalink=False)  # batch and number: the same when re-voiced
        fe.title(e.title)
        plain = notes.clipped(notes.plain(e.notes))
        fe.description(plain)
        fe.content(notes.html(e.notes), type="CDATA")
        fe.published(e.published)
        fe.enclosure(url + artifacts.EPISODE_MP3, str(e.bytes), MIME[artifacts.EPISODE_MP3])
        fe.podspool.entry, fe.podspool.explicit, fe.podspool.base, fe.podspool.summary = \
            e, channel.explicit, base, plain
    return bytes(fg.rss_str(pretty=True))


def write_feed(root: Path, channel: Channel, items: list[Entry]) -> Path:
    """Publish the cover, link every finished episode's files into <spool>/feed/, write feed.xml whole."""
    out = root / FEED_DIR
    out.mkdir(mode=0o755, exist_ok=True)
    sp = Spool(root)
    sp.clean_temps(out)  # a killed earlier run's temp files (a live writer's are kept)
    art = channel.artwork
    if art.name and art.data is not None and not (out / art.name).is_file():
        fsio.write_bytes(out / art.name, art.data, mode=0o644)
    for e in items:
        sp.clean_temps(out / e.episode_id)
        _link_into(e, root, out / e.episode_id)
    fsio.write_bytes(out / FEED_XML, render(items, channel), mode=0o644)
    for old in out.glob(f"{COVER_PREFIX}*"):  # covers feed.xml no longer names
        if old.name != art.name and old.is_file():
            old.unlink()
    return out / FEED_XML
