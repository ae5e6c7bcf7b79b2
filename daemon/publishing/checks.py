"""The feed against what Apple Podcasts and Podcasting 2.0 require, every problem at once.

`prepare` turns `[publish]` into the Channel the feed presents and names each way it falls short: Apple's
required show tags (title, description, artwork of 1400-3000 px, a listed category, a language code,
explicit), the owner's address Apple and podcast:locked verify the show with, a feed URL directories can
reach, and episodes that carry a title, an audio file and a duration. `podspool feed --check` prints them;
`podspool feed` writes nothing while there are any, unless forced.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from podspool.daemon.publishing import artwork, categories
from podspool.daemon.publishing.feed import Channel, Entry
from podspool.stages.settings import PublishSettings

TEXT_CHARS = 255  # Apple: "tag values are limited to 255 characters unless otherwise specified"
DESCRIPTION_BYTES = 4000
EMAIL = re.compile(r"^[^@\s<>()]+@[^@\s<>()]+\.[A-Za-z0-9-]{2,}$")
ISO_639 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")  # en, en-us, pt-BR, gsw
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


@dataclass
class Report:
    channel: Channel
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth saying, not a reason to refuse


def url_problem(url: str, what: str) -> str | None:
    """Why a directory could not fetch from `url`, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} {url!r} is not an http(s) URL with a host"
    if parts.query or parts.fragment:
        return f"{what} {url!r} has a query or fragment; the feed's files are named under it"
    host = parts.hostname.lower()
    try:
        private = not ipaddress.ip_address(host).is_global
    except ValueError:
        private = host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host
    if private:
        return (f"{what} {url!r} names a host only this machine or network can reach; Apple Podcasts and "
                f"podcast indexes fetch the feed, cover and audio from there")
    return None


def _text(value: str, key: str, problems: list[str], limit_bytes: int | None = None) -> None:
    if not value.strip():
        problems.append(f"[publish] {key} is empty")
    elif limit_bytes is not None and len(value.encode()) > limit_bytes:
        problems.append(f"[publish] {key} is {len(value.encode())} bytes; Apple Podcasts takes at most {limit_bytes}")
    elif limit_bytes is None and len(value) > TEXT_CHARS:
        problems.append(f"[publish] {key} is {len(value)} characters; Apple Podcasts takes at most {TEXT_CHARS}")


def _owner_email(show: PublishSettings, problems: list[str]) -> str | None:
    email = (show.owner_email or show.email or "").strip() or None
    if show.owner_email and show.email and show.owner_email.strip() != show.email.strip():
        problems.append("[publish] owner_email and email (its earlier name) differ: keep owner_email only")
    if email is None:
        problems.append("[publish] owner_email is not set: itunes:owner needs it (Apple Podcasts verifies the "
                        "show by mail there) and podcast:locked names it as the owner")
    elif not EMAIL.match(email):
        problems.append(f"[publish] owner_email {email!r} is not an e-mail address")
    return email


def _artwork(show: PublishSettings, config_dir: Path, report_problems: list[str],
             notes: list[str]) -> artwork.Artwork:
    art, problems = artwork.resolve(show.image, show.title, config_dir)
    report_problems += problems
    if art.url is not None:
        if not urlsplit(art.url).path.lower().endswith((".jpg", ".jpeg", ".png")):
            report_problems.append(f"[publish] image {art.url!r} does not end in .jpg or .png, as Apple Podcasts "
                                   f"requires of artwork")
        else:
            notes.append(f"the cover at {art.url} is served elsewhere and not checked here: it must be a square "
                         f"RGB JPEG or PNG of {artwork.MIN_PX}-{artwork.MAX_PX} px")
    elif art.made and not show.image:
        notes.append(f"no [publish] image: a plain cover is made from the title ({art.name})")
    return art


def prepare(show: PublishSettings, base_url: str | None, items: list[Entry], config_dir: Path,
            language: str) -> Report:
    """The channel `[publish]` describes (base_url from --base-url or the config), and every problem of the
    feed it would make with `items`."""
    problems: list[str] = []
    notes: list[str] = []
    base = (base_url or show.base_url).strip().rstrip("/")
    where = "--base-url" if base_url else "[publish] base_url"
    if (bad := url_problem(base, where)) is not None:
        problems.append(bad)
    _text(show.title, "title", problems)
    _text(show.description, "description", problems, DESCRIPTION_BYTES)
    _text(show.author, "author", problems)
    owner_name = (show.owner_name or show.author).strip()
    if show.owner_name is not None:
        _text(show.owner_name, "owner_name", problems)
    email = _owner_email(show, problems)
    category = None
    try:
        category = categories.parse(show.category)
    except categories.UnknownCategory as exc:
        problems.append(f"[publish] {exc}")
    if not ISO_639.match(language):
        problems.append(f"the feed's language {language!r} is not an ISO 639 code such as en or en-us "
                        f"([publish] language)")
    art = _artwork(show, config_dir, problems, notes)
    channel = Channel(title=show.title.strip(), description=show.description.strip(), author=show.author.strip(),
                      owner_name=owner_name, owner_email=email, language=language, category=category,
                      explicit=show.explicit, type=show.type, base=base, artwork=art)
    problems += item_problems(items)
    return Report(channel=channel, problems=problems, notes=notes)


def item_problems(items: list[Entry]) -> list[str]:
    if not items:
        return ["no finished episode to publish yet: Apple Podcasts lists a feed with at least one episode"]
    problems = []
    for e in items:
        if not e.title.strip():
            problems.append(f"{e.episode_id}: the episode has no title")
        elif len(e.title) > TEXT_CHARS:
            problems.append(f"{e.episode_id}: the title is {len(e.title)} characters; Apple Podcasts takes at "
                            f"most {TEXT_CHARS}")
        if e.bytes <= 0:
            problems.append(f"{e.episode_id}: episode.mp3 is empty")
        if e.seconds <= 0:
            problems.append(f"{e.episode_id}: episode.mp3 has no duration")
    return problems
