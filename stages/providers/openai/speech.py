"""Speech through any OpenAI-compatible `POST {base_url}/audio/speech` (Bearer key, optional locally).

One voice per host, so one request per turn (a turn over 4,096 characters is cut at sentences):
the request's audio is the turn's span, measured. `response_format = "pcm"` is raw 16-bit mono at
24 kHz on OpenAI (`pcm_sample_rate` for a server that differs); "wav" carries its own rate.

Rate limits: these requests count against the api name "openai_speech", apart from the script
writer's "openai", because a local speech server and a remote chat model have nothing in common;
the key is the same OPENAI_API_KEY.
"""

from __future__ import annotations

import struct

import requests
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers.http import HttpClient, MalformedResponse
from podspool.stages.providers.speech_text import Piece, Timeline, pieces_of, voices_for

API = "openai_speech"
DEFAULT_VOICES = ("alloy", "onyx")  # offered by tts-1, gpt-4o-mini-tts and most local servers
WAV_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)  # a streamed WAV does not know its length up front


def wav_pcm(data: bytes) -> tuple[bytes, int]:
    """(16-bit mono PCM, sample rate) of a WAV body; tolerant of a streamed header's unknown sizes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MalformedResponse(f"expected a WAV body, got {data[:16]!r}")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if (fmt, channels, bits) not in ((1, 1, 16), (0xFFFE, 1, 16)):
                raise StageError(f"openai_speech: WAV of format {fmt}, {channels} channel(s), {bits} bits; "
                                 "16-bit mono PCM is needed", retryable=False)
        elif cid == b"data":
            if not rate:
                raise MalformedResponse("WAV data before its fmt chunk")
            end = len(data) if size in WAV_PLACEHOLDER_SIZES else body + size
            if end > len(data):
                raise MalformedResponse(f"WAV cut short: {len(data) - body} of {size} data bytes")
            pcm = data[body:end]
            return pcm[: len(pcm) - len(pcm) % 2], rate
        pos = body + size + (size & 1)
    raise MalformedResponse("WAV body without a data chunk")


class OpenAISpeech:
    name = "openai"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.providers.openai_speech
        key = ctx.secrets.get(API) or None  # local servers need none
        pieces = pieces_of(turns, settings.max_chars_per_request, API)
        voices = voices_for(turns, settings.voices, DEFAULT_VOICES, ctx.settings.production.hosts)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeline: Timeline | None = None
        usage = Usage(api=API, model=settings.model, requests=0)  # what has been paid for so far
        try:
            for piece in pieces:
                timeline = self._speak(piece, voices, timeline, headers, ctx, key, usage)
        except StageError as exc:
            if usage.requests:  # the requests that did succeed were billed: the attempt's cost says so
                exc.usage = [*exc.usage, usage]
            raise
        assert timeline is not None  # pieces_of never returns an empty list
        return SpeechOutput(pcm=timeline.pcm(), sample_rate=timeline.sample_rate, usage=[usage],
                            spans=timeline.spans())

    def _speak(self, piece: Piece, voices: dict[str, str], timeline: Timeline | None, headers: dict[str, str],
               ctx: StageContext, key: str | None, usage: Usage) -> Timeline:
        """One request for one piece, its audio appended to the episode's timeline (made on the first)."""
        settings = ctx.settings.providers.openai_speech
        body: dict[str, object] = {"model": settings.model, "input": piece.text, "voice": voices[piece.host],
                                   "response_format": settings.response_format}
        if settings.speed != 1.0:
            body["speed"] = settings.speed
        if settings.instructions:
            body["instructions"] = settings.instructions

        def parse(response: requests.Response) -> tuple[bytes, int]:
            ctype = response.headers.get("content-type", "")
            if "json" in ctype or "text/" in ctype:
                raise MalformedResponse(f"expected audio, got {ctype} ({len(response.content)} bytes)")
            if settings.response_format == "wav":
                pcm, rate = wav_pcm(response.content)
            else:
                pcm, rate = response.content, settings.pcm_sample_rate
            if not pcm or len(pcm) % 2:
                raise MalformedResponse(f"PCM body of {len(pcm)} bytes is not whole 16-bit samples")
            return pcm, rate

        pcm, rate = self.http.call(ctx, settings, "/audio/speech", body=body, parse=parse, headers=headers, key=key)
        usage.requests += 1
        usage.characters += len(piece.text)
        if timeline is None:
            timeline = Timeline(rate, ctx.settings.audio.pause_ms)
        elif rate != timeline.sample_rate:
            raise StageError(f"openai_speech: the server answered at {rate} Hz after "
                             f"{timeline.sample_rate} Hz in one episode", retryable=False)
        if piece.first:
            timeline.pause()
        timeline.append(pcm, turn=piece.turn)
        return timeline
