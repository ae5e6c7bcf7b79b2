"""Word-level text helpers shared by research ranking and the quality gates.

Readability is computed here rather than with textstat: textstat 0.7.13 downloads NLTK's cmudict at
run time, which fails offline (the default mode of podspool). A vowel-group syllable heuristic is
within a syllable or so per sentence of a dictionary, which is plenty for a range check.
"""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")

_STOPWORD_LIST = """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more
most my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves one two many much may might must us
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def tokens(text: str) -> list[str]:
    """Lower-case content words with a light plural/suffix folding, for BM25 and overlap checks."""
    return [t for t in map(_content_word, _WORD.findall(text)) if t is not None]


# Cached, like syllables(): a worker meets the same vocabulary in every script and finding.
@functools.lru_cache(maxsize=16384)
def _content_word(word: str) -> str | None:
    """`word` lower-cased and folded, or None for a stopword or a single character."""
    w = word.lower()
    return _fold(w) if w not in STOPWORDS and len(w) > 1 else None


def _fold(word: str) -> str:
    # enough folding that "stars"/"star" and "sleeping"/"sleep" meet; no dictionary needed
    for suffix in ("ing", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


@functools.lru_cache(maxsize=16384)  # most of the readability score's cost, and words recur across scripts
def syllables(word: str) -> int:
    w = word.lower()
    if not w.isalpha():
        return max(1, len(w) // 3) if any(c.isdigit() for c in w) else 1
    count = len(_VOWEL_GROUPS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and count > 1:
        count -= 1  # silent final e: "make", "time"
    if w.endswith(("ed", "es")) and count > 1 and not w.endswith(("ted", "ded", "ses", "zes", "ces", "ges")):
        count -= 1  # "jumped", "makes"
    return max(1, count)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if _WORD.search(s)]


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease (higher is easier; conversational English sits around 60-80)."""
    ws = words(text)
    if not ws:
        return 0.0
    n_sentences = max(1, len(sentences(text)))
    n_syllables = sum(syllables(w) for w in ws)
    return 206.835 - 1.015 * (len(ws) / n_sentences) - 84.6 * (n_syllables / len(ws))
