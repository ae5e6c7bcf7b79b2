"""Speech through ElevenLabs (`POST {base_url}/v1/text-to-speech/{voice_id}?output_format=pcm_…`).

One voice per host; each turn is sent in pieces under `max_chars_per_request`, cut at sentence
boundaries, and each request names the last three request ids of the same voice
(`previous_request_ids`) so the prosody flows across pieces. Raw PCM is asked for, so the audio
stage can validate and encode it itself.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import requests
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers.http import HttpClient, MalformedResponse, require_key

API = "elevenlabs"
# ElevenLabs' premade voices: Rachel and Adam. Hosts beyond two alternate between them.
DEFAULT_VOICES = ("21m00Tcm4TlvDq8ikWAM", "pNInz6obpgDQGcFmaJgB")
STITCH_DEPTH = 3  # the API accepts at most three previous_request_ids
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
CITATION = re.compile(r"\s*\[\d+(?:[,\s]*\d+)*\]")


@dataclass
class Clip:
    pcm: bytes
    request_id: str | None
    characters: int


def sample_rate_of(output_format: str) -> int:
    m = re.fullmatch(r"pcm_(\d{4,6})", output_format)
    if not m:
        raise StageError(f"elevenlabs: output_format {output_format!r} is not pcm_<rate>; the audio stage "
                         "needs raw PCM to validate and encode", retryable=False)
    return int(m.group(1))


def spoken(text: str) -> str:
    """What a listener should hear: no [1] citation markers, no markdown emphasis."""
    return re.sub(r"\s{2,}", " ", CITATION.sub("", text).replace("**", "").replace("__", "")).strip()


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut between sentences, else between words."""
    parts = (part for sentence in SENTENCE_END.split(text.strip()) for part in _cut_long(sentence, limit))
    return _pack(parts, limit)


def _cut_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    # a "word" longer than a request is cut hard
    return _pack((word[i:i + limit] for word in sentence.split() for i in range(0, len(word), limit)), limit)


def _pack(parts: Iterable[str], limit: int) -> list[str]:
    """Join parts with spaces into as few pieces of at most `limit` characters as order allows."""
    out: list[str] = []
    current = ""
    for part in parts:
        if current and len(current) + 1 + len(part) > limit:
            out.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    if current:
        out.append(current)
    return out


def voices_for(turns: list[Turn], configured: dict[str, str]) -> dict[str, str]:
    hosts = list(dict.fromkeys(t.host for t in turns))
    return {h: configured.get(h) or DEFAULT_VOICES[i % len(DEFAULT_VOICES)] for i, h in enumerate(hosts)}


def _clip(response: requests.Response) -> Clip:
    ctype = response.headers.get("content-type", "")
    data = response.content
    if "json" in ctype or "text" in ctype:
        raise MalformedResponse(f"expected PCM audio, got {ctype} ({len(data)} bytes)")
    if not data or len(data) % 2:
        raise MalformedResponse(f"PCM body of {len(data)} bytes is not whole 16-bit samples")
    cost = response.headers.get("character-cost", "")
    return Clip(data, response.headers.get("request-id"), int(cost) if cost.isdigit() else 0)


class ElevenLabsSpeech:
    name = "elevenlabs"

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.providers.elevenlabs
        rate = sample_rate_of(settings.output_format)
        key = require_key(ctx, API)
        if not any(spoken(t.text) for t in turns):
            raise StageError("elevenlabs: the script has no spoken lines", retryable=False)
        voices = voices_for(turns, settings.voices)
        history: dict[str, deque[str]] = {v: deque(maxlen=STITCH_DEPTH) for v in voices.values()}
        pause = b"\x00\x00" * int(rate * ctx.settings.audio.pause_ms / 1000)
        parts: list[bytes] = []
        characters = requests_made = 0
        for turn in turns:
            text = spoken(turn.text)
            if not text:
                continue
            voice = voices[turn.host]
            for piece in split_text(text, settings.max_chars_per_request):
                body: dict[str, object] = {"text": piece, "model_id": settings.model}
                if history[voice]:
                    body["previous_request_ids"] = list(history[voice])
                clip = self.http.call(ctx, settings, f"/v1/text-to-speech/{voice}", body=body, parse=_clip,
                                      params={"output_format": settings.output_format},
                                      headers={"xi-api-key": key}, key=key)
                if clip.request_id:
                    history[voice].append(clip.request_id)
                parts.append(clip.pcm)
                characters += clip.characters or len(piece)
                requests_made += 1
            parts.append(pause)
        usage = Usage(api=API, model=settings.model, requests=requests_made, characters=characters)
        return SpeechOutput(pcm=b"".join(parts[:-1]), sample_rate=rate, usage=[usage])
