"""Test documents made by the tests, each with libraries other than the ones podspool reads them with
where one exists: PDFs written by fpdf2 (read by pypdf), DOCX by python-docx, EPUB by zipfile."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import docx
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter


def make_pdf(path: Path, pages: list[str], title: str = "Tide report") -> Path:
    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def make_slow_pdf(path: Path, operations: int = 100_000) -> Path:
    """A small valid PDF whose one page holds `operations` one-letter text operations, compressed: 3 KB
    that pypdf takes about 2 s to read to its first passage (a hostile document, cheap to send)."""
    content = zlib.compress(b"BT /F1 1 Tf " + b"(a) Tj 1 0 Td " * operations + b" ET", 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
               b"/Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def make_scanned_pdf(path: Path) -> Path:
    """A page that is only a picture of text, as a scanner makes it: no text layer."""
    image = Image.new("L", (400, 200), 255)
    for x in range(40, 360, 7):  # dark strokes where the "letters" are
        for y in range(60, 140):
            image.putpixel((x, y), 0)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(buf, x=10, y=10, w=180)
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path, source: Path) -> Path:
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def make_docx(path: Path, sections: list[tuple[str, str]], title: str = "Harbour memo") -> Path:
    document = docx.Document()
    document.core_properties.title = title
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    document.save(str(path))
    return path


def make_epub(path: Path, chapters: list[tuple[str, str]], title: str = "Sea Book") -> Path:
    items = "".join(f'<item id="c{i}" href="text/c{i}.xhtml" media-type="application/xhtml+xml"/>'
                    for i in range(len(chapters)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # first and stored, as the spec asks
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" '
                   'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                   '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                   "</rootfiles></container>")
        z.writestr("OEBPS/content.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
                   f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></metadata>'
                   f"<manifest>{items}</manifest><spine>{spine}</spine></package>")
        for i, (heading, text) in enumerate(chapters):
            z.writestr(f"OEBPS/text/c{i}.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">'
                                                f"<body><h1>{heading}</h1><p>{text}</p></body></html>")
    return path


def article_html(title: str, lead: str, site: str = "Coast News") -> str:
    """A saved news page: menus, a banner and a footer around the article, as sites have them."""
    body = "".join(f"<p>Paragraph {i} of the article explains how the harbour fleet reads the tide tables and "
                   "plans each trip around the high water of the day, weather permitting.</p>" for i in range(3))
    return (f"<!doctype html><html><head><title>{title} | {site}</title></head><body>"
            "<nav><ul><li><a href='/'>Home</a></li><li><a href='/menu'>Menuitem subscribe elsewhere</a></li></ul></nav>"
            f"<header><div>{site} newsletter banner: subscribe for weekly stories</div></header>"
            f"<main><article><h1>{title}</h1><p>{lead}</p>{body}</article></main>"
            "<footer><p>Copyright 2026 footerword. All rights reserved. Privacy policy and cookie settings.</p>"
            "</footer></body></html>")
