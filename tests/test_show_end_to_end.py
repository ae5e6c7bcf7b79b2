"""A show of three through the real daemon (`podspool run --once`), offline: local research, the local
writer and espeak. The transcript carries exactly the cast's names, the chapters the format's headings, and
the audio three voices whose pitch lies apart (measured on the mp3, decoded by miniaudio). A German batch
through the loopback model: the model is asked for German and the episode is made."""

from __future__ import annotations

import re
from pathlib import Path

import miniaudio
import numpy as np
import pytest
from loopback_writers import chat_server, obedient
from podspool.stages.show import SPEAKERS
from podspool_helpers import cli, read_json, write_manifest

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
[research]
provider = "local"
source_roots = ["{root}"]
[production]
provider = "{writer}"
min_words = {min_words}
[providers.openai]
base_url = "{base_url}"
max_attempts = 1
[audio]
provider = "espeak"
"""
CUE = re.compile(r"(\d+):(\d\d):(\d\d\.\d+) --> (\d+):(\d\d):(\d\d\.\d+)\n<v ([^>]+)>")


def spool_with(tmp: Path, writer: str = "local", base_url: str = "http://127.0.0.1:9/v1", min_words: int = 300) -> Path:
    spool = tmp / "spool"
    (spool / "inbox").mkdir(parents=True)
    (spool / "podspool.toml").write_text(CONFIG.format(root=tmp, writer=writer, base_url=base_url,
                                                       min_words=min_words))
    return spool


def median_pitch_by_speaker(folder: Path) -> dict[str, float]:
    """Each speaker's median F0 (autocorrelation over voiced 40 ms frames), in the spans the transcript gives."""
    decoded = miniaudio.decode_file(str(folder / "episode.mp3"), output_format=miniaudio.SampleFormat.FLOAT32,
                                    nchannels=1)
    x, sr = np.frombuffer(decoded.samples, dtype=np.float32), decoded.sample_rate
    n, lo, hi = int(0.04 * sr), int(sr / 400), int(sr / 60)
    found: dict[str, list[float]] = {}
    for *times, who in CUE.findall((folder / "transcript.vtt").read_text(encoding="utf-8")):
        start = int(times[0]) * 3600 + int(times[1]) * 60 + float(times[2])
        end = int(times[3]) * 3600 + int(times[4]) * 60 + float(times[5])
        seg = x[int(start * sr):int(end * sr)]
        for i in range(0, len(seg) - n, 3 * n):  # every third frame: plenty for a median
            frame = seg[i:i + n] * np.hanning(n)
            if np.sqrt(np.mean(frame ** 2)) < 0.02:
                continue
            ac = np.correlate(frame, frame, "full")[n - 1:]
            k = lo + int(np.argmax(ac[lo:hi]))
            if ac[k] > 0.4 * ac[0]:
                found.setdefault(who, []).append(sr / k)
    return {who: float(np.median(v)) for who, v in found.items()}


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_a_conversation_and_a_debate_of_three_through_the_daemon(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, min_words=150)
    cast = [{"name": "Ana"}, {"name": "Bo"}, {"name": "Chidi"}]
    tides = tmp_path / "tides.md"  # its first three sections: a short episode is enough to hear three voices
    text = (REPO / "examples" / "sources" / "tides.md").read_text(encoding="utf-8")
    tides.write_text("\n## ".join(text.split("\n## ")[:4]), encoding="utf-8")
    manifest = write_manifest(tmp_path / "three.json", {"batch_id": "three", "cast": cast, "episodes": [
        {"number": 1, "topic": "Tides", "sources": [str(tides)]},
        {"number": 2, "topic": "Tides", "sources": [str(tides)], "format": "debate"}]})
    assert cli("submit", str(manifest), "--spool", str(spool), cwd=tmp_path).returncode == 0
    run = cli("run", "--once", "--spool", str(spool), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for number in (1, 2):
        folder = spool / "done" / f"ep_00{number}_three"
        assert folder.is_dir(), sorted(p.name for p in (spool / "failed").iterdir())
        vtt = (folder / "transcript.vtt").read_text(encoding="utf-8")
        assert set(re.findall(r"<v ([^>]+)>", vtt)) == {"Ana", "Bo", "Chidi"}
        pitch = median_pitch_by_speaker(folder)
        low, mid, high = sorted(pitch.values())
        assert mid / low > 1.15 and high / mid > 1.15, pitch  # three voices a listener tells apart
    titles = [c["title"] for c in read_json(spool / "done" / "ep_002_three" / "chapters.json")["chapters"]]
    assert titles[0] == "Opening statements" and titles[1].startswith("Round 1: ")
    assert titles[-1] == "Closing statements"


def test_a_german_batch_asks_the_model_for_german(tmp_path: Path) -> None:
    notes = tmp_path / "bienen.md"
    notes.write_text("Honigbienen zeigen einander mit einem Tanz, wo es Futter gibt. Der Forscher Karl von "
                     "Frisch hat diesen Tanz entschlüsselt.\n\nDer Winkel des Tanzes zeigt die Richtung zur "
                     "Sonne. Die Dauer des Schwänzellaufs zeigt die Entfernung.\n", encoding="utf-8")
    with chat_server(obedient) as fake:
        spool = spool_with(tmp_path, "openai", fake.base_url + "/v1", min_words=60)
        manifest = write_manifest(tmp_path / "de.json", {"batch_id": "de", "language": "de", "episodes": [
            {"number": 1, "topic": "Bienen", "sources": [str(notes)]}]})
        assert cli("submit", str(manifest), "--spool", str(spool), cwd=tmp_path).returncode == 0
        run = cli("run", "--once", "--spool", str(spool), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = spool / "done" / "ep_001_de"
    assert folder.is_dir(), run.stderr[-3000:]
    prompt = fake.requests[0].json()["messages"][1]["content"]
    assert "Language: German (de): write the whole script in German." in prompt
    assert "Hallo und willkommen" in (folder / "transcript.vtt").read_text(encoding="utf-8")


@pytest.mark.soak
def test_every_format_and_cast_size_through_the_daemon(tmp_path: Path) -> None:
    """All 14 format/cast combinations in one batch: transcripts name exactly the cast, and as many voices
    as speakers whose median pitches lie apart."""
    spool = spool_with(tmp_path, min_words=120)
    tides = tmp_path / "tides.md"
    text = (REPO / "examples" / "sources" / "tides.md").read_text(encoding="utf-8")
    tides.write_text("\n## ".join(text.split("\n## ")[:4]), encoding="utf-8")
    names = ["Ana", "Bo", "Chidi", "Dana"]
    combos = [(fmt, n) for fmt, (low, high) in SPEAKERS.items() for n in range(low, high + 1)]
    episodes = [{"number": i, "topic": "Tides", "sources": [str(tides)], "format": fmt,
                 "cast": [{"name": x} for x in names[:n]]} for i, (fmt, n) in enumerate(combos, 1)]
    manifest = write_manifest(tmp_path / "all.json", {"batch_id": "all", "episodes": episodes})
    assert cli("submit", str(manifest), "--spool", str(spool), cwd=tmp_path).returncode == 0
    run = cli("run", "--once", "--spool", str(spool), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for i, (fmt, n) in enumerate(combos, 1):
        folder = spool / "done" / f"ep_{i:03d}_all"
        assert folder.is_dir(), (fmt, n, run.stderr[-2000:])
        vtt = (folder / "transcript.vtt").read_text(encoding="utf-8")
        assert set(re.findall(r"<v ([^>]+)>", vtt)) == set(names[:n]), (fmt, n)
        pitch = sorted(median_pitch_by_speaker(folder).values())
        assert all(b / a > 1.1 for a, b in zip(pitch, pitch[1:], strict=False)), (fmt, n, pitch)
        print(fmt, n, [round(p) for p in pitch])
