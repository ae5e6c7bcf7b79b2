"""The show's cover art: the configured image checked as Apple Podcasts checks it, or a plain cover.

`[publish] image` is a JPEG or PNG file (a path relative to the config file's folder, or absolute) that
`podspool feed` publishes as feed/cover-<hash>.<ext>, or an http(s) URL of art served elsewhere (which
cannot be checked offline). Without one, a plain cover is drawn from the show's title. The published
name changes with the image's bytes, as Apple asks ("change the artwork file name and URL at the same
time"), so a new cover is fetched again by every directory.

Pillow reads and draws the images.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

from podspool.stages.publish.public import is_web_url

MIN_PX, MAX_PX = 1400, 3000  # Apple Podcasts: square, 1400 x 1400 to 3000 x 3000 pixels
FORMATS = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",)}
EXTENSION = {"JPEG": ".jpg", "PNG": ".png"}
COVER_PREFIX = "cover-"
PLAIN_PX = MIN_PX  # the smallest Apple takes: the plain cover is a few tens of kB
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # what `feed` reads of a configured file at most


@dataclass(frozen=True)
class Artwork:
    """The cover as the feed names it: bytes to publish under `name` (feed/<name>), or a URL served elsewhere."""

    name: str | None = None
    data: bytes | None = None
    url: str | None = None
    made: bool = False  # drawn by podspool from the title

    def href(self, base: str) -> str:
        return self.url or f"{base.rstrip('/')}/{self.name}"


def check(data: bytes, filename: str, what: str) -> list[str]:
    """Every way the image misses Apple's rules for show artwork."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h), mode = im.format or "", im.size, im.mode
            im.verify()  # a truncated or corrupt file fails here, not in a podcast app
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return [f"{what} is not a readable image ({exc.__class__.__name__}: {str(exc)[:120]})"]
    problems = []
    if fmt not in FORMATS:
        problems.append(f"{what} is {fmt or 'of an unknown format'}, not JPEG or PNG")
    elif not filename.lower().endswith(FORMATS[fmt]):
        problems.append(f"{what} is a {fmt} file but its name does not end in {' or '.join(FORMATS[fmt])}")
    if w != h:
        problems.append(f"{what} is {w} x {h} px, not square")
    if not (MIN_PX <= w <= MAX_PX and MIN_PX <= h <= MAX_PX):
        problems.append(f"{what} is {w} x {h} px; Apple Podcasts takes {MIN_PX} to {MAX_PX} px a side")
    if mode != "RGB":
        problems.append(f"{what} is in colour mode {mode}, not RGB (Apple Podcasts takes RGB without alpha)")
    return problems


def _colour(title: str) -> tuple[int, int, int]:
    """A dark colour of the title's own, so shows differ without anyone choosing."""
    import colorsys

    hue = int.from_bytes(hashlib.sha256(title.encode()).digest()[:2], "big") / 65535
    r, g, b = colorsys.hls_to_rgb(hue, 0.28, 0.45)
    return int(r * 255), int(g * 255), int(b * 255)


def plain_cover(title: str, size: int = PLAIN_PX) -> bytes:
    """A square RGB PNG: the title in large white letters on a colour taken from it."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (size, size), _colour(title))
    draw = ImageDraw.Draw(image)
    margin = size // 10
    for points in (200, 170, 140, 120, 100, 84, 70, 60):  # the largest size at which it fits
        font = ImageFont.load_default(size=points * size // PLAIN_PX)
        width = max(8, int((size - 2 * margin) / (0.55 * points * size / PLAIN_PX)))
        lines = textwrap.wrap(title, width=width, break_long_words=True)[:6] or [title]
        text = "\n".join(lines)
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=points // 4)
        if right - left <= size - 2 * margin and bottom - top <= size - 2 * margin:
            break
    draw.multiline_text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), text, font=font,
                        fill=(255, 255, 255), spacing=points // 4, align="center")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _named(data: bytes, extension: str, made: bool) -> Artwork:
    return Artwork(name=f"{COVER_PREFIX}{hashlib.sha256(data).hexdigest()[:12]}{extension}", data=data, made=made)


def resolve(image: str | None, title: str, config_dir: Path) -> tuple[Artwork, list[str]]:
    """The cover to publish and what is wrong with the configured one; a configured image that fails is
    not published (a forced feed gets the plain cover instead)."""
    if not image or not image.strip():
        return _named(plain_cover(title), ".png", made=True), []
    image = image.strip()
    if is_web_url(image):
        return Artwork(url=image), []
    path = Path(image).expanduser()
    path = path if path.is_absolute() else config_dir / path
    what = f"[publish] image {image!r}"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        problems = [f"{what} cannot be read: {exc.strerror or exc}"]
    else:
        too_big = len(data) > MAX_IMAGE_BYTES
        problems = [f"{what} is larger than {MAX_IMAGE_BYTES // 2**20} MiB"] if too_big else \
            check(data, path.name, what)
    if problems:
        return _named(plain_cover(title), ".png", made=True), problems
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        extension = EXTENSION[im.format or "PNG"]
    return _named(data, extension, made=False), []
