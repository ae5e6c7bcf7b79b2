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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from loguru import logger
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers import voices
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json, require_key
from podspool.stages.providers.speech_clips import ClipStore, clip_name
from podspool.stages.providers.speech_text import SENTENCE_END, Piece, Timeline, pieces_of
from podspool.stages.settings import ElevenLabsSettings

API = "elevenlabs"
DEFAULT_VOICES = voices.ELEVENLABS_DEFAULTS  # premade: Rachel, Adam, Bella, Antoni, by place in the cast
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # the pcm_<rate> output formats offered
STITCH_DEPTH = 3  # the API accepts at most three previous_request_ids
NO_STITCHING = frozenset({"eleven_v3"})  # models that refuse previous_request_ids
DIALOGUE_PATH = "/v1/text-to-dialogue/with-timestamps"
MIN_HEAD_CHARS = 200  # room left in a request worth filling with the head of the next piece


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
    """Consecutive pieces in as few requests of at most `limit` characters as order allows.

    A piece that does not fit what is left of a request is cut between its sentences, its head filling
    the request and the rest opening the next: requests come out nearly full (about 0.5 a minute of
    speech at 2,000 characters), not cut short wherever a long turn happens to begin.
    """
    requests_: list[list[Piece]] = []
    size = limit  # no request open yet
    for piece in pieces:
        room = limit - size
        if len(piece.text) > room and room >= MIN_HEAD_CHARS:
            head, rest = _head(piece.text, room)
            if head:
                requests_[-1].append(Piece(piece.turn, piece.host, head, piece.first))
                piece = Piece(piece.turn, piece.host, rest, False)  # the turn goes on, without a pause
                size = limit
        if len(piece.text) <= limit - size:
            requests_[-1].append(piece)
            size += len(piece.text)
        else:
            requests_.append([piece])
            size = len(piece.text)
    return requests_


def _head(text: str, room: int) -> tuple[str, str]:
    """The most whole sentences of `text` that fit `room` characters, and the rest."""
    sentences = SENTENCE_END.split(text)
    head: list[str] = []
    for sentence in sentences:
        if len(" ".join([*head, sentence])) > room:
            break
        head.append(sentence)
    return " ".join(head), " ".join(sentences[len(head):])


class ElevenLabsSpeech:
    name = "elevenlabs"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.providers.elevenlabs
        model = settings.model_in_use
        fmt = output_format(settings, ctx.settings.audio.sample_rate)
        rate = sample_rate_of(fmt)
        key = require_key(ctx, API)
        show = voices.show_of(ctx)
        pieces = pieces_of(turns, settings.max_chars_per_request, API)
        names = voices.speakers(show, turns)
        voice_of = voices.by_index(names, voices.chosen(show, API, settings.voices, turns), voices.ELEVENLABS_DEFAULTS)
        timeline = Timeline(ctx.settings.audio.sample_rate, ctx.settings.audio.pause_ms, ctx.folder)
        call = self._dialogue if settings.mode == "dialogue" else self._per_turn
        job = _Job(ctx, settings, model, fmt, rate, key, show.primary_language, ClipStore(ctx.folder))
        usage = Usage(api=API, model=model, requests=0)  # what has been paid for in this attempt
        try:
            call(pieces, voice_of, timeline, job, usage)
        except BaseException as exc:
            timeline.discard()
            if isinstance(exc, StageError) and usage.requests:  # the requests that succeeded were billed
                exc.usage = [*exc.usage, usage]
            raise
        if job.clips.reused:
            logger.info("elevenlabs: {} request(s) answered from an earlier attempt's clips", job.clips.reused)
        return timeline.output([usage])

    def _ask(self, job: _Job, index: int, path: str, body: Mapping[str, object], parse: Any, usage: Usage,
             paid: int, unnamed: Mapping[str, object] | None = None) -> Clip:
        """One request's clip: kept from an earlier attempt, else asked for and kept at once. The clip is
        named by `body`; `unnamed` fields are sent too but differ from attempt to attempt (stitching ids)."""
        name = clip_name(index, {"path": path, "body": body, "format": job.fmt})
        saved = job.clips.load(name)
        if saved is not None:
            times = {int(k): (float(a), float(b)) for k, (a, b) in saved.meta.get("times", {}).items()}
            return Clip(saved.pcm, saved.meta.get("request_id"), int(saved.meta.get("characters", 0)), times)
        clip: Clip = self.http.call(job.ctx, job.settings, path, body={**body, **(unnamed or {})}, parse=parse,
                                    params={"output_format": job.fmt}, headers={"xi-api-key": job.key}, key=job.key)
        usage.requests += 1
        usage.characters += clip.characters or paid
        job.clips.save(name, {"request_id": clip.request_id, "characters": clip.characters,
                              "times": {str(k): list(v) for k, v in clip.times.items()}}, clip.pcm)
        return clip

    def _dialogue(self, pieces: list[Piece], voice_of: dict[str, str], timeline: Timeline, job: _Job,
                  usage: Usage) -> None:
        batches = pack(pieces, job.settings.max_chars_per_request)
        bodies = [{"inputs": [{"text": p.text, "voice_id": voice_of[p.host]} for p in batch], "model_id": job.model,
                   "language_code": job.language} for batch in batches]
        job.clips.keep_only({clip_name(k, {"path": DIALOGUE_PATH, "body": b, "format": job.fmt})
                             for k, b in enumerate(bodies)})
        for k, (batch, body) in enumerate(zip(batches, bodies, strict=True)):

            def parse(response: requests.Response, n: int = len(batch)) -> Clip:
                return dialogue_clip(response, n, job.rate)

            clip = self._ask(job, k, DIALOGUE_PATH, body, parse, usage, sum(len(p.text) for p in batch))
            if batch[0].first:  # a new turn starts this request; a continuation follows on directly
                timeline.pause()
            by_turn: dict[int, tuple[float, float]] = {}
            for i, (start, end) in clip.times.items():  # two pieces of one turn may share a request
                old = by_turn.get(batch[i].turn, (start, end))
                by_turn[batch[i].turn] = (min(old[0], start), max(old[1], end))
            timeline.append(clip.pcm, times=by_turn, rate=job.rate)

    def _per_turn(self, pieces: list[Piece], voice_of: dict[str, str], timeline: Timeline, job: _Job,
                  usage: Usage) -> None:
        stitch = job.model not in NO_STITCHING
        history: dict[str, deque[str]] = {v: deque(maxlen=STITCH_DEPTH) for v in voice_of.values()}

        def body_of(piece: Piece) -> dict[str, object]:
            return {"text": piece.text, "model_id": job.model, "language_code": job.language}

        job.clips.keep_only({clip_name(k, {"path": f"/v1/text-to-speech/{voice_of[p.host]}", "body": body_of(p),
                                           "format": job.fmt}) for k, p in enumerate(pieces)})
        for k, piece in enumerate(pieces):
            voice = voice_of[piece.host]
            stitching = {"previous_request_ids": list(history[voice])} if stitch and history[voice] else {}
            clip = self._ask(job, k, f"/v1/text-to-speech/{voice}", body_of(piece), _audio_clip, usage,
                             len(piece.text), stitching)
            if clip.request_id:
                history[voice].append(clip.request_id)
            if piece.first:
                timeline.pause()
            timeline.append(clip.pcm, turn=piece.turn, rate=job.rate)


@dataclass(frozen=True)
class _Job:
    """What every request of one episode's speech shares."""

    ctx: StageContext
    settings: ElevenLabsSettings
    model: str
    fmt: str
    rate: int
    key: str
    language: str  # ISO 639-1, sent as language_code
    clips: ClipStore
