"""What the script's gates and prompts know about a language: its name, how its words are counted, and
whether its readability can be judged.

Names come from langcodes (with language_data), the IANA registry's reading of BCP-47 tags, rather than a
table of our own. Readability is judged only where a published adaptation of Flesch's reading ease exists
for the language; elsewhere the gate says it cannot judge, rather than failing a script it cannot read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import langcodes
from podspool.stages.words import flesch_reading_ease, words

# written without spaces between words: count characters, and convert with a typical word length
# (CJK: about 1.5 characters a word in Chinese, 2.5 in Japanese text mixing kanji and kana)
CHARACTERS_PER_WORD: dict[str, float] = {"zh": 1.5, "yue": 1.5, "ja": 2.5, "th": 5.0, "lo": 5.0, "km": 5.0,
                                         "my": 5.0}
PRIVATE_USE = re.compile(r"q[a-t][a-z]|x-.*")
_VOWEL_GROUPS = re.compile(r"[aeiouyäöüáéíóúàèìòùâêîôûãõœæåëïÿ]+")
_SENTENCE = re.compile(r"[^.!?¡¿]+(?:[.!?]+|$)")


def primary(tag: str) -> str:
    """The language subtag, lower case ("pt-BR" -> "pt"); a deprecated tag by its preferred form."""
    try:
        return str(langcodes.Language.get(tag).language or tag.split("-")[0]).lower()
    except (ValueError, langcodes.LanguageTagError):
        return tag.split("-")[0].lower()


@functools.lru_cache(maxsize=256)
def is_known(tag: str) -> bool:
    """A tag the IANA registry knows ("de", "es-MX"; not "xx", nor a private-use "qaa")."""
    try:
        lang = langcodes.Language.get(tag)
    except (ValueError, langcodes.LanguageTagError):
        return False
    # private use (qaa-qtz, x-...) names no language; asked without display_name(), whose tables cost the
    # supervisor 80 ms at its first intake
    return bool(lang.is_valid() and lang.language and not PRIVATE_USE.fullmatch(lang.language))


@functools.lru_cache(maxsize=256)
def name(tag: str) -> str:
    """The language's English name ("German", "Spanish (Mexico)"), or the tag itself when unknown."""
    try:
        shown = langcodes.Language.get(tag).display_name()
    except (ValueError, langcodes.LanguageTagError):
        return tag
    return tag if shown.startswith("Unknown language") else shown


def spoken_words(text: str, tag: str) -> int:
    """How many words `text` holds in language `tag`, as the length gates count them."""
    lang = primary(tag)
    if lang == "en":
        return len(words(text))  # as before: "well-known" is two words, "don't" one
    if lang in CHARACTERS_PER_WORD:
        letters = sum(1 for c in text if c.isalnum())
        return round(letters / CHARACTERS_PER_WORD[lang])
    # a word is what spaces separate, if it holds a letter or digit ("Größe", "हिन्दी", not "—")
    return sum(1 for t in text.split() if any(c.isalnum() for c in t))


def _syllables(word: str) -> int:
    return max(1, len(_VOWEL_GROUPS.findall(word.lower())))


def _adapted(a: float, per_sentence: float, per_syllable: float) -> Callable[[str], float]:
    """A Flesch adaptation: a - per_sentence * words/sentence - per_syllable * syllables/word."""

    def ease(text: str) -> float:
        ws = [t for t in re.findall(r"[^\W\d_]+", text)]
        if not ws:
            return 0.0
        n_sentences = max(1, sum(1 for s in _SENTENCE.findall(text) if s.strip()))
        return a - per_sentence * len(ws) / n_sentences - per_syllable * sum(map(_syllables, ws)) / len(ws)

    return ease


# the published adaptations, each on Flesch's 0-100 scale (higher is easier)
READING_EASE: dict[str, tuple[str, Callable[[str], float]]] = {
    "en": ("Flesch reading ease", flesch_reading_ease),
    "de": ("Flesch-Amstad reading ease", _adapted(180.0, 1.0, 58.5)),
    "es": ("Szigriszt-Pazos readability", _adapted(206.835, 1.0, 62.3)),
    "fr": ("Kandel-Moles reading ease", _adapted(207.0, 1.015, 73.6)),
    "it": ("Flesch-Vacca reading ease", _adapted(206.0, 1.0, 65.0)),
    "nl": ("Flesch-Douma reading ease", _adapted(206.835, 0.93, 77.0)),
    "pt": ("Flesch-Martins reading ease", _adapted(248.835, 1.015, 84.6)),
}


def reading_ease(text: str, tag: str) -> tuple[str, float] | None:
    """(the formula's name, its score) for the language of `tag`; None where no formula judges it."""
    formula = READING_EASE.get(primary(tag))
    return None if formula is None else (formula[0], formula[1](text))
