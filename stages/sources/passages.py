"""Source text -> passages (paragraphs) with a human location, for ranking and citation.

Markdown and plain text split on blank lines and keep their line numbers; HTML is reduced to text
with the stdlib parser, block by block (an EPUB chapter, or a page whose main text trafilatura could
not find). documents.py turns each file format into these passages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

MIN_PASSAGE_WORDS = 6  # shorter blocks are headings, captions or navigation, not findings
MAX_PASSAGE_WORDS = 160  # longer blocks are cut at sentence ends so one finding stays one idea

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"(\*\*|__|\*|`+)")
_MD_PREFIX = re.compile(r"^\s*(?:[-*+]\s+|\d+[.)]\s+|>\s*)+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")
_SPACES = re.compile(r"\s+")
# scripts written without spaces between words (Thai, kana, CJK ideographs): two characters count as a word
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words as spaces separate them, plus those of Japanese, Chinese or Thai text, which has no spaces."""
    return len(text.split()) + len(_UNSPACED.findall(text)) // 2


@dataclass
class Passage:
    text: str
    source: str  # the publishable name: a file name (never a path of the machine) or the URL
    location: str  # "paragraph 3, lines 10-14"
    heading: str | None = None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _clean_markdown(line: str) -> str:
    line = _MD_PREFIX.sub("", line)
    line = _MD_LINK.sub(r"\1", line)
    return _MD_MARKS.sub("", line)


def _chunks(text: str) -> list[str]:
    """`text` cut at sentence ends into pieces of at most MAX_PASSAGE_WORDS (a sentence is never cut)."""
    if word_count(text) <= MAX_PASSAGE_WORDS:
        return [text]
    out: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in split_sentences(text):
        n = word_count(sentence)
        if current and count + n > MAX_PASSAGE_WORDS:
            out.append(" ".join(current))
            current, count = [], 0
        current.append(sentence)
        count += n
    if current:
        out.append(" ".join(current))
    return out


def _blocks_to_passages(blocks: list[tuple[str, int, int, str | None]], source: str,
                        with_lines: bool) -> list[Passage]:
    passages: list[Passage] = []
    paragraph = 0
    for text, first, last, heading in blocks:
        text = _SPACES.sub(" ", text).strip()
        if word_count(text) < MIN_PASSAGE_WORDS:
            continue
        paragraph += 1
        where = f"paragraph {paragraph}"
        if with_lines:
            where += f", line {first}" if first == last else f", lines {first}-{last}"
        for piece in _chunks(text):
            passages.append(Passage(text=piece, source=source, location=where, heading=heading))
    return passages


def text_passages(text: str, source: str, markdown: bool = True, with_lines: bool = True) -> list[Passage]:
    """Paragraphs of markdown or plain text, with their paragraph number and (for a file) line range."""
    blocks: list[tuple[str, int, int, str | None]] = []
    heading: str | None = None
    lines: list[str] = []
    start = 0
    in_fence = False

    def flush(end: int) -> None:
        if lines:
            blocks.append((" ".join(lines), start, end, heading))
            lines.clear()

    for number, raw in enumerate(text.splitlines(), 1):
        if markdown and raw.lstrip().startswith("```"):
            in_fence = not in_fence  # code is not prose to read aloud
            flush(number - 1)
            continue
        if in_fence:
            continue
        h = _HEADING.match(raw) if markdown else None
        if h:
            flush(number - 1)
            heading = _clean_markdown(h.group(1)).strip() or heading
            continue
        if not raw.strip():
            flush(number - 1)
            continue
        if not lines:
            start = number
        lines.append(_clean_markdown(raw).strip() if markdown else raw.strip())
    flush(len(text.splitlines()))
    return _blocks_to_passages(blocks, source, with_lines=with_lines)


class _HtmlBlocks(HTMLParser):
    """Collects the text of an HTML page block by block, skipping scripts, styles and the head."""

    BLOCK = {"p", "div", "li", "ul", "ol", "br", "tr", "td", "th", "section", "article", "header",
             "footer", "blockquote", "pre", "table", "dd", "dt", "figcaption", "main", "aside", "hr"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
    SKIP = {"script", "style", "noscript", "head", "template", "svg", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, int, int, str | None]] = []
        self._parts: list[str] = []
        self._skip_depth = 0
        self._in_heading = False
        self._heading_parts: list[str] = []
        self._heading: str | None = None

    def _flush(self) -> None:
        text = "".join(self._parts).strip()
        if text:
            self.blocks.append((text, 0, 0, self._heading))
        self._parts = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip_depth += 1
        elif tag in self.HEADINGS:
            self._flush()
            self._in_heading, self._heading_parts = True, []
        elif tag in self.BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self.HEADINGS and self._in_heading:
            self._in_heading = False
            self._heading = _SPACES.sub(" ", "".join(self._heading_parts)).strip() or self._heading
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._in_heading:
            self._heading_parts.append(data)
        else:
            self._parts.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_passages(html: str, source: str) -> list[Passage]:
    """Paragraph-level blocks of an HTML page (tags stripped, entities decoded)."""
    parser = _HtmlBlocks()
    parser.feed(html)
    parser.close()
    return _blocks_to_passages(parser.blocks, source, with_lines=False)
