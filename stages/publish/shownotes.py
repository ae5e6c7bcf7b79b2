"""Show notes in markdown: a short summary, the chapters with their times, the numbered sources."""

from __future__ import annotations

import re

from podspool.stages.base import Finding, Turn
from podspool.stages.publish.chapters import Chapter, clock
from podspool.stages.script.format import SOURCE_ITEM_RE, sections

SUMMARY_CHARS = 400
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"^\s*\d{1,3}[.)]\s+")
_URL = re.compile(r"https?://\S+")


def summary(turns: list[Turn], notes: str | None) -> str:
    """The episode's notes when the manifest gave them, else the opening sentences of the episode."""
    if notes and notes.strip():
        return notes.strip()
    text, out = " ".join(t.text for t in turns[:2]), ""
    for sentence in _SENTENCE.split(text):
        if out and len(out) + len(sentence) > SUMMARY_CHARS:
            break
        out = f"{out} {sentence}".strip()
    return out


def sources(script: str, findings: list[Finding]) -> list[str]:
    """The script's numbered Sources list (its numbers are the ones cited), else the research's sources."""
    listed = [_NUMBER.sub("", line, count=1).strip() for s in sections(script) if s.is_sources
              for line in s.lines if SOURCE_ITEM_RE.match(line)]
    if listed:
        return listed
    seen = dict.fromkeys(f.source + (f" ({f.location})" if f.location else "") for f in findings)
    return list(seen)


def _linked(item: str, titles: dict[str, str]) -> str:
    url = _URL.search(item)
    if not url:
        return f"`{item}`" if "/" in item else item  # a local file: named, there is nothing to link to
    link = url.group(0).rstrip(").,")
    label = titles.get(link) or link
    rest = item.replace(link, "").strip()
    return f"[{label}]({link})" + (f" {rest}" if rest else "")


def markdown(title: str, turns: list[Turn], notes: str | None, chapters: list[Chapter], script: str,
             findings: list[Finding]) -> str:
    titles = {f.source: f.title for f in findings if f.title}
    lines = [f"# {title}", "", summary(turns, notes), "", "## Chapters", ""]
    lines += [f"- {clock(c.start)} {c.title}" for c in chapters]
    lines += ["", "## Sources", ""]
    items = sources(script, findings)
    lines += [f"{i}. {_linked(item, titles)}" for i, item in enumerate(items, 1)] or ["None."]
    return "\n".join(lines) + "\n"
