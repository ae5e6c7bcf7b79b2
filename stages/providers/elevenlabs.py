"""Speech through ElevenLabs, in as few requests as the script allows.

mode = "dialogue" (default): `POST {base_url}/v1/text-to-dialogue/with-timestamps`, every voice in one
request. Turns are packed into requests of at most `max_chars_per_request` characters, cut only
between turns or sentences, so a 450-word episode takes two requests instead of one per turn. The
answer's `voice_segments` time each input, which gives the turn spans.

mode = "per_turn": `POST {base_url}/v1/text-to-speech/{voice_id}` per turn (pieces of a long one),
each naming the last three request ids of the same voice (`previous_request_ids`) so the prosody
flows across requests; the API refuses stitching for eleven_v3, so it is not sent there.

Raw PCM is asked for, at the configured sample rate where ElevenLabs offers it, so the audio stage
can validate and encode it without resampling.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from dataclasses import dataclass, field

import requests
from loguru import logger
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json, require_key
from podspool.stages.providers.speech_text import Piece, Timeline, pieces_of, voices_for
from podspool.stages.settings import ElevenLabsSettings

API = "elevenlabs"
# ElevenLabs' premade voices: Rachel and Adam. Hosts beyond two alternate between them.
DEFAULT_VOICES = ("21m00Tcm4TlvDq8ikWAM", "pNInz6obpgDQGcFmaJgB")
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # the pcm_<rate> output formats offered
STITCH_DEPTH = 3  # the API accepts at most three previous_request_ids
NO_STITCHING = frozenset({"eleven_v3"})  # models that refuse previous_request_ids
# text-to-dialogue is eleven_v3's; per-turn speech defaults to the model that takes stitching
DEFAULT_MODELS = {"dialogue": "eleven_v3", "per_turn": "eleven_multilingual_v2"}
DIALOGUE_PATH = "/v1/text-to-dialogue/with-timestamps"


@dataclass
class Clip:
    pcm: bytes
    request_id: str | None
    characters: int  # billed, from the character-cost header; 0 when absent
    times: dict[int, tuple[float, float]] = field(default_factory=dict)  # input index -> (start, end)


def output_format(settings: ElevenLabsSettings, wanted_rate: int) -> str:
    """The configured format, else pcm at the wanted rate, else at the next rate up that is offered."""
    if settings.output_format:
        return settings.output_format
    return f"pcm_{next((r for r in PCM_RATES if r >= wanted_rate), PCM_RATES[-1])}"


def sample_rate_of(fmt: str) -> int:
    m = re.fullmatch(r"pcm_(\d{4,6})", fmt)
    if not m:
        raise StageError(f"elevenlabs: output_format {fmt!r} is not pcm_<rate>; the audio stage "
                         "needs raw PCM to validate and encode", retryable=False)
    return int(m.group(1))


def _checked_pcm(data: bytes) -> bytes:
    if not data or len(data) % 2:
        raise MalformedResponse(f"PCM body of {len(data)} bytes is not whole 16-bit samples")
    return data


def _billed(response: requests.Response) -> int:
    cost = response.headers.get("character-cost", "")
    return int(cost) if cost.isdigit() else 0


def _audio_clip(response: requests.Response) -> Clip:
    """A text-to-speech answer: the PCM itself."""
    ctype = response.headers.get("content-type", "")
    if "json" in ctype or "text" in ctype:
        raise MalformedResponse(f"expected PCM audio, got {ctype} ({len(response.content)} bytes)")
    return Clip(_checked_pcm(response.content), response.headers.get("request-id"), _billed(response))


def dialogue_clip(response: requests.Response, n_inputs: int, rate: int) -> Clip:
    """A text-to-dialogue/with-timestamps answer: base64 PCM plus the time span of every input."""
    doc = parse_json(response)
    try:
        pcm = base64.b64decode(doc["audio_base64"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise MalformedResponse("no valid audio_base64 in the dialogue answer") from None
    pcm = _checked_pcm(pcm)
    seconds = len(pcm) / 2 / rate
    times: dict[int, tuple[float, float]] = {}
    for seg in doc.get("voice_segments") or []:
        try:
            i, start, end = int(seg["dialogue_input_index"]), float(seg["start_time_seconds"]), \
                float(seg["end_time_seconds"])
        except (KeyError, TypeError, ValueError):
            raise MalformedResponse("a voice_segment lacks dialogue_input_index or its times") from None
        if not 0 <= i < n_inputs:
            raise MalformedResponse(f"voice_segment for input {i}, but {n_inputs} inputs were sent")
        old = times.get(i, (start, end))
        times[i] = (min(old[0], start), max(old[1], end))
    if n_inputs == 1 and not times:
        times[0] = (0.0, seconds)  # one input is the whole clip
    _fill_gaps(times, n_inputs, seconds)
    return Clip(pcm, response.headers.get("request-id"), _billed(response), times)


def _fill_gaps(times: dict[int, tuple[float, float]], n_inputs: int, seconds: float) -> None:
    """An input the server reported no segment for lies between its neighbours' reported times."""
    missing = [i for i in range(n_inputs) if i not in times]
    if not missing:
        return
    logger.warning("elevenlabs: no voice_segment for input(s) {}; timed between their neighbours", missing)
    for i in missing:
        before = max((times[j][1] for j in times if j < i), default=0.0)
        after = min((times[j][0] for j in times if j > i), default=seconds)
        times[i] = (before, max(before, after))


def pack(pieces: list[Piece], limit: int) -> list[list[Piece]]:
    """Consecutive pieces in as few requests of at most `limit` characters as order allows."""
    requests_: list[list[Piece]] = []
    size = 0
    for piece in pieces:
        if requests_ and size + len(piece.text) <= limit:
            requests_[-1].append(piece)
            size += len(piece.text)
        else:
            requests_.append([piece])
            size = len(piece.text)
    return requests_


class ElevenLabsSpeech:
    name = "elevenlabs"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.providers.elevenlabs
        model = settings.model or DEFAULT_MODELS[settings.mode]
        fmt = output_format(settings, ctx.settings.audio.sample_rate)
        rate = sample_rate_of(fmt)
        key = require_key(ctx, API)
        pieces = pieces_of(turns, settings.max_chars_per_request, API)
        voices = voices_for(turns, settings.voices, DEFAULT_VOICES, ctx.settings.production.hosts)
        timeline = Timeline(rate, ctx.settings.audio.pause_ms)
        call = self._dialogue if settings.mode == "dialogue" else self._per_turn
        usage = Usage(api=API, model=model, requests=0)  # what has been paid for so far
        try:
            call(pieces, voices, timeline, ctx, settings, model, fmt, key, usage)
        except StageError as exc:
            if usage.requests:  # the requests that did succeed were billed: the attempt's cost says so
                exc.usage = [*exc.usage, usage]
            raise
        return SpeechOutput(pcm=timeline.pcm(), sample_rate=rate, usage=[usage], spans=timeline.spans())

    def _dialogue(self, pieces: list[Piece], voices: dict[str, str], timeline: Timeline, ctx: StageContext,
                  settings: ElevenLabsSettings, model: str, fmt: str, key: str, usage: Usage) -> None:
        batches = pack(pieces, settings.max_chars_per_request)
        for batch in batches:
            body = {"inputs": [{"text": p.text, "voice_id": voices[p.host]} for p in batch], "model_id": model}

            def parse(response: requests.Response, n: int = len(batch)) -> Clip:
                return dialogue_clip(response, n, timeline.sample_rate)

            clip = self.http.call(ctx, settings, DIALOGUE_PATH, body=body, parse=parse,
                                  params={"output_format": fmt}, headers={"xi-api-key": key}, key=key)
            if batch[0].first:  # a new turn starts this request; a continuation follows on directly
                timeline.pause()
            by_turn: dict[int, tuple[float, float]] = {}
            for i, (start, end) in clip.times.items():  # two pieces of one turn may share a request
                old = by_turn.get(batch[i].turn, (start, end))
                by_turn[batch[i].turn] = (min(old[0], start), max(old[1], end))
            timeline.append(clip.pcm, times=by_turn)
            usage.requests += 1
            usage.characters += clip.characters or sum(len(p.text) for p in batch)

    def _per_turn(self, pieces: list[Piece], voices: dict[str, str], timeline: Timeline, ctx: StageContext,
                  settings: ElevenLabsSettings, model: str, fmt: str, key: str, usage: Usage) -> None:
        stitch = model not in NO_STITCHING
        history: dict[str, deque[str]] = {v: deque(maxlen=STITCH_DEPTH) for v in voices.values()}
        for piece in pieces:
            voice = voices[piece.host]
            body: dict[str, object] = {"text": piece.text, "model_id": model}
            if stitch and history[voice]:
                body["previous_request_ids"] = list(history[voice])
            clip = self.http.call(ctx, settings, f"/v1/text-to-speech/{voice}", body=body, parse=_audio_clip,
                                  params={"output_format": fmt}, headers={"xi-api-key": key}, key=key)
            if clip.request_id:
                history[voice].append(clip.request_id)
            if piece.first:
                timeline.pause()
            timeline.append(clip.pcm, turn=piece.turn)
            usage.requests += 1
            usage.characters += clip.characters or len(piece.text)
