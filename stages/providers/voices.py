"""Who speaks in which voice: a show's cast and language, mapped onto each speech provider's voices.

Every speaker gets a voice that can be told apart from the others': the cast's own voice for the provider
when the manifest gives one, else the provider's configured voice for that name (today's `[audio] voices`
and `[providers.*] voices`), else a default by the speaker's place in the cast. Where speakers end up on
one voice (espeak's one voice per language, one Piper voice), each later speaker is bent to a distinct pitch
and pace instead.

What a provider cannot voice is said by speech_checks.py, which builds on this module and on the providers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from podspool.stages.base import StageContext, Turn
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


def espeak_language(language: str, exists: Callable[[str], bool] | None = None) -> str | None:
    """The espeak-ng voice of a BCP-47 language: the whole tag if espeak has it (pt-br, es-419), else its
    primary language; None when espeak-ng has neither. Without `exists` (espeak-ng's own look-up), the
    primary language's voice, unchecked."""
    tag = language.lower()
    primary = tag.split("-")[0]
    candidates = (tag, ESPEAK_ALIASES.get(primary, primary))
    if exists is None:
        return candidates[1]
    for candidate in candidates:
        if exists(candidate):
            return candidate
    return None




def espeak_voices(show: Show, configured: Mapping[str, str], turns: Sequence[Turn] = (),
                  exists: Callable[[str], bool] | None = None) -> dict[str, EspeakVoice]:
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
