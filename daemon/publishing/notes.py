"""An episode's shownotes.md as the feed carries it: HTML for content:encoded, plain text for description.

markdown-it-py (CommonMark) parses the notes once; the HTML is its renderer's, with raw HTML in the notes
escaped rather than passed on (notes may quote a model's text), and the plain text is read from the same
tokens, so neither needs a hand-written markdown parser. The notes' "# " title is left out of both: the
item has its own <title>.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token

DESCRIPTION_BYTES = 4000  # Apple's limit for <description> (and itunes:summary)
BULLET = "\u2022"


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False})


def _without_title(tokens: list[Token]) -> list[Token]:
    if len(tokens) >= 3 and tokens[0].type == "heading_open" and tokens[0].tag == "h1":
        return tokens[3:]
    return tokens


def html(markdown: str) -> str:
    md = _parser()
    return md.renderer.render(_without_title(md.parse(markdown)), md.options, {}).strip()


def _inline_text(token: Token) -> str:
    out: list[str] = []
    href: list[str | None] = []
    label_start: list[int] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append(" " if child.type == "softbreak" else "\n")
        elif child.type == "image":
            out.append(child.content)  # its alt text
        elif child.type == "link_open":
            href.append(str(child.attrGet("href") or "") or None)
            label_start.append(len(out))
        elif child.type == "link_close" and href:
            url, start = href.pop(), label_start.pop()
            if url and "".join(out[start:]).strip() != url:
                out.append(f" ({url})")  # plain text keeps where a link went
    return "".join(out).strip()


def plain(markdown: str) -> str:
    """The notes as plain text: headings and paragraphs as lines, list items as "• item" or "1. item"."""
    blocks: list[str] = []
    numbers: list[int | None] = []  # per open list: the next number, or None for a bullet list
    prefix = ""
    for token in _without_title(_parser().parse(markdown)):
        if token.type == "bullet_list_open":
            numbers.append(None)
        elif token.type == "ordered_list_open":
            numbers.append(int(str(token.attrGet("start") or 1)))
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            numbers.pop()
        elif token.type == "list_item_open" and numbers:
            n = numbers[-1]
            prefix = "  " * (len(numbers) - 1) + (f"{BULLET} " if n is None else f"{n}. ")
            if n is not None:
                numbers[-1] = n + 1
        elif token.type == "heading_open":
            blocks.append("")  # a blank line before each section
        elif token.type == "inline":
            blocks.append(prefix + _inline_text(token))
            prefix = ""
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
    text = "\n".join(blocks).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def clipped(text: str, limit: int = DESCRIPTION_BYTES) -> str:
    """At most `limit` bytes of UTF-8, cut at a line or word and marked with an ellipsis."""
    if len(text.encode()) <= limit:
        return text
    cut = text.encode()[: limit - len("\u2026".encode())].decode(errors="ignore")
    for sep in ("\n", " "):
        at = cut.rfind(sep)
        if at > limit // 2:
            cut = cut[:at]
            break
    return cut.rstrip() + "\u2026"
