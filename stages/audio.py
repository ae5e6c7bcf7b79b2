"""Audio stage: speak the script, one voice per host, and write audio.wav whole."""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path

from stages import artifacts, fsio
from stages.base import EpisodeInput, StageContext, StageResult, Turn
from stages.costs import cost_of
from stages.providers import registry

TURN_RE = re.compile(r"^\*\*(?P<host>[^*]+):\*\*\s*(?P<text>.+)$")


def parse_turns(script: str) -> list[Turn]:
    return [Turn(m["host"].strip(), m["text"].strip()) for line in script.splitlines() if (m := TURN_RE.match(line))]


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def run(folder: Path, episode: EpisodeInput, ctx: StageContext) -> StageResult:
    if (folder / artifacts.AUDIO_WAV).exists() and (folder / artifacts.AUDIO_JSON).exists():
        doc = fsio.read_json(folder / artifacts.AUDIO_JSON)
        return StageResult(ok=True, cost_usd=float(doc.get("cost_usd", 0.0)), reused=True)
    turns = parse_turns((folder / artifacts.SCRIPT_MD).read_text(encoding="utf-8"))
    speech = registry.load(registry.SPEECH, ctx.settings.audio.provider)
    out = speech.synthesize(turns, ctx)
    cost = cost_of(out.usage, ctx.settings)
    fsio.write_bytes(folder / artifacts.AUDIO_WAV, wav_bytes(out.pcm, out.sample_rate))
    seconds = len(out.pcm) / 2 / out.sample_rate
    fsio.write_json(folder / artifacts.AUDIO_JSON, {"seconds": seconds, "cost_usd": cost,
                                                    "usage": [u.to_dict() for u in out.usage]})
    return StageResult(ok=True, cost_usd=cost, usage=out.usage, details={"audio_seconds": seconds})
