"""Show notes in markdown: a short summary, the chapters with their times, the numbered sources.

Sources are published by title and URL, or title and file name: a source read from this machine's disk
shows its file name only (stages/publish/public.py), never the folder it was read from.
"""

from __future__ import annotations

import re

from podspool.stages.base import Finding, Turn
from podspool.stages.publish.chapters import Chapter, clock
from podspool.stages.publish.public import file_name, is_local, is_web_url, public_text
from podspool.stages.script.format import SOURCE_ITEM_RE, sections

SUMMARY_CHARS = 400
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"^\s*\d{1,3}[.)]\s+")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")
_URL_NEEDS_BRACKETS = re.compile(r"[\s()<>]")


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


def escape(text: str) -> str:
    """Plain text as markdown that renders as that text (titles and names are not markup)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def source_item(finding: Finding) -> str:
    """One source in markdown: [title](URL) (location), or title (`file name`, location)."""
    title = escape(public_text(finding.title)) if finding.title else ""
    where = escape(public_text(finding.location)) if finding.location else ""
    source = finding.source.strip()
    if is_web_url(source):
        target = f"<{source}>" if _URL_NEEDS_BRACKETS.search(source) else source
        return f"[{title or escape(source)}]({target})" + (f" ({where})" if where else "")
    name = f"`{file_name(source)}`" if is_local(source) else escape(source)  # sim://… and the like: as is
    if title:
        return f"{title} ({', '.join(p for p in (name, where) if p)})"
    return name + (f" ({where})" if where else "")


def _cites(line: str, finding: Finding) -> bool:
    return finding.source.strip() in line


def sources(script: str, findings: list[Finding]) -> list[tuple[int, str]]:
    """(number, markdown item): the script's Sources list, numbered as cited, each item from the research it
    names; else the research's own sources. An item that names no research is published as text."""
    listed = [(int(m.group(1)), line) for s in sections(script) if s.is_sources
              for line in s.lines if (m := SOURCE_ITEM_RE.match(line))]
    if not listed:
        items = dict.fromkeys(source_item(f) for f in findings)
        return list(enumerate(items, 1))
    out = []
    for number, line in listed:
        finding = findings[number - 1] if 0 < number <= len(findings) else None
        if finding is not None and _cites(line, finding):
            out.append((number, source_item(finding)))
        else:
            out.append((number, escape(public_text(_NUMBER.sub("", line, count=1).strip()))))
    return out


def markdown(title: str, turns: list[Turn], notes: str | None, chapters: list[Chapter], script: str,
             findings: list[Finding]) -> str:
    lines = [f"# {escape(public_text(title))}", "", public_text(summary(turns, notes)), "", "## Chapters", ""]
    lines += [f"- {clock(c.start)} {escape(public_text(c.title))}" for c in chapters]
    lines += ["", "## Sources", ""]
    lines += [f"{n}. {item}" for n, item in sources(script, findings)] or ["None."]
    return "\n".join(lines) + "\n"
