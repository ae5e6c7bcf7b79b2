"""Casts of one to four and a show's language, voiced: every speaker's voice told apart by its measured pitch
(espeak, for real) or by the voice id the loopback server received (ElevenLabs, OpenAI), the language's
voice asked for, and what a provider cannot voice named before anything is spent."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fakeapi import FakeApi
from fakespeech import dialogue_handler, openai_speech_handler
from podspool.stages import artifacts
from podspool.stages.base import EpisodeInput, StageContext, Turn
from podspool.stages.providers import espeak, speech_checks, voices
from podspool.stages.providers.elevenlabs import ElevenLabsSpeech
from podspool.stages.providers.openai.speech import OpenAISpeech
from podspool.stages.registry import run_stage
from podspool.stages.settings import StageSettings
from podspool.stages.show import CastMember, Show
from provider_helpers import make_ctx, pitch_hz

NAMES = ("Ana", "Ben", "Cleo", "Dev")
TEXT = "The galaxies spin faster at their edges than their visible stars can explain, said the scientist."
DISTINCT = 1.2  # two voices whose median pitch is 20 % apart are heard as two people


def show(n: int, language: str = "en", **voices_of: dict[str, str]) -> Show:
    cast = tuple(CastMember(name=name, voices=voices_of.get(name, {})) for name in NAMES[:n])  # type: ignore[arg-type]
    return Show(format="solo" if n == 1 else "conversation", cast=cast, language=language)


def assert_apart(pitches: list[float]) -> None:
    ordered = sorted(pitches)
    assert all(b / a >= DISTINCT for a, b in zip(ordered, ordered[1:], strict=False)), pitches


@pytest.mark.parametrize("n", [1, 2, 3])
def test_each_speaker_of_a_cast_has_a_pitch_of_its_own(n: int) -> None:
    cast = show(n)
    out = espeak.EspeakSpeech().synthesize([Turn(name, TEXT) for name in cast.names],
                                           StageContext(settings=StageSettings(), show=cast))
    x = np.frombuffer(out.pcm, dtype="<i2")
    assert len(out.spans) == n
    assert_apart([pitch_hz(x[int(s.start * out.sample_rate): int(s.end * out.sample_rate)], out.sample_rate)
                  for s in out.spans])


def test_a_cast_of_four_in_the_published_episode_read_back_by_libsndfile(tmp_path: Path) -> None:
    cast = show(4)
    script = "# Four voices\n\n## Intro\n\n" + "".join(f"**{name}:** {TEXT}\n\n" for name in cast.names)
    (tmp_path / artifacts.SCRIPT_MD).write_text(script)
    episode = EpisodeInput(episode_id="ep_001_four", batch_id="four", number=1, topic="Four", show=cast)
    result = run_stage("audio", tmp_path, episode, StageContext(settings=StageSettings()))
    assert result.ok, result.error
    x, rate = soundfile.read(str(tmp_path / artifacts.EPISODE_MP3), dtype="float64")
    spans = json.loads((tmp_path / artifacts.AUDIO_JSON).read_text())["publish"]["spans"]
    assert [s["host"] for s in spans] == list(NAMES)
    assert_apart([pitch_hz(x[int(s["start"] * rate): int(s["end"] * rate)], rate) for s in spans])


class _Voice(ctypes.Structure):
    """espeak_VOICE (speak_lib.h): `languages` is a priority byte, then the language name."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


@pytest.mark.parametrize("language, text", [
    ("de", "Die Galaxien drehen sich an ihren Rändern schneller, als ihre sichtbaren Sterne erklären können."),
    ("es", "Las galaxias giran más rápido en sus bordes de lo que sus estrellas visibles pueden explicar."),
])
def test_a_german_or_spanish_show_is_spoken_by_espeak_voices_of_its_language(
        language: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = espeak.engine()
    eng.lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
    spoken_in: list[str] = []
    real_speak = espeak._Engine.speak

    def speak(self: espeak._Engine, *args: object, **kw: object) -> bytes:
        pcm = real_speak(self, *args, **kw)  # type: ignore[arg-type]
        spoken_in.append(self.lib.espeak_GetCurrentVoice().contents.languages[1:].decode())  # as espeak-ng says
        return pcm

    monkeypatch.setattr(espeak._Engine, "speak", speak)
    cast = show(2, language)
    out = espeak.EspeakSpeech().synthesize([Turn(name, text) for name in cast.names],
                                           StageContext(settings=StageSettings(), show=cast))
    assert spoken_in == [language, language]
    x = np.frombuffer(out.pcm, dtype="<i2")
    assert_apart([pitch_hz(x[int(s.start * out.sample_rate): int(s.end * out.sample_rate)], out.sample_rate)
                  for s in out.spans])


def test_the_config_hosts_and_their_voices_stay_the_default_cast() -> None:
    settings = StageSettings()
    settings.production.hosts = ["Kim", "Lee"]
    settings.audio.voices = {"Lee": "en+f2"}
    ctx = StageContext(settings=settings)
    assert voices.show_of(ctx).names == ["Kim", "Lee"]
    chosen = voices.espeak_voices(voices.show_of(ctx), settings.audio.voices)
    assert chosen["Kim"].name == "en-us+m3" and chosen["Lee"].name == "en+f2"
    own = show(2, Ana={"espeak": "de+f3"})  # the cast's own voice wins over the config's by name
    assert voices.espeak_voices(own, {"Ana": "en"})["Ana"].name == "de+f3"


def test_elevenlabs_requests_carry_the_language_and_a_voice_per_speaker() -> None:
    cast = show(3, "de", Ben={"elevenlabs": "AZnzlk1XvdvUeBnXmlld"})
    turns = [Turn(name, "Guten Tag, das ist ein kurzer Satz.") for name in cast.names]
    with FakeApi(dialogue_handler()) as fake:
        ctx = make_ctx(fake, "elevenlabs")
        ctx.show = cast
        ElevenLabsSpeech().synthesize(turns, ctx)
    (request,) = fake.requests
    body = request.json()
    assert body["language_code"] == "de"
    ids = [i["voice_id"] for i in body["inputs"]]
    assert len(set(ids)) == 3 and ids[1] == "AZnzlk1XvdvUeBnXmlld"


def test_openai_speech_gives_four_speakers_four_voices_and_names_the_language() -> None:
    cast = show(4, "es")
    with FakeApi(openai_speech_handler()) as fake:
        ctx = make_ctx(fake, "openai_speech")
        ctx.show = cast
        OpenAISpeech().synthesize([Turn(name, "Hola, ¿qué tal?") for name in cast.names], ctx)
    bodies = [r.json() for r in fake.requests]
    assert len({b["voice"] for b in bodies}) == 4
    assert all("(es)" in b["instructions"] for b in bodies)  # gpt-4o-mini-tts takes instructions


def test_speech_problems_name_what_the_provider_cannot_voice() -> None:
    settings = StageSettings()
    assert speech_checks.speech_problems(show(4, "de"), settings) == []
    bad = speech_checks.speech_problems(show(2, "tlh", Ana={"espeak": "no-such-voice"}), settings)
    assert any("'no-such-voice'" in p and "Ana" in p for p in bad)
    assert any("'tlh'" in p for p in bad)

    settings.audio.provider = "elevenlabs"
    settings.providers.elevenlabs.model = "eleven_flash_v2"
    bad = speech_checks.speech_problems(show(2, "de", Ben={"elevenlabs": "not an id"}), settings)
    assert any("'not an id'" in p and "Ben" in p for p in bad) and any("eleven_flash_v2" in p for p in bad)

    settings.audio.provider = "openai"
    assert any("'robot'" in p for p in speech_checks.speech_problems(show(1, Ana={"openai": "robot"}), settings))
    settings.providers.openai_speech.base_url = "http://127.0.0.1:8880/v1"  # a local server: its own voices
    assert speech_checks.speech_problems(show(1, Ana={"openai": "robot"}), settings) == []

    settings.audio.provider = "piper"
    bad = speech_checks.speech_problems(show(1, Ana={"piper": "/no/such/voice.onnx"}), settings)
    assert any("/no/such/voice.onnx" in p for p in bad)
