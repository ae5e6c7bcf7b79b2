"""Who speaks in which voice: a show's cast and language, mapped onto each speech provider's voices.

Every speaker gets a voice that can be told apart from the others': the cast's own voice for the provider
when the manifest gives one, else the provider's configured voice for that name (today's `[audio] voices`
and `[providers.*] voices`), else a default by the speaker's place in the cast. Where speakers end up on
one voice (espeak's one voice per language, one Piper voice), each later speaker is bent to a distinct pitch
and pace instead.

`speech_problems` says, before anything is spent, what the chosen provider cannot voice: a cast voice that
does not exist, a language no configured voice speaks. It reads only settings and installed files (no API
call), so `validate`, `submit`, `plan` and `doctor` can all ask it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podspool.stages.base import StageContext, Turn
from podspool.stages.settings import StageSettings
from podspool.stages.show import Show, resolve


def _codes(words: str) -> frozenset[str]:
    return frozenset(words.split())


# espeak-ng: one voice per language; its variants (+m3, +f3, ...) and the pitch parameter (0-100, 50 is
# the voice's own) make four speakers whose median pitch lies 30 % or more apart (measured: about 103,
# 206, 72 and 140 Hz in English, German, Hindi and Japanese alike)
ESPEAK_STYLES = (("m3", 50, 1.0), ("f3", 50, 1.0), ("m1", 15, 0.94), ("f4", 25, 1.06))  # variant, pitch, pace
ESPEAK_ENGLISH = ("en-us", "en", "en-us", "en")  # American, British, American, British: told apart by ear
ESPEAK_ALIASES = {"zh": "cmn", "nb": "nb", "no": "nb"}  # BCP-47 primary tags espeak-ng names otherwise
ESPEAK_SHARED_PITCH = (50, 75, 25, 90)  # speakers given one explicit voice: bent apart by pitch

# ElevenLabs' premade voices: Rachel, Adam, Bella, Antoni (two female, two male)
ELEVENLABS_DEFAULTS = ("21m00Tcm4TlvDq8ikWAM", "pNInz6obpgDQGcFmaJgB", "EXAVITQu4vr4xnSDxMaL", "ErXwobaYiN019PkySvjV")
ELEVENLABS_ID = re.compile(r"^[A-Za-z0-9]{20}$")
# the languages each ElevenLabs model documents; a model not listed (eleven_v3: 70+ languages) is not checked
_MULTILINGUAL_V2 = _codes("en ja zh de hi fr ko pt it es id nl tr fil pl sv bg ro ar cs el fi hr ms sk da ta uk ru")
ELEVENLABS_LANGUAGES = {"eleven_multilingual_v2": _MULTILINGUAL_V2,
                        "eleven_flash_v2_5": _MULTILINGUAL_V2 | {"hu", "no", "vi"},
                        "eleven_turbo_v2_5": _MULTILINGUAL_V2 | {"hu", "no", "vi"},
                        "eleven_flash_v2": frozenset({"en"}), "eleven_turbo_v2": frozenset({"en"}),
                        "eleven_monolingual_v1": frozenset({"en"})}

OPENAI_DEFAULTS = ("alloy", "onyx", "nova", "echo")  # offered by tts-1, gpt-4o-mini-tts and most local servers
OPENAI_VOICES = _codes("alloy ash ballad coral echo fable nova onyx sage shimmer verse marin cedar")
OPENAI_HOST = "api.openai.com"  # any other base_url is a local server, with voices of its own
# the languages OpenAI's speech models document (those of Whisper), by ISO 639-1 code
OPENAI_LANGUAGES = _codes("af ar hy az be bs bg ca zh hr cs da nl en et fi fr gl de el he hi hu is id it ja kn kk ko lv lt "
                          "mk ms mr mi ne no nb fa pl pt ro ru sr sk sl es sw sv tl ta th tr uk ur vi cy")


def show_of(ctx: StageContext) -> Show:
    """The episode's show, or (a provider used alone) the one the config's defaults describe."""
    if ctx.show is not None:
        return ctx.show
    production = ctx.settings.production
    return resolve(production.show_defaults(), hosts=list(production.hosts))


def speakers(show: Show, turns: Sequence[Turn] = ()) -> list[str]:
    """Every speaker in cast order, then anyone the script names that the cast does not (kept, not refused)."""
    return list(dict.fromkeys([*show.names, *(t.host for t in turns)]))


def chosen(show: Show, provider: str, configured: Mapping[str, str], turns: Sequence[Turn] = ()) -> dict[str, str | None]:
    """Each speaker's own voice for `provider`: the cast's, else the config's by name; None: the default."""
    cast = {m.name: m.voices.get(provider) for m in show.cast}  # type: ignore[call-overload]
    return {name: cast.get(name) or configured.get(name) or None for name in speakers(show, turns)}


def by_index(names: Sequence[str], own: Mapping[str, str | None], defaults: Sequence[str]) -> dict[str, str]:
    """Each speaker's own voice, else the defaults by place in the cast (cycling past their number)."""
    return {name: own.get(name) or defaults[i % len(defaults)] for i, name in enumerate(names)}


# ---- espeak ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EspeakVoice:
    name: str  # what espeak_SetVoiceByName is given, e.g. "de+f3"
    pitch: int = 50  # espeak's pitch parameter, 0-100
    pace: float = 1.0  # times the configured words per minute


def espeak_language(language: str, exists: object = None) -> str | None:
    """The espeak-ng voice of a BCP-47 language: the whole tag if espeak has it (pt-br, es-419), else its
    primary language; None when espeak-ng has neither."""
    has = exists if callable(exists) else _espeak_has
    tag = language.lower()
    primary = tag.split("-")[0]
    for candidate in (tag, ESPEAK_ALIASES.get(primary, primary)):
        if has(candidate):
            return candidate
    return None


def _espeak_has(voice: str) -> bool:
    from podspool.stages.providers.espeak import engine

    eng = engine()
    with eng.lock:
        return bool(eng.has_voice(voice))


def espeak_voices(show: Show, configured: Mapping[str, str], turns: Sequence[Turn] = (),
                  exists: object = None) -> dict[str, EspeakVoice]:
    """Each speaker's espeak voice: its own, else the show's language in a variant, pitch and pace by place."""
    names = speakers(show, turns)
    own = chosen(show, "espeak", configured, turns)
    english = show.primary_language == "en"
    base = None if english else (espeak_language(show.language, exists) or show.primary_language)
    out: dict[str, EspeakVoice] = {}
    for i, name in enumerate(names):
        given = own.get(name)
        if given:
            rank = [n for n in names[:i] if own.get(n) == given]  # earlier speakers on the very same voice
            out[name] = EspeakVoice(given, ESPEAK_SHARED_PITCH[len(rank) % len(ESPEAK_SHARED_PITCH)])
            continue
        variant, pitch, pace = ESPEAK_STYLES[i % len(ESPEAK_STYLES)]
        language = ESPEAK_ENGLISH[i % len(ESPEAK_ENGLISH)] if english else base
        out[name] = EspeakVoice(f"{language}+{variant}", pitch, pace)
    return out


# ---- what cannot be voiced ------------------------------------------------------------------------


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
    if any(not v for v in own.values()) and espeak_language(show.language) is None:
        problems.append(f"espeak-ng has no voice for language {show.language!r}: give each speaker an espeak voice "
                        "in cast[].voices.espeak, or choose another speech provider")
    return problems


def _piper_problems(show: Show, settings: StageSettings) -> list[str]:
    from podspool.stages.providers.piper import installed_voices, voice_language, voice_path

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
    from podspool.stages.providers.elevenlabs import DEFAULT_MODELS

    el = settings.providers.elevenlabs
    problems = [f"ElevenLabs voice id {voice!r} of {name} is not a voice id (20 letters and digits)"
                for name, voice in chosen(show, "elevenlabs", el.voices).items()
                if voice and not ELEVENLABS_ID.match(voice)]
    model = el.model or DEFAULT_MODELS[el.mode]
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
