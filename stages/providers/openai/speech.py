"""Speech through any OpenAI-compatible `POST {base_url}/audio/speech` (Bearer key, optional locally).

One voice per host, so one request per turn (a turn over 4,096 characters is cut at sentences):
the request's audio is the turn's span, measured. Each answer is kept in the episode folder as it
arrives (speech_clips), so another attempt asks only for what is missing. Audio at another rate than
the configured one is resampled clip by clip. `response_format = "pcm"` is raw 16-bit mono at
24 kHz on OpenAI (`pcm_sample_rate` for a server that differs); "wav" carries its own rate.

Rate limits: these requests count against the api name "openai_speech", apart from the script
writer's "openai", because a local speech server and a remote chat model have nothing in common;
the key is the same OPENAI_API_KEY.
"""

from __future__ import annotations

import struct

import requests
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers import voices
from podspool.stages.providers.http import HttpClient, MalformedResponse
from podspool.stages.providers.speech_clips import ClipStore, clip_name
from podspool.stages.providers.speech_text import Piece, Timeline, pieces_of

API = "openai_speech"
DEFAULT_VOICES = voices.OPENAI_DEFAULTS  # alloy, onyx, nova, echo by place in the cast
INSTRUCTED_MODELS = frozenset({"gpt-4o-mini-tts"})  # the speech models that take `instructions`
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
        show = voices.show_of(ctx)
        pieces = pieces_of(turns, settings.max_chars_per_request, API)
        voice_of = voices.by_index(voices.speakers(show, turns), voices.chosen(show, "openai", settings.voices, turns),
                                   DEFAULT_VOICES)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeline = Timeline(ctx.settings.audio.sample_rate, ctx.settings.audio.pause_ms, ctx.folder)
        clips = ClipStore(ctx.folder)
        bodies = [self._body(piece, voice_of, show.language, ctx) for piece in pieces]
        names = [clip_name(k, {"body": b}) for k, b in enumerate(bodies)]
        clips.keep_only(set(names))
        usage = Usage(api=API, model=settings.model, requests=0)  # what has been paid for in this attempt
        try:
            for piece, body, name in zip(pieces, bodies, names, strict=True):
                saved = clips.load(name)
                if saved is not None:
                    audio, rate = saved.pcm, int(saved.meta["rate"])
                else:
                    audio, rate = self._speak(body, headers, ctx, key)
                    usage.requests += 1
                    usage.characters += len(piece.text)
                    clips.save(name, {"rate": rate}, audio)
                if piece.first:
                    timeline.pause()
                timeline.append(audio, turn=piece.turn, rate=rate)
        except BaseException as exc:
            timeline.discard()
            if isinstance(exc, StageError) and usage.requests:  # the requests that succeeded were billed
                exc.usage = [*exc.usage, usage]
            raise
        return timeline.output([usage])

    @staticmethod
    def _body(piece: Piece, voice_of: dict[str, str], language: str, ctx: StageContext) -> dict[str, object]:
        settings = ctx.settings.providers.openai_speech
        body: dict[str, object] = {"model": settings.model, "input": piece.text, "voice": voice_of[piece.host],
                                   "response_format": settings.response_format}
        if settings.speed != 1.0:
            body["speed"] = settings.speed
        # the API takes no language: the model reads it from the text; a model that takes instructions
        # (gpt-4o-mini-tts) is told it too, so a short or mixed turn is not read in another accent
        told = [settings.instructions] if settings.instructions else []
        if language.split("-")[0].lower() != "en" and (settings.model or "") in INSTRUCTED_MODELS:
            told.append(f"Speak in the language of the text ({language}).")
        if told:
            body["instructions"] = " ".join(told)
        return body

    def _speak(self, body: dict[str, object], headers: dict[str, str], ctx: StageContext,
               key: str | None) -> tuple[bytes, int]:
        """One request for one piece: its PCM and rate."""
        settings = ctx.settings.providers.openai_speech

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

        result: tuple[bytes, int] = self.http.call(ctx, settings, "/audio/speech", body=body, parse=parse,
                                                   headers=headers, key=key)
        return result
