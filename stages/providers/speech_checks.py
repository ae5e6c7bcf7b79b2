"""What a speech provider cannot voice in a show, said before anything is spent: a cast voice that does
not exist, a language no configured voice speaks. It reads only settings and installed files (no API call),
so `validate`, `submit`, `plan` and `doctor` can all ask it. It builds on voices.py and the providers, and
neither imports it.
"""

from __future__ import annotations

from podspool.stages.providers.espeak import engine
from podspool.stages.providers.piper import installed_voices, voice_language, voice_path
from podspool.stages.providers.voices import (
    ELEVENLABS_ID,
    ELEVENLABS_LANGUAGES,
    OPENAI_HOST,
    OPENAI_LANGUAGES,
    OPENAI_VOICES,
    chosen,
    espeak_language,
)
from podspool.stages.settings import StageSettings
from podspool.stages.show import Show


def _espeak_has(voice: str) -> bool:
    eng = engine()
    with eng.lock:
        return bool(eng.has_voice(voice))


def speech_problems(show: Show, settings: StageSettings) -> list[str]:
    """Everything the configured speech provider cannot voice in this show, each named; empty when it can."""
    provider = settings.audio.provider
    check = _CHECKS.get(provider)
    return check(show, settings) if check else []


def _espeak_problems(show: Show, settings: StageSettings) -> list[str]:
    problems = []
    own = chosen(show, "espeak", settings.audio.voices)
    for name, voice in own.items():
        if voice and not _espeak_has(voice):
            problems.append(f"espeak-ng has no voice {voice!r} (the voice of {name})")
    if any(not v for v in own.values()) and espeak_language(show.language, _espeak_has) is None:
        problems.append(f"espeak-ng has no voice for language {show.language!r}: give each speaker an espeak voice "
                        "in cast[].voices.espeak, or choose another speech provider")
    return problems


def _piper_problems(show: Show, settings: StageSettings) -> list[str]:
    problems = []
    own = chosen(show, "piper", settings.providers.piper.voices)
    for name, voice in own.items():
        if voice:
            path = voice_path(voice)
            if path is None:
                problems.append(f"piper has no voice {voice!r} (the voice of {name}): give the path of a .onnx "
                                "with its .onnx.json beside it, or an installed voice's name")
            elif (lang := voice_language(path)) and lang != show.primary_language:
                problems.append(f"piper voice {voice!r} of {name} speaks {lang!r}, not {show.language!r}")
    if any(not v for v in own.values()):
        fitting = [p for p in installed_voices() if voice_language(p) == show.primary_language]
        if not fitting:
            problems.append(f"no installed piper voice speaks {show.language!r}: set cast[].voices.piper or "
                            "[providers.piper] voices, or install a voice of that language")
    return problems


def _elevenlabs_problems(show: Show, settings: StageSettings) -> list[str]:
    el = settings.providers.elevenlabs
    problems = [f"ElevenLabs voice id {voice!r} of {name} is not a voice id (20 letters and digits)"
                for name, voice in chosen(show, "elevenlabs", el.voices).items()
                if voice and not ELEVENLABS_ID.match(voice)]
    model = el.model_in_use
    spoken = ELEVENLABS_LANGUAGES.get(model)
    if spoken is not None and show.primary_language not in spoken:
        problems.append(f"ElevenLabs model {model} does not speak {show.language!r}: choose eleven_v3 or "
                        "eleven_multilingual_v2 ([providers.elevenlabs] model)")
    return problems


def _openai_problems(show: Show, settings: StageSettings) -> list[str]:
    sp = settings.providers.openai_speech
    if OPENAI_HOST not in sp.base_url:
        return []  # a local speech server: its voices and languages are its own
    problems = [f"OpenAI speech has no voice {voice!r} (the voice of {name}); it has {', '.join(sorted(OPENAI_VOICES))}"
                for name, voice in chosen(show, "openai", sp.voices).items() if voice and voice not in OPENAI_VOICES]
    if show.primary_language not in OPENAI_LANGUAGES:
        problems.append(f"OpenAI speech does not document language {show.language!r}")
    return problems


_CHECKS = {"espeak": _espeak_problems, "piper": _piper_problems, "elevenlabs": _elevenlabs_problems,
           "openai": _openai_problems}
