"""Loopback stand-ins for speech APIs, in their wire formats, for tests and benchmarks/speech_bench.py.

Each answers with a tone whose length follows the text (SECONDS_PER_CHAR, about 165 words a
minute), so durations, spans and request counts can be checked against what was sent.
"""

from __future__ import annotations

import base64
import math
import struct
import threading
from collections.abc import Callable

import numpy as np
from fakeapi import Reply, Request
from podspool.stages.base import Turn

SECONDS_PER_CHAR = 0.06
DIALOGUE_GAP_S = 0.25  # the breath ElevenLabs leaves between two speakers inside one clip


def tone(seconds: float, rate: int, freq: float = 180.0) -> bytes:
    """A 16-bit mono tone at about -12 dBFS: loud enough to pass as speech, clearly not silence."""
    n = max(1, round(seconds * rate))
    x = 8000 * np.sin(2 * math.pi * freq * np.arange(n) / rate)
    return x.astype("<i2").tobytes()


def rate_of(request: Request) -> int:
    fmt = request.query.get("output_format", ["pcm_22050"])[0]
    return int(fmt.split("_")[1])


def dialogue_handler(ids: list[str] | None = None, cost_header: bool = True) -> Callable[[Request], Reply]:
    """POST /v1/text-to-dialogue/with-timestamps: audio_base64 plus a voice_segment per input."""
    lock = threading.Lock()
    ids = ids if ids is not None else []

    def answer(request: Request) -> Reply:
        body = request.json()
        rate = rate_of(request)
        parts, segments, t, chars = [], [], 0.0, 0
        for i, item in enumerate(body["inputs"]):
            if i:
                parts.append(b"\x00\x00" * round(DIALOGUE_GAP_S * rate))
                t += round(DIALOGUE_GAP_S * rate) / rate
            clip = tone(len(item["text"]) * SECONDS_PER_CHAR, rate, 150.0 + 40 * (i % 2))
            seconds = len(clip) / 2 / rate
            segments.append({"voice_id": item["voice_id"], "start_time_seconds": round(t, 4),
                             "end_time_seconds": round(t + seconds, 4), "character_start_index": chars,
                             "character_end_index": chars + len(item["text"]), "dialogue_input_index": i})
            parts.append(clip)
            t += seconds
            chars += len(item["text"])
        with lock:
            ids.append(f"dlg-{len(ids) + 1}")
            rid = ids[-1]
        headers = {"request-id": rid}
        if cost_header:
            headers["character-cost"] = str(chars)
        doc = {"audio_base64": base64.b64encode(b"".join(parts)).decode(), "alignment": None,
               "normalized_alignment": None, "voice_segments": segments}
        return Reply(body=doc, headers=headers)

    return answer


def wav_streamed(pcm: bytes, rate: int) -> bytes:
    """A WAV as a streaming server sends it: RIFF and data sizes unknown (0xFFFFFFFF)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm)


def openai_speech_handler(rate: int = 24000) -> Callable[[Request], Reply]:
    """POST /audio/speech: raw PCM (response_format pcm) or a streamed WAV, as long as the input."""

    def answer(request: Request) -> Reply:
        body = request.json()
        pcm = tone(len(body["input"]) * SECONDS_PER_CHAR, rate)
        if body.get("response_format") == "wav":
            return Reply(body=wav_streamed(pcm, rate), content_type="audio/wav")
        return Reply(body=pcm, content_type="audio/pcm")

    return answer


SENTENCES = (
    "Dark matter does not shine, absorb or reflect light at all.",
    "Galaxies spin faster at their edges than their visible stars can explain.",
    "Vera Rubin measured those rotation curves in the nineteen seventies.",
    "Gravitational lensing bends background light around invisible mass.",
    "The Bullet Cluster shows mass and hot gas pulled apart by a collision.",
    "Physicists search for weakly interacting particles deep underground.",
    "So far every detector has come back empty handed, which is itself informative.",
    "Some theorists modify gravity instead of adding new particles.",
)


def episode_turns(words: int = 450, turns: int = 20, hosts: tuple[str, str] = ("Alex", "Sam")) -> list[Turn]:
    """A two-host script of about `words` words in `turns` alternating turns, whole sentences only."""
    out: list[Turn] = []
    k = total = 0
    for i in range(turns):
        text: list[str] = []
        while not text or total < words * (i + 1) / turns:  # every turn at least one sentence
            text.append(SENTENCES[k % len(SENTENCES)])
            total += len(text[-1].split())
            k += 1
        out.append(Turn(hosts[i % 2], " ".join(text)))
    return out


def held_after(handler: Callable[[Request], Reply], answered: int, gate: threading.Event,
               hold_s: float = 60.0) -> Callable[[Request], Reply]:
    """`handler` for the first `answered` requests; every later one is held until `gate` is set (a request
    in flight when the client is killed), then refused."""
    lock = threading.Lock()
    seen = [0]

    def answer(request: Request) -> Reply:
        with lock:
            seen[0] += 1
            n = seen[0]
        if n <= answered:
            return handler(request)
        gate.wait(hold_s)
        return Reply(status=503, body={"detail": {"status": "service_unavailable"}})

    return answer
