"""Real espeak synthesis of a short two-host script, and the audio validation that guards every provider."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from podspool.stages import artifacts, fsio, pcm
from podspool.stages.audio import validate
from podspool.stages.base import EpisodeInput, SpeechOutput, StageContext, StageError
from podspool.stages.providers import voices as voice_rules
from podspool.stages.providers.espeak import EspeakSpeech
from podspool.stages.registry import run_stage
from podspool.stages.script.format import parse_turns
from podspool.stages.settings import AudioSettings, StageSettings

SCRIPT = """# Test

## Intro

**Alex:** Welcome to a short test of the speech stage, with two hosts taking turns. [1]

**Sam:** Thanks, Alex. Each of us should sound different, and the pauses should be there. [1]

## Sources

1. notes/test.md (paragraph 1)
"""
EPISODE = EpisodeInput(episode_id="ep_001_a", batch_id="a", number=1, topic="Test")


def _tone(seconds: float, rate: int, amplitude: float) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * math.pi * 220 * t)).astype("<i2").tobytes()


def test_parse_turns_strips_citations_and_skips_sources() -> None:
    turns = parse_turns(SCRIPT)
    assert [t.host for t in turns] == ["Alex", "Sam"]
    assert "[1]" not in turns[0].text and turns[0].text.endswith("taking turns.")


def test_espeak_stage_writes_valid_wav_mp3_and_json(tmp_path: Path) -> None:
    (tmp_path / artifacts.SCRIPT_MD).write_text(SCRIPT)
    result = run_stage("audio", tmp_path, EPISODE, StageContext(settings=StageSettings()))
    assert result.ok, result.error
    with wave.open(str(tmp_path / artifacts.AUDIO_WAV)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        seconds = w.getnframes() / w.getframerate()
    doc = fsio.read_json(tmp_path / artifacts.AUDIO_JSON)
    assert doc["words"] == 28 and abs(doc["seconds"] - seconds) < 0.01
    assert 28 / 165 * 60 * 0.5 < seconds < 28 / 165 * 60 * 1.5 + 1
    assert doc["rms"] > 0.01 and doc["cost_usd"] == 0.0 and doc["validation"]["passed"]
    mp3 = (tmp_path / artifacts.AUDIO_MP3).read_bytes()
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)  # an MPEG frame sync
    again = run_stage("audio", tmp_path, EPISODE, StageContext(settings=StageSettings()))
    assert again.ok and again.reused


def test_two_hosts_get_two_voices_pauses_and_the_configured_rate() -> None:
    turns = parse_turns(SCRIPT)
    voices = voice_rules.espeak_voices(voice_rules.show_of(StageContext(settings=StageSettings())), {}, turns)
    assert voices["Alex"] != voices["Sam"] and voices["Alex"].name == "en-us+m3"  # the config's two hosts
    same_text = [turns[0], type(turns[0])("Sam", turns[0].text)]
    tight = StageSettings(audio=AudioSettings(sample_rate=16000, pause_ms=0))
    alex, sam = (EspeakSpeech().synthesize([t], StageContext(settings=tight)).pcm for t in same_text)
    assert alex != sam  # the same words in two different voices
    out = EspeakSpeech().synthesize(turns, StageContext(settings=tight))
    assert out.sample_rate == 16000 and len(out.pcm) % 2 == 0
    paused = StageSettings(audio=AudioSettings(sample_rate=16000, pause_ms=500))
    longer = EspeakSpeech().synthesize(turns, StageContext(settings=paused))
    assert abs((len(longer.pcm) - len(out.pcm)) / 2 / 16000 - 0.5) < 0.02  # one pause between two turns


def test_unknown_voice_is_a_clear_permanent_error(tmp_path: Path) -> None:
    (tmp_path / artifacts.SCRIPT_MD).write_text(SCRIPT)
    settings = StageSettings(audio=AudioSettings(voices={"Alex": "no-such-voice"}))
    result = run_stage("audio", tmp_path, EPISODE, StageContext(settings=settings))
    assert not result.ok and not result.retryable and "no-such-voice" in (result.error or "")
    assert not (tmp_path / artifacts.AUDIO_WAV).exists()


@pytest.mark.parametrize("pcm_data, words, message", [
    (b"\x00\x00" * 22050 * 3, 8, "silent"),
    (struct.pack("<h", 32767) * 100 + _tone(3, 22050, 0.3), 8, "clips"),
    (_tone(3, 22050, 0.3), 200, "should take"),
    (_tone(30, 22050, 0.3), 8, "should take"),
])
def test_validation_rejects(pcm_data: bytes, words: int, message: str) -> None:
    with pytest.raises(StageError, match=message):
        validate(SpeechOutput(pcm=pcm_data, sample_rate=22050), words, 1, AudioSettings())


def test_validation_checks_rate_and_accepts_a_plausible_take() -> None:
    with pytest.raises(StageError, match="Hz"):
        validate(SpeechOutput(pcm=_tone(3, 16000, 0.3), sample_rate=16000), 8, 1, AudioSettings())
    report = validate(SpeechOutput(pcm=_tone(3, 22050, 0.3), sample_rate=22050), 8, 1, AudioSettings())
    assert report["longest_clip_run"] == 0 and report["rms"] > 0.2


def test_sim_speech_skips_only_the_duration_check(tmp_path: Path) -> None:
    (tmp_path / artifacts.SCRIPT_MD).write_text(SCRIPT)
    settings = StageSettings(audio=AudioSettings(provider="sim"))
    settings.providers.sim.latency_ms = 0
    result = run_stage("audio", tmp_path, EPISODE, StageContext(settings=settings))
    assert result.ok, result.error
    assert fsio.read_json(tmp_path / artifacts.AUDIO_JSON)["validation"]["duration_checked"] is False


def test_pcm_helpers() -> None:
    tone = _tone(1, 8000, 0.5)
    assert abs(pcm.rms(tone) - 0.5 / math.sqrt(2)) < 0.01
    assert len(pcm.resample(tone, 8000, 16000)) == 2 * len(tone)
    assert pcm.longest_clip_run(struct.pack("<h", -32768) * 5 + tone) == 5
