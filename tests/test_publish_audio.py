"""The publishable episode, read back by independent tools: libsndfile (mpg123) decodes episode.mp3 (not
lame, nor the miniaudio decoder podspool checks its peaks with),
libebur128 (pyebur128) meters it, eyed3 reads its ID3 tags, webvtt-py parses the transcript, and the
turn onsets are found in the decoded audio by a silence detector of the test's own."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import eyed3
import numpy as np
import pyebur128
import pytest
import soundfile
import webvtt
from podspool.stages import artifacts, fsio
from podspool.stages.base import (
    EpisodeInput,
    Finding,
    ResearchOutput,
    SpeechOutput,
    StageContext,
    Turn,
    TurnSpan,
)
from podspool.stages.publish import loudness, timing
from podspool.stages.publish.episode import publish
from podspool.stages.registry import run_stage
from podspool.stages.settings import AudioSettings, PublishSettings, StageSettings

# one sentence per turn: the only pauses of 0.35 s or more are the ones between turns
SCRIPT = """# Where is everybody?

## Intro

**Alex:** Welcome back to the show, where we chase one big question each week. [1]

**Sam:** Today the question is why the sky is so quiet when the galaxy is so old. [1]

## Segment 1: The paradox

**Alex:** Enrico Fermi asked it over lunch in nineteen fifty, and nobody has settled it since. [1]

**Sam:** The numbers say there should be many civilisations, yet we hear nothing at all. [2]

## Segment 2: Some answers

**Alex:** Perhaps life is rare, or perhaps it rarely lasts long enough to be heard. [2]

**Sam:** Or perhaps we are simply listening in the wrong way, at the wrong time. [2]

## Outro

**Alex:** That is all for today, thank you for listening to the end. [1]

## Sources

1. examples/sources/fermi_paradox.md (paragraph 1)
2. https://example.org/fermi (result 2)
"""
SECTION_FIRST_TURNS = [0, 2, 4, 6]  # the first turn of Intro, Segment 1, Segment 2, Outro
SHOW = PublishSettings(title="Deep Questions", author="Ada Host")
EPISODE = EpisodeInput(episode_id="ep_007_pub", batch_id="pub", number=7, topic="The Fermi paradox",
                       title="Where is everybody?")


def _settings(**audio: object) -> StageSettings:
    return StageSettings(audio=AudioSettings(**audio), publish=SHOW)  # type: ignore[arg-type]


def _research(folder: Path) -> None:
    findings = [Finding(text="Fermi asked where everybody is.", source="examples/sources/fermi_paradox.md",
                        location="paragraph 1"),
                Finding(text="Many answers exist.", source="https://example.org/fermi", location="result 2",
                        title="The Fermi paradox, explained")]
    artifacts.save_research(folder, ResearchOutput(provider="local", findings=findings,
                                                   citations=[f.source for f in findings], searched=[]), 0.0)


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("episode")
    (folder / artifacts.SCRIPT_MD).write_text(SCRIPT)
    _research(folder)
    result = run_stage("audio", folder, EPISODE, StageContext(settings=_settings()))
    assert result.ok, result.error
    return folder


def _decode(path: Path) -> tuple[np.ndarray, int, int]:
    """(samples as float, interleaved; rate; channels), decoded by libsndfile's mpg123."""
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)  # the file's own rate and channels
    return data.reshape(-1), rate, data.shape[1]


def _meter(x: np.ndarray, rate: int, channels: int) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) by libebur128, of the channels as given."""
    st = pyebur128.R128State(channels, rate, pyebur128.MeasurementMode.MODE_I | pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    st.add_frames(x, x.size // channels)
    peak = max(pyebur128.get_true_peak(st, c) for c in range(channels))
    return pyebur128.get_loudness_global(st), 20 * math.log10(peak)


def _heard(x: np.ndarray, rate: int, channels: int) -> tuple[float, float]:
    """(LUFS, dBTP) as a player plays the file: a mono file on both speakers (its one channel twice)."""
    if channels == 1:
        return _meter(np.repeat(x, 2), rate, 2)
    return _meter(x, rate, channels)


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _onsets(x: np.ndarray, rate: int, min_gap_s: float = 0.34) -> list[float]:
    """Where speech starts again after each pause of at least `min_gap_s` (10 ms frames under -50 dBFS)."""
    frame = rate // 100
    n = x.size // frame
    level = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    quiet = level < 10 ** (-50 / 20)
    step = frame / rate  # not 0.01 s exactly: 22050 Hz makes 220-sample frames
    out, run = [], 0
    for i, q in enumerate(quiet):
        if q:
            run += 1
            continue
        if not out or run * step >= min_gap_s:
            out.append(i * step)
        run = 0
    return out


def test_loudness_as_heard_and_true_peak_by_an_independent_meter(episode: Path) -> None:
    x, rate, channels = _decode(episode / artifacts.EPISODE_MP3)
    assert channels == 1
    lufs, peak = _heard(x, rate, channels)
    assert abs(lufs - -16.0) <= 1.0, lufs  # -16 LUFS on two speakers...
    assert abs(_meter(x, rate, 1)[0] - -19.0) <= 1.0  # ...is -19 LUFS measured as the one channel it is
    assert peak <= -1.0, peak
    doc = fsio.read_json(episode / artifacts.AUDIO_JSON)["publish"]["loudness"]
    assert abs(doc["file_lufs"] - lufs) < 0.3 and doc["file_true_peak_dbtp"] <= -1.0


def test_id3_tags_and_chapters_read_by_eyed3(episode: Path) -> None:
    audio = eyed3.load(str(episode / artifacts.EPISODE_MP3))
    assert audio is not None and audio.tag is not None
    tag = audio.tag
    assert tag.version[:2] == (2, 3)
    assert (tag.title, tag.album, tag.artist, tag.track_num[0]) == ("Where is everybody?", "Deep Questions",
                                                                   "Ada Host", 7)
    assert tag.getBestDate() is not None and tag.getBestDate().year >= 2026
    toc = list(tag.table_of_contents)
    assert len(toc) == 1 and toc[0].toplevel and toc[0].ordered
    chapters = [tag.chapters.get(cid) for cid in toc[0].child_ids]  # in the table of contents' order
    assert [c.title for c in chapters] == ["Intro", "Segment 1: The paradox", "Segment 2: Some answers", "Outro"]
    doc = json.loads((episode / artifacts.CHAPTERS_JSON).read_text())
    assert [round(c.times.start / 1000, 2) for c in chapters] == [round(c["startTime"], 2) for c in doc["chapters"]]
    assert audio.info is not None and abs(audio.info.time_secs - fsio.read_json(episode / artifacts.AUDIO_JSON)["seconds"]) < 0.2


def test_chapters_and_transcript_match_the_audio(episode: Path) -> None:
    x, rate, channels = _decode(episode / artifacts.EPISODE_MP3)
    onsets = _onsets(x[::channels], rate)
    assert len(onsets) == 7, onsets  # one per turn, found in the decoded audio alone
    doc = json.loads((episode / artifacts.CHAPTERS_JSON).read_text())
    assert doc["version"] == "1.2.0"
    starts = [c["startTime"] for c in doc["chapters"]]
    for start, turn in zip(starts, SECTION_FIRST_TURNS, strict=True):
        assert abs(start - onsets[turn]) <= 0.5, (start, onsets[turn])
    cues = webvtt.read(str(episode / artifacts.TRANSCRIPT_VTT))
    assert [c.voice for c in cues] == ["Alex", "Sam"] * 3 + ["Alex"]
    assert "Fermi asked it over lunch" in cues[2].text and "[1]" not in cues[2].text
    for cue, onset in zip(cues, onsets, strict=True):
        assert abs(_seconds(cue.start) - onset) <= 0.5, (cue.start, onset)
        assert _seconds(cue.end) > _seconds(cue.start)
    # espeak measures its spans (h10); before that, the stage found the pauses between turns
    assert fsio.read_json(episode / artifacts.AUDIO_JSON)["publish"]["timing"] in ("measured", "detected")


def test_shownotes_audio_mp3_link_and_reuse(episode: Path) -> None:
    notes = (episode / artifacts.SHOWNOTES_MD).read_text()
    assert notes.startswith("# Where is everybody?\n\nWelcome back to the show")
    assert "- 0:00 Intro" in notes and "Segment 2: Some answers" in notes
    assert "1. `fermi_paradox.md` (paragraph 1)" in notes  # a file by its name, never its folders
    assert "2. [The Fermi paradox, explained](https://example.org/fermi) (result 2)" in notes
    assert os.stat(episode / artifacts.AUDIO_MP3).st_ino == os.stat(episode / artifacts.EPISODE_MP3).st_ino
    doc = fsio.read_json(episode / artifacts.AUDIO_JSON)
    assert set(doc["files"]) >= {"audio.wav", "episode.mp3", "audio.mp3", "chapters.json", "transcript.vtt",
                                 "shownotes.md"}
    assert not [n for n in os.listdir(episode) if n.startswith(fsio.TEMP_PREFIX)]
    again = run_stage("audio", episode, EPISODE, StageContext(settings=_settings()))
    assert again.ok and again.reused


def test_stereo_128k_is_configurable(tmp_path: Path) -> None:
    (tmp_path / artifacts.SCRIPT_MD).write_text(SCRIPT)
    result = run_stage("audio", tmp_path, EPISODE, StageContext(settings=_settings(mp3_channels=2)))
    assert result.ok, result.error
    x, rate, channels = _decode(tmp_path / artifacts.EPISODE_MP3)
    assert channels == 2
    lufs, peak = _heard(x, rate, channels)
    assert abs(lufs - -16.0) <= 1.0 and peak <= -1.0
    assert abs(fsio.read_json(tmp_path / artifacts.AUDIO_JSON)["publish"]["loudness"]["file_lufs"] - lufs) < 0.3
    info = eyed3.load(str(tmp_path / artifacts.EPISODE_MP3)).info  # type: ignore[union-attr]
    assert info is not None and info.bit_rate[1] == 128


def _tone(seconds: float, rate: int, amplitude: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * math.pi * hz * t)


@pytest.mark.parametrize("level", [0.02, 0.3, 0.99])
def test_normalise_quiet_and_peaky_signals(level: float) -> None:
    rate = 22050
    rng = np.random.default_rng(3)
    x = _tone(6, rate, level) * (0.5 + rng.random(6 * rate))  # uneven, with sharp peaks
    x[rate: rate + 50] = level  # a flat, clipped-looking stretch
    y, report = loudness.normalise(x, rate, -16.0, -1.5)
    lufs, peak = _meter(y, rate, 1)
    assert abs(lufs - -16.0) <= 0.5 and peak <= -1.0, (lufs, peak, report)
    assert report.true_peak_dbtp <= -1.5 and abs(report.output_lufs - lufs) < 0.3


def test_silence_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="silent"):
        loudness.normalise(np.zeros(22050), 22050, -16.0, -1.0)


def test_provider_spans_win_and_estimates_say_so(tmp_path: Path) -> None:
    rate = 22050
    turns = [Turn("Alex", "one two three"), Turn("Sam", "four five six seven eight nine")]
    x = np.concatenate([_tone(2, rate, 0.3), _tone(1, rate, 0.3, 330.0)])  # no pause anywhere
    pcm = (x * 32767).astype("<i2").tobytes()
    measured = [TurnSpan(0, 0.0, 2.0), TurnSpan(1, 2.0, 3.0)]
    script = "# T\n\n## Intro\n\n**Alex:** one two three\n\n## Outro\n\n**Sam:** four five six seven eight nine\n"
    out = publish(tmp_path, EPISODE, script, turns, SpeechOutput(pcm=pcm, sample_rate=rate, spans=measured),
                  [], _settings())
    assert out.report["timing"] == "measured"
    assert [c["startTime"] for c in json.loads((tmp_path / artifacts.CHAPTERS_JSON).read_text())["chapters"]] == [0.0, 2.0]
    spans, method = timing.turn_spans(turns, [], np.frombuffer(pcm, dtype="<i2"), rate, 350)
    assert method == "estimated"
    shuffled = [measured[1], measured[0]]  # not one per turn in order: not trusted
    assert timing.turn_spans(turns, shuffled, np.frombuffer(pcm, dtype="<i2"), rate, 350)[1] == "estimated"
    assert spans[1].start == pytest.approx((3.0 - 0.35) / 3 + 0.35, abs=0.01)  # a third of the words come first


def test_sim_speech_is_published_with_estimated_timing(tmp_path: Path) -> None:
    (tmp_path / artifacts.SCRIPT_MD).write_text(SCRIPT)
    settings = _settings(provider="sim")
    settings.providers.sim.latency_ms = 0
    assert run_stage("audio", tmp_path, EPISODE, StageContext(settings=settings)).ok
    doc = fsio.read_json(tmp_path / artifacts.AUDIO_JSON)
    assert doc["publish"]["timing"] == "estimated" and (tmp_path / artifacts.EPISODE_MP3).exists()


def test_our_loudness_and_true_peak_agree_with_pyloudnorm_and_scipy() -> None:
    """The sliced, per-chunk measurement stands for pyloudnorm's own and for a whole 4x oversampling."""
    import pyloudnorm
    from scipy.signal import resample_poly

    rate = 22050
    rng = np.random.default_rng(7)
    # bursts and pauses, several slices long: the filter state must carry across slice boundaries
    x = np.concatenate([_tone(0.7, rate, 0.4 * rng.random(), 150 + 400 * rng.random()) if i % 3 else
                        np.zeros(rate // 4) for i in range(200)]).astype(np.float32)
    assert x.size > 2 * loudness.SLICE
    ours = loudness.integrated_lufs(x, rate)
    theirs = pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
    assert abs(ours - theirs) < 0.05, (ours, theirs)
    whole = np.abs(resample_poly(x.astype(np.float64), 4, 1)).max()
    assert abs(loudness.db(loudness.true_peak(x)) - loudness.db(whole)) < 0.1


@pytest.mark.parametrize("knob, value", [("ENCODER_HEADROOM_DB", -1.0), ("CODEC_LOSS_LU", 3.0)])
def test_an_mp3_that_misses_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, knob: str,
                                          value: float) -> None:
    """Aimed past the ceiling (PCM peaks at 0 dBTP), or 3 LU too loud, the first encoding misses: it is
    read back, found off, and made again with the aim corrected; the independent decoder and meter agree."""
    from podspool.stages.providers.espeak import EspeakSpeech
    from podspool.stages.publish import episode as publishing
    from podspool.stages.script.format import parse_turns

    monkeypatch.setattr(publishing, knob, value)
    turns = parse_turns(SCRIPT)
    speech = EspeakSpeech().synthesize(turns, StageContext(settings=_settings()))
    out = publish(tmp_path, EPISODE, SCRIPT, turns, speech, [], _settings())
    report = out.report["loudness"]
    assert report["encodes"] >= 2 and report["file_true_peak_dbtp"] <= -1.0, report
    assert abs(report["file_lufs"] - -16.0) <= 0.5, report
    x, rate, channels = _decode(tmp_path / artifacts.EPISODE_MP3)
    lufs, peak = _heard(x, rate, channels)
    assert peak <= -1.0 and abs(lufs - -16.0) <= 1.0, (lufs, peak)


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_the_k_weighting_matches_pyloudnorms_at_every_rate(rate: int) -> None:
    """The biquads are pyloudnorm's, and the FFT convolution podspool filters with gives its loudness."""
    import pyloudnorm

    reference = pyloudnorm.Meter(rate)
    for (b, a), f in zip(loudness.k_weighting(rate), reference._filters.values(), strict=True):
        assert np.allclose(b, f.b) and np.allclose(a, f.a)
    rng = np.random.default_rng(rate)
    x = np.concatenate([rng.standard_normal(rate // 2) * 0.1 * (i % 4) for i in range(12)])
    assert abs(loudness.integrated_lufs(x, rate) - reference.integrated_loudness(x)) < 0.05


@pytest.mark.soak  # ten episodes through the daemon: about 15 s; the fixture's episode covers it meanwhile
def test_every_example_episode_measures_minus_16_as_heard(tmp_path: Path) -> None:
    """The example batch, offline (local research and writer, espeak), through the real daemon: every
    episode.mp3, decoded by libsndfile and metered by libebur128 as a player plays it (mono on both
    speakers), is -16 +-1 LUFS with true peaks at or under -1 dBTP."""
    from podspool_helpers import cli, episodes_in

    repo = Path(__file__).resolve().parents[1]
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "podspool.toml").write_text("[audio]\nprovider = \"espeak\"\n")
    assert cli("submit", str(repo / "examples" / "small_batch.json"), cwd=tmp_path).returncode == 0
    run = cli("run", "--once", cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    done = episodes_in(spool, "done")
    assert len(done) == 10, run.stderr[-2000:]
    for ep in done:
        x, rate, channels = _decode(spool / "done" / ep / artifacts.EPISODE_MP3)
        lufs, peak = _heard(x, rate, channels)
        print(f"{ep}: {lufs:.2f} LUFS as heard, {peak:.2f} dBTP")  # pytest -s shows the figures
        assert abs(lufs - -16.0) <= 1.0 and peak <= -1.0, (ep, lufs, peak)
