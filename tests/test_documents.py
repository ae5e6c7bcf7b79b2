"""The documents people have: PDF, DOCX, EPUB, HTML and a URL, through the daemon; bad ones refused by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from document_makers import (
    article_html,
    make_docx,
    make_encrypted_pdf,
    make_epub,
    make_pdf,
    make_scanned_pdf,
)
from fakeapi import FakeApi, Reply
from podspool.stages.sources import documents
from podspool.stages.sources.documents import check_document, open_document
from podspool.stages.sources.resolve import MAX_DOCUMENT_BYTES, SourceError
from podspool_helpers import cli, episodes_in, read_json

# words that occur in one document only, so a finding that holds one was read from that document
PDF_WORD, DOCX_WORD, EPUB_WORD, HTML_WORD, URL_WORD = "quokka", "marmoset", "pelargonium", "wombat", "axolotl"


def _library(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "pdf": make_pdf(root / "report.pdf", ["Tides rise and fall twice a day along the coast of the bay.",
                                              f"The {PDF_WORD} harbour sentence appears only on page two of the report."]),
        "docx": make_docx(root / "memo.docx", [("Harbour works", f"The harbour crane lifts the {DOCX_WORD} cargo "
                                                                  "onto the ferry every Tuesday at dawn."),
                                                ("Costs", "The repair of the north pier cost the town council "
                                                          "eleven thousand pounds last year.")]),
        "epub": make_epub(root / "book.epub", [("One", f"The lighthouse keeper fed the albatross named "
                                                       f"{EPUB_WORD.capitalize()} every single evening."),
                                               ("Two", "Storm surges flooded the quay of the little harbour "
                                                       "town twice in one winter.")]),
        "html": _write(root / "page.html", article_html("Tide tables", f"The harbour master publishes {HTML_WORD} "
                                                                       "tide tables every morning for the fleet.")),
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_format_reads_with_its_locations_and_title(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    pdf = open_document(lib["pdf"], "report.pdf")
    passages = list(pdf)
    assert pdf.info.record() == {"name": "report.pdf", "kind": "pdf", "title": "Tide report", "pages": 2,
                                 "passages": 2, "chars": pdf.info.chars}
    assert [p.location for p in passages] == ["page 1", "page 2"] and PDF_WORD in passages[1].text
    docx_doc = open_document(lib["docx"], "memo.docx")
    dp = list(docx_doc)
    assert docx_doc.info.title == "Harbour memo"
    assert dp[0].location == 'section "Harbour works", paragraph 1' and DOCX_WORD in dp[0].text
    epub = open_document(lib["epub"], "book.epub")
    ep = list(epub)
    assert epub.info.title == "Sea Book" and ep[0].location == "chapter 1, paragraph 1" and ep[0].heading == "One"
    html = open_document(lib["html"], "page.html")
    text = " ".join(p.text for p in html)
    assert html.info.title == "Tide tables" and HTML_WORD in text
    # the page's menus, banner and footer are not its text
    assert "Menuitem" not in text and "banner" not in text and "footerword" not in text


def test_damaged_locked_empty_and_oversized_documents_are_refused_by_name(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", ["Some text about the tides of the northern bay and the moon."])
    cases = {
        "scan.pdf": (make_scanned_pdf(tmp_path / "scan.pdf"), "no text could be extracted"),
        "locked.pdf": (make_encrypted_pdf(tmp_path / "locked.pdf", good), "encrypted PDF"),
        "cut.pdf": (_write_bytes(tmp_path / "cut.pdf", good.read_bytes()[: good.stat().st_size // 2]), "truncated"),
        "cut.docx": (_write_bytes(tmp_path / "cut.docx", make_docx(tmp_path / "d.docx", [("A", "b " * 20)])
                                  .read_bytes()[:900]), "corrupt or truncated"),
        "cut.epub": (_write_bytes(tmp_path / "cut.epub", make_epub(tmp_path / "e.epub", [("A", "b " * 20)])
                                  .read_bytes()[:300]), "corrupt or truncated"),
    }
    for name, (path, reason) in cases.items():
        with pytest.raises(SourceError) as caught:
            check_document(path, name)
        assert name in str(caught.value) and reason in str(caught.value), (name, str(caught.value))


def test_page_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_pdf(tmp_path / "long.pdf", [f"Page {i} tells of the tide." for i in range(4)])
    monkeypatch.setattr(documents, "MAX_PDF_PAGES", 3)
    with pytest.raises(SourceError, match=r"long\.pdf: 4 pages, more than the 3 allowed"):
        check_document(path, "long.pdf")


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_validate_refuses_each_bad_document_naming_the_file(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", ["Some text about the tides of the northern bay and the moon."])
    make_scanned_pdf(tmp_path / "scan.pdf")
    make_encrypted_pdf(tmp_path / "locked.pdf", good)
    _write_bytes(tmp_path / "cut.pdf", good.read_bytes()[:-300])
    with (tmp_path / "huge.pdf").open("wb") as fh:  # sparse: over the limit without writing 64 MiB
        fh.truncate(MAX_DOCUMENT_BYTES + 1)
    names = ["good.pdf", "scan.pdf", "locked.pdf", "cut.pdf", "huge.pdf"]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"episodes": [{"number": i + 1, "topic": "Tides", "sources": [n]}
                                                 for i, n in enumerate(names)]}))
    out = cli("validate", str(manifest), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "episode 1" not in said
    for number, name, reason in [(2, "scan.pdf", "no text could be extracted"), (3, "locked.pdf", "encrypted"),
                                 (4, "cut.pdf", "truncated"), (5, "huge.pdf", "more than the")]:
        line = next((ln for ln in said.splitlines() if f"episode {number}:" in ln), "")
        assert name in line and reason in line, (number, said)


CONFIG = """
[research]
provider = "local"
source_roots = ["{root}"]
allow_private_urls = true   # the test's web server listens on 127.0.0.1
[production]
provider = "sim"
[audio]
provider = "sim"
mp3 = true
sample_rate = 8000  # the mp3 only carries the tags checked here: the lowest rate encodes fastest
[providers.sim]
latency_ms = 5
[limits]
retry_backoff_s = 0.05
inbox_settle_s = 0.1
[concurrency]  # few workers to start: each boots an interpreter
research = 2
production = 1
audio = 1
"""


def test_a_batch_of_every_format_and_a_url_is_done_each_citing_its_own_document(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    lib = _library(root)
    page = article_html("Salamander news", f"The {URL_WORD} of the lake was seen again near the pier.")
    with FakeApi(Reply(body=page.encode(), content_type="text/html; charset=utf-8")) as web:
        url = web.base_url + "/news/axolotl.html"
        sources = {"pdf": lib["pdf"].name, "docx": lib["docx"].name, "epub": lib["epub"].name,
                   "html": lib["html"].name, "url": url}
        spool = tmp_path / "spool"
        (spool / "inbox").mkdir(parents=True)
        (spool / "podspool.toml").write_text(CONFIG.format(root=root))
        episodes = [{"number": i + 1, "topic": f"The harbour ({kind})", "sources": [spec]}
                    for i, (kind, spec) in enumerate(sources.items())]
        (spool / "inbox" / "docs.json").write_text(json.dumps({"batch_id": "docs", "episodes": episodes}))
        run = cli("run", "--once", "--spool", str(spool), cwd=root)
        fetched = [r.path for r in web.requests]
    assert run.returncode == 0, run.stderr[-3000:]
    assert episodes_in(spool, "done") == [f"ep_{i:03d}_docs" for i in range(1, 6)], run.stderr[-3000:]
    assert fetched == ["/news/axolotl.html"]
    words = {"pdf": PDF_WORD, "docx": DOCX_WORD, "epub": EPUB_WORD, "html": HTML_WORD, "url": URL_WORD}
    for i, kind in enumerate(sources, 1):
        folder = spool / "done" / f"ep_{i:03d}_docs"
        research = read_json(folder / "research.json")
        name = sources[kind]
        cited = [f for f in research["findings"] if words[kind] in f["text"].lower()]
        assert cited and all(f["source"] == name for f in cited), (kind, research["findings"])
        assert research["sources"] and research["sources"][0]["name"] == name
        if kind == "pdf":
            assert cited[0]["location"] == "page 2" and research["sources"][0]["pages"] == 2
        if kind == "url":
            assert research["sources"][0]["url"] == url and research["sources"][0]["title"] == "Salamander news"
            assert list(folder.glob("source-*.json")), "the fetched page is kept in the episode folder"
        published = json.dumps({k: research[k] for k in ("findings", "citations", "searched", "sources")})
        assert str(tmp_path) not in published and os.sep + "tmp" + os.sep not in published
        # what a listener sees names the source by its file name or URL, and no path of the machine
        notes = (folder / "shownotes.md").read_text()
        assert name in notes and str(root) not in notes, notes
        for file in ("shownotes.md", "transcript.vtt", "episode.mp3"):  # ID3 text may be UTF-8 or UTF-16
            data = (folder / file).read_bytes()
            assert all(str(root).encode(enc) not in data for enc in ("utf-8", "utf-16-le", "utf-16-be")), file
    # --force: the feed's own settings (owner, artwork) are not what this test is about
    feed = cli("feed", "--spool", str(spool), "--base-url", "https://pod.example/", "--force", cwd=root)
    assert feed.returncode == 0, feed.stderr[-2000:]
    xml = (spool / "feed" / "feed.xml").read_text()
    assert "report.pdf" in xml and url in xml and str(root) not in xml


def test_a_page_saved_in_another_encoding_keeps_its_accents(tmp_path: Path) -> None:
    page = article_html("Marée haute", "La marée du port de Saint-Malo dépasse souvent douze mètres à l'équinoxe, "
                                       "et les pêcheurs règlent leurs sorties sur l'heure de la pleine mer.")
    path = tmp_path / "maree.html"
    path.write_bytes(page.replace("<head>", '<head><meta charset="windows-1252">').encode("cp1252"))
    text = " ".join(p.text for p in open_document(path, "maree.html"))
    assert "marée du port de Saint-Malo dépasse" in text and "\ufffd" not in text
