"""A document's text, passage by passage, through one well-kept extractor per format.

PDF: pypdf (the text layer, page by page, so citations name the page). DOCX: python-docx (headings
name the section). EPUB: the zip's own OPF spine, each chapter through the HTML reader. HTML:
trafilatura (the page's main text, without menus, headers and footers). Markdown and plain text: the
paragraph splitter of passages.py.

Passages are produced lazily (`read` yields them), so a long PDF is never held as one string, and
every limit is checked before the expensive part: the file's size, the zip's unpacked size, the page
count, the text's length. A document that cannot be read raises `SourceError` naming the file and
the reason (no text layer, encrypted, corrupt or truncated, over a limit): at intake that refuses the
manifest, at research time it fails only that episode.
"""

from __future__ import annotations

import logging
import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podspool.stages.sources.limits import MAX_DOCUMENT_BYTES, MAX_SOURCE_BYTES, SourceError
from podspool.stages.sources.passages import Passage, html_passages, text_passages

KINDS = {".pdf": "pdf", ".docx": "docx", ".epub": "epub", ".html": "html", ".htm": "html",
         ".md": "markdown", ".txt": "text"}
MAX_PDF_PAGES = 2000  # a book is a few hundred pages; thousands are an archive, not an episode's source
MAX_UNPACKED_BYTES = 64 * 1024 * 1024  # the XML inside a .docx/.epub: a zip bomb stops here, unparsed
MAX_TEXT_CHARS = 16 * 1024 * 1024  # extracted text per document: bounds memory whatever the format

# pypdf reports recoverable damage through the logging module; the refusal says what matters
logging.getLogger("pypdf").setLevel(logging.ERROR)
logging.getLogger("trafilatura").setLevel(logging.ERROR)


@dataclass
class DocumentInfo:
    """What may be published about a source: its name (a file name or a URL), title, kind, pages."""

    name: str
    kind: str
    title: str | None = None
    url: str | None = None
    pages: int | None = None
    passages: int = 0
    chars: int = 0

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class Document:
    """An opened document: its info now, its passages on iteration (once)."""

    info: DocumentInfo
    _passages: Iterator[Passage] = field(repr=False)

    def __iter__(self) -> Iterator[Passage]:
        for p in self._passages:
            self.info.passages += 1
            self.info.chars += len(p.text)
            if self.info.chars > MAX_TEXT_CHARS:
                raise SourceError(f"source {self.info.name}: more than {MAX_TEXT_CHARS // 2**20} MiB of text; "
                                  "split it into smaller documents")
            yield p


def kind_of(path: Path) -> str | None:
    return KINDS.get(path.suffix.lower())


def open_document(path: Path, name: str, kind: str | None = None, url: str | None = None) -> Document:
    """Open `path` (published as `name`) as `kind` (default: by its suffix); raises SourceError."""
    kind = kind or kind_of(path)
    if kind is None:
        raise SourceError(f"source {name}: not a document podspool reads ({', '.join(sorted(KINDS))})")
    try:
        limit = MAX_DOCUMENT_BYTES if kind in ("pdf", "docx", "epub") else MAX_SOURCE_BYTES
        size = path.stat().st_size
        if size > limit:
            raise SourceError(f"source {name}: {size} bytes, more than the {limit} allowed")
        if kind == "pdf":
            return _pdf(path, name, url)
        if kind == "docx":
            return _docx(path, name, url)
        if kind == "epub":
            return _epub(path, name, url)
        text = decode(path.read_bytes())
        if kind == "html":
            return html_document(text, name, url)
        info = DocumentInfo(name=name, kind=kind, url=url)
        return Document(info, iter(text_passages(text, name, markdown=kind == "markdown")))
    except SourceError:
        raise
    except OSError as exc:
        raise SourceError(f"source {name}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # every parser has its own error types for a damaged file
        raise SourceError(f"source {name}: not a readable {kind.upper()} file, corrupt or truncated "
                          f"({type(exc).__name__}: {str(exc)[:120]})") from None


def decode(data: bytes) -> str:
    """Text in UTF-8 (the usual case), else in the encoding charset-normalizer (requests' own) finds:
    a saved page in Windows-1252 keeps its accents instead of turning them into replacement marks."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    return str(best) if best is not None else data.decode("utf-8", errors="replace")


def check_document(path: Path, name: str, kind: str | None = None) -> DocumentInfo:
    """Open `path` and read until its first passage: a document with no text is refused here."""
    doc = open_document(path, name, kind)
    try:
        for _ in doc:
            return doc.info
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"source {name}: corrupt or truncated ({type(exc).__name__}: {str(exc)[:120]})") from None
    raise SourceError(f"source {name}: no text could be extracted"
                      + (" (a scanned PDF has no text layer: run OCR on it first, e.g. ocrmypdf)"
                         if doc.info.kind == "pdf" else ""))


def read(path: Path, name: str, kind: str | None = None, url: str | None = None) -> Iterator[Passage]:
    """Every passage of a document, errors included as SourceError (for a damaged page mid-file)."""
    doc = open_document(path, name, kind, url)
    try:
        yield from doc
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"source {name}: corrupt or truncated ({type(exc).__name__}: {str(exc)[:120]})") from None


# ---- PDF -----------------------------------------------------------------------------------------


def _pdf(path: Path, name: str, url: str | None) -> Document:
    from pypdf import PdfReader  # imported here: a worker that never reads a PDF never pays for it

    with path.open("rb") as fh:  # the %%EOF marker ends every complete PDF: its absence is a cut file
        fh.seek(max(0, path.stat().st_size - 2048))
        if b"%%EOF" not in fh.read():
            raise SourceError(f"source {name}: truncated PDF (no end-of-file marker)")
    reader = PdfReader(path)
    if reader.is_encrypted:
        try:  # a PDF locked only against editing opens with the empty password
            unlocked = bool(reader.decrypt(""))
        except Exception:  # pypdf needs `cryptography` for AES: without it, the file stays locked
            unlocked = False
        if not unlocked:
            raise SourceError(f"source {name}: encrypted PDF (needs a password); save an unlocked copy")
    pages = len(reader.pages)
    if pages > MAX_PDF_PAGES:
        raise SourceError(f"source {name}: {pages} pages, more than the {MAX_PDF_PAGES} allowed")
    meta = reader.metadata
    title = str(meta.title).strip() if meta is not None and meta.title else None
    info = DocumentInfo(name=name, kind="pdf", title=title or None, url=url, pages=pages)

    def passages() -> Iterator[Passage]:
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            # a line-wrapped word ("infor-\nmation") is one word again
            text = text.replace("-\n", "") if text else text
            for i, block in enumerate(text_passages(text, name, markdown=False, with_lines=False)):
                block.location = f"page {number}" + (f", part {i + 1}" if i else "")
                yield block

    return Document(info, passages())


# ---- DOCX ----------------------------------------------------------------------------------------


def _check_zip(path: Path, name: str, kind: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise SourceError(f"source {name}: not a readable {kind.upper()} file, corrupt or truncated "
                          "(not a complete zip archive)") from None
    markup = sum(i.file_size for i in archive.infolist()
                 if i.filename.lower().endswith((".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx")))
    if markup > MAX_UNPACKED_BYTES:
        archive.close()
        raise SourceError(f"source {name}: unpacks to {markup // 2**20} MiB of markup, more than the "
                          f"{MAX_UNPACKED_BYTES // 2**20} MiB allowed")
    if archive.testzip() is not None:  # a CRC error: the bytes on disk are not the ones written
        archive.close()
        raise SourceError(f"source {name}: corrupt {kind.upper()} file (a member fails its checksum)")
    return archive


def _docx(path: Path, name: str, url: str | None) -> Document:
    import docx
    from docx.table import Table

    _check_zip(path, name, "docx").close()
    document = docx.Document(str(path))
    title = (document.core_properties.title or "").strip() or None
    info = DocumentInfo(name=name, kind="docx", title=title, url=url)

    def passages() -> Iterator[Passage]:
        heading: str | None = None
        number = 0
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                texts, style = [" ".join(c.text for c in row.cells) for row in block.rows], ""
            else:
                texts, style = [block.text], (block.style.name or "") if block.style is not None else ""
            if style.startswith(("Heading", "Title")):
                heading = texts[0].strip() or heading
                if style.startswith("Title") and info.title is None:
                    info.title = heading
                number = 0
                continue
            for text in texts:
                for p in text_passages(text, name, markdown=False, with_lines=False):
                    number += 1
                    p.heading = heading
                    p.location = (f'section "{heading}", ' if heading else "") + f"paragraph {number}"
                    yield p

    return Document(info, passages())


# ---- EPUB ----------------------------------------------------------------------------------------

_CONTAINER_NS = {"c": "urn:oasis:names:tc:opendocument:xmlns:container"}
_OPF_NS = {"opf": "http://www.idpf.org/2007/opf", "dc": "http://purl.org/dc/elements/1.1/"}


def _xml(data: bytes) -> Any:
    from lxml import etree

    # no entities, no network, no DTD: an EPUB comes from outside
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    return etree.fromstring(data, parser)


def _epub(path: Path, name: str, url: str | None) -> Document:
    archive = _check_zip(path, name, "epub")
    names = set(archive.namelist())
    if "META-INF/encryption.xml" in names:  # DRM: the chapters are ciphertext
        archive.close()
        raise SourceError(f"source {name}: encrypted EPUB (DRM); podspool reads only unprotected books")
    container = _xml(archive.read("META-INF/container.xml"))
    rootfile = container.find(".//c:rootfile", _CONTAINER_NS)
    if rootfile is None or not rootfile.get("full-path"):
        raise SourceError(f"source {name}: not a readable EPUB file (no package document)")
    opf_path = str(rootfile.get("full-path"))
    opf = _xml(archive.read(opf_path))
    title_el = opf.find(".//dc:title", _OPF_NS)
    title = (title_el.text or "").strip() if title_el is not None else ""
    base = posixpath.dirname(opf_path)
    items = {i.get("id"): i.get("href") for i in opf.iterfind(".//opf:manifest/opf:item", _OPF_NS)}
    spine = [items[r.get("idref")] for r in opf.iterfind(".//opf:spine/opf:itemref", _OPF_NS)
             if items.get(r.get("idref"))]
    info = DocumentInfo(name=name, kind="epub", title=title or None, url=url, pages=None)

    def passages() -> Iterator[Passage]:
        with archive:
            for chapter, href in enumerate(spine, 1):
                member = posixpath.normpath(posixpath.join(base, str(href).split("#")[0]))
                if member not in names:
                    continue
                html = archive.read(member).decode("utf-8", errors="replace")
                # a chapter is all content: no menus to strip, so the block parser keeps every paragraph
                for p in html_passages(html, name):
                    p.location = f"chapter {chapter}, {p.location}"
                    yield p

    return Document(info, passages())


# ---- HTML ----------------------------------------------------------------------------------------


def html_document(html: str, name: str, url: str | None = None) -> Document:
    """The page's main text (trafilatura), its headings kept; the whole page when it finds none."""
    import trafilatura

    main = trafilatura.extract(html, output_format="markdown", include_comments=False, include_tables=True,
                               url=url)
    meta = trafilatura.extract_metadata(html)
    title = (meta.title or "").strip() if meta is not None else ""
    info = DocumentInfo(name=name, kind="html", title=title or None, url=url)
    if main and main.strip():
        return Document(info, iter(text_passages(main, name, markdown=True, with_lines=False)))
    return Document(info, iter(html_passages(html, name)))
