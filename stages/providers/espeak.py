"""The espeak speech provider (the default): libespeak-ng from the espeakng-loader wheel, via ctypes.

Offline and free. libespeak-ng keeps one global synthesizer per process, so this module keeps one
`_Engine` per process too (initialising is slow-ish and not re-entrant) and serialises calls with a
lock. Synthesis runs in AUDIO_OUTPUT_SYNCHRONOUS mode: `espeak_Synth` returns when the text is
spoken, and the samples arrive through the synth callback, so there is no audio device and no
background thread of espeak's own.
"""

from __future__ import annotations

import ctypes
import threading

from loguru import logger
from podspool.stages import pcm
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers.speech_text import Timeline

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE: words per minute
DEFAULT_VOICES = ("en-us+m3", "en+f3")  # American male, British female: easy to tell apart by ear

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The process's one libespeak-ng instance."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, ESPEAK_INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise StageError(f"espeak-ng failed to initialise (data path {data.decode()!r})", retryable=False)
        self.lib = lib
        self.sample_rate = rate
        self._chunks: list[bytes] = []
        # the callback object must outlive every synth call, or ctypes frees it under libespeak's feet
        self._callback = _SynthCallback(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()
        logger.debug("espeak-ng initialised at {} Hz", rate)

    def _on_samples(self, wav: ctypes.Array[ctypes.c_short] | None, n: int, _events: int | None) -> int:
        if wav and n > 0:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = keep going

    def speak(self, text: str, voice: str, words_per_minute: int) -> bytes:
        """PCM (16-bit mono at self.sample_rate) of `text` in `voice`; the caller holds self.lock."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise StageError(f"espeak-ng has no voice {voice!r} (set audio.voices in the config)", retryable=False)
        self.lib.espeak_SetParameter(ESPEAK_RATE, max(80, min(450, words_per_minute)), 0)
        data = text.encode("utf-8") + b"\x00"
        self._chunks = []
        status = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise StageError(f"espeak-ng synthesis failed with status {status}")
        out, self._chunks = b"".join(self._chunks), []
        return out


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def voices_for(turns: list[Turn], hosts: list[str], configured: dict[str, str]) -> dict[str, str]:
    """One voice per speaker: the configured one, else the defaults in host order."""
    speakers = list(dict.fromkeys([*hosts, *(t.host for t in turns)]))
    return {h: configured.get(h) or DEFAULT_VOICES[i % len(DEFAULT_VOICES)] for i, h in enumerate(speakers)}


class EspeakSpeech:
    name = "espeak"
    dry_run = False

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.audio
        voices = voices_for(turns, list(ctx.settings.production.hosts), settings.voices)
        eng = engine()
        timeline = Timeline(eng.sample_rate, settings.pause_ms)
        with eng.lock:
            for i, turn in enumerate(turns):
                timeline.pause()
                timeline.append(eng.speak(turn.text, voices[turn.host], settings.words_per_minute), turn=i)
        # spans are in seconds, so resampling leaves them true
        audio = pcm.resample(timeline.pcm(), eng.sample_rate, settings.sample_rate)
        # a local engine: no request against any rate budget
        usage = Usage(api="espeak", model="espeak-ng", requests=0, characters=sum(len(t.text) for t in turns))
        return SpeechOutput(pcm=audio, sample_rate=settings.sample_rate, usage=[usage], spans=timeline.spans())
