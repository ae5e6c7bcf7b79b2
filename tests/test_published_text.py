"""Nothing published says where on the machine it was made, and sources are named by title and URL or file
name: a real run of the example batch (local research and writer, espeak), its feed, show notes,
transcript, chapters and ID3 tags (read by mutagen) searched for the machine's paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html
from markdown_it import MarkdownIt
from mutagen.id3 import ID3
from podspool.daemon.publishing import notes
from podspool.stages.base import Finding, Turn
from podspool.stages.publish import shownotes
from podspool_helpers import cli, episodes_in, write_manifest
from publish_helpers import SHOW

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "small_batch.json"
# an absolute path of two components or more, not inside a URL, a word or a closing tag ("</p>")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<~-])/(?:[\w.@+-]+/)+[\w.@+-]+")


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("private")
    spool = root / "spool"
    spool.mkdir()
    (spool / "podspool.toml").write_text(SHOW)  # the embedded defaults: local research and writer, espeak
    doc = json.loads(EXAMPLE.read_text())
    # two of its ten episodes: the same sources and code in a fifth of the time; sources as absolute paths
    doc["episodes"] = [{**e, "sources": [str(REPO / "examples" / s) for s in e["sources"]]}
                       for e in doc["episodes"][:2]]
    manifest = write_manifest(root / "example_two.json", doc)
    r = cli("submit", str(manifest), "--spool", str(spool), cwd=REPO / "examples")
    assert r.returncode == 0, r.stderr
    r = cli("run", "--once", "--spool", str(spool), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert episodes_in(spool, "done") == ["ep_001_example_small", "ep_002_example_small"], r.stderr[-2000:]
    r = cli("feed", "--spool", str(spool))
    assert r.returncode == 0, r.stderr
    return spool


def _published(spool: Path) -> dict[str, str]:
    """Every published file's text: feed.xml, and per episode its notes, transcript, chapters and ID3 tags."""
    texts = {"feed.xml": (spool / "feed" / "feed.xml").read_text(encoding="utf-8")}
    for folder in sorted((spool / "done").iterdir()):
        for name in ("shownotes.md", "transcript.vtt", "chapters.json"):
            texts[f"{folder.name}/{name}"] = (folder / name).read_text(encoding="utf-8")
        tags = ID3(folder / "episode.mp3")
        raw = (folder / "episode.mp3").read_bytes()[: tags.size]  # the tag as stored, whatever its frames
        texts[f"{folder.name}/ID3"] = tags.pprint() + "\n" + raw.decode("latin-1") + "\n" + \
            raw.decode("utf-16-le", errors="ignore")
    return texts


def test_no_published_file_holds_a_path_of_the_machine(spool: Path) -> None:
    texts = _published(spool)
    machine = {str(REPO), str(spool), str(spool.parent), str(Path.home())}
    for name, text in texts.items():
        for path in machine:
            assert path not in text, (name, path)
        assert not ABSOLUTE_PATH.search(text), (name, ABSOLUTE_PATH.search(text))
    # the sources are still named: by their file names
    for name in ("feed.xml", "ep_001_example_small/shownotes.md"):
        assert "fermi_paradox.md" in texts[name], name
    assert "Where is everybody?" in texts["ep_001_example_small/ID3"]


def test_sources_by_title_and_url_or_file_name() -> None:
    findings = [Finding(text="a", source="/srv/private/notes/fermi_paradox.md", location="paragraph 1",
                        title="Where is everybody?"),
                Finding(text="b", source="https://example.org/fermi", location="result 2",
                        title="The paradox, explained"),
                Finding(text="c", source="C:\\Users\\ana\\docs\\drake.pdf"),
                Finding(text="d", source="file:///home/ana/tides.md", title="Tides")]
    script = "## Intro\n\n**Alex:** Hello [1].\n\n## Sources\n\n" + "\n".join(
        f"{i}. {f.title or ''}: {f.source}" for i, f in enumerate(findings, 1)) + "\n5. Seen at /opt/secret/x.md\n"
    notes = shownotes.markdown("Where is everybody?", [Turn(host="Alex", text="Hello.")], None, [], script, findings)
    assert "/srv" not in notes and "Users" not in notes and "/home" not in notes and "/opt" not in notes
    html = MarkdownIt("commonmark").render(notes)  # an independent reader of the markdown
    assert '<li>Where is everybody? (<code>fermi_paradox.md</code>, paragraph 1)</li>' in html
    assert '<li><a href="https://example.org/fermi">The paradox, explained</a> (result 2)</li>' in html
    assert "<li><code>drake.pdf</code></li>" in html
    assert "<li>Tides (<code>tides.md</code>)</li>" in html
    assert "<li>Seen at x.md</li>" in html  # an item naming no research: its text, the path cut to a name


def test_notes_reach_the_feed_as_html_without_their_raw_markup() -> None:
    text = "# Title\n\nA <script>alert(1)</script> **bold** [link](https://example.org).\n\n## Sources\n\n1. `a.md`\n"
    page = lxml_html.fragment_fromstring(notes.html(text), create_parent="div")  # an independent HTML reader
    assert not page.xpath("//script|//h1") and page.xpath("//strong/text()") == ["bold"]
    assert page.xpath("//a/@href") == ["https://example.org"] and "<script>" in page.text_content()
    assert notes.plain(text) == "A <script>alert(1)</script> bold link (https://example.org).\n\nSources\n1. a.md"
