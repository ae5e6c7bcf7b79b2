"""What a published file may say about the machine that made it: nothing.

Sources are read from absolute paths (the manifest's, resolved at intake), and a model may repeat a path
it was shown. Whatever is published (show notes, transcript, chapters, ID3 tags, the feed) goes through
`public_text`, which leaves a path's file name and drops its folders; URLs stay as they are.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# /a/b..., ~/a/..., C:\a\...: two components at least, and not inside a word or a URL ("and/or",
# "https://x.org/a/b" keep their slashes); file: URLs whatever their form
_PATH = re.compile(
    r"file:/{0,2}[^\s<>\"')\]]+"
    r"|(?<![\w.~:/\\-])~?/(?:[^\s/<>\"'`]+/)+[^\s/<>\"'`)\],;]*"
    r"|(?<![\w.~:/\\-])[A-Za-z]:\\(?:[^\s\\<>\"'`]+\\)+[^\s\\<>\"'`)\],;]*")


def file_name(path: str) -> str:
    """The last component of a path or file: URL (a folder's own name when it ends in a separator)."""
    if path.startswith("file:"):
        path = unquote(urlsplit(path).path)
    parts = [p for p in re.split(r"[/\\]", path) if p and p != "~"]
    return parts[-1] if parts else ""


def _name_of(match: re.Match[str]) -> str:
    text = match.group(0)
    trail = text[len(text.rstrip(".")):]  # a sentence's full stop is not part of the path
    return file_name(text.rstrip(".")) + trail


def public_text(text: str) -> str:
    """The text with every absolute path (and file: URL) replaced by its file name."""
    return _PATH.sub(_name_of, text)


def is_web_url(source: str) -> bool:
    parts = urlsplit(source.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def is_local(source: str) -> bool:
    """A path of this machine (absolute or relative) or a file: URL, rather than a URL to link to."""
    s = source.strip()
    if s.startswith("file:") or re.match(r"^[A-Za-z]:[\\/]", s):
        return True
    return not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", s)
