"""A batch's completion passes: the summary's (errors only, told from the bytes where it can) and the
timeline's, both reading the finished episodes from their folders one at a time."""

from __future__ import annotations

import json
from pathlib import Path

from podspool.daemon.core.batches import BatchBook, FinishedEpisodes
from podspool.daemon.core.episodes import EpisodeBook
from podspool.daemon.models import EpisodeError, EpisodeManifest, PhaseTiming, episode_id
from podspool.daemon.observers.timeline import svg_lines
from podspool.daemon.spool import Spool, manifest_bytes

BID = "fin"


def _manifest(n: int, errors: int = 0, status: str = "done") -> EpisodeManifest:
    m = EpisodeManifest(episode_number=n, session_id=episode_id(n, BID), batch_id=BID, topic=f"Topic {n}",
                        status=status, created_at="2026-01-01T00:00:00.000000Z")  # type: ignore[arg-type]
    m.errors = [EpisodeError(phase="research", attempt=a + 1, at="2026-01-01T00:00:01.000000Z", error=f"boom {a}")
                for a in range(errors)]
    for i, stage in enumerate(("research", "production", "audio")):
        m.timings[stage] = PhaseTiming(started=f"2026-01-01T00:00:0{2 * i + 1}.000000Z",
                                       finished=f"2026-01-01T00:00:0{2 * i + 2}.000000Z", seconds=1.0)
        m.phases.set(stage, "done")
    return m


def _book(tmp_path: Path, placed: list[tuple[str, EpisodeManifest, bytes | None]], missing: list[int]) -> BatchBook:
    sp = Spool(tmp_path / "spool")
    sp.ensure()
    book = BatchBook(sp, 5, EpisodeBook())
    b = book.placeholder(BID)
    for loc, m, data in placed:
        folder = sp.folder(loc, m.session_id)
        folder.mkdir()
        (folder / "manifest.json").write_bytes(manifest_bytes(m) if data is None else data)
        b.tally.numbers.append(m.episode_number)
    b.tally.numbers += missing
    return book


def test_the_summary_pass_gives_exactly_the_episodes_with_errors(tmp_path: Path) -> None:
    nested = _manifest(3)
    nested.details = {"research": {"errors": []}, "errors": {"errors": []}}  # not the top-level key
    compact = _manifest(5, errors=1)
    hand_written = _manifest(6, errors=1)
    hand_written.details = {"errors": []}  # indented by 1, this nested key sits at 2 spaces
    placed: list[tuple[str, EpisodeManifest, bytes | None]] = [
        ("done", _manifest(1), None),
        ("done", _manifest(2, errors=2), None),
        ("done", nested, None),
        ("failed", _manifest(4, errors=3, status="failed"), None),
        ("done", compact, json.dumps(compact.model_dump(mode="json")).encode()),  # another writer's format
        ("done", hand_written, json.dumps(hand_written.model_dump(mode="json"), indent=1).encode()),
        ("failed", _manifest(8, errors=1, status="failed"), b"{ torn"),  # unreadable: skipped by both passes
    ]
    book = _book(tmp_path, placed, missing=[7])
    finished = FinishedEpisodes(book, BID)
    every = list(finished)
    assert [m.episode_number for m in every] == [1, 2, 3, 4, 5, 6]
    assert list(finished.with_errors()) == [m for m in every if m.errors]
    assert [m.episode_number for m in finished.with_errors()] == [2, 4, 5, 6]


def test_the_timeline_escapes_what_a_manifest_says_once_per_row(tmp_path: Path) -> None:
    odd = _manifest(2)
    odd.session_id = "ep_002_<b&d>"
    odd.topic = "Cats & <dogs>"
    svg = "\n".join(svg_lines(BID, [_manifest(1), odd]))
    assert "<b&d>" not in svg and "Cats & <dogs>" not in svg
    assert "<title>ep_002_&lt;b&amp;d&gt; research run 1.00s</title>" in svg
    assert "002 Cats &amp; &lt;dogs&gt;" in svg
    # per episode, a second's wait before each stage and a second's run of it: 6 s, 820 px
    assert svg.count("</title></rect>") == 2 * 6
    assert '<rect x="230.0" y="67" width="136.7" height="12" fill="#d9d9d9"><title>ep_001_fin research queued 1.00s' \
        in svg
    assert '<rect x="913.3" y="85" width="136.7" height="12" fill="#59a14f"><title>ep_002_&lt;b&amp;d&gt; audio run' in svg
