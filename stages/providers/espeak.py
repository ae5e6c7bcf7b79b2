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
from podspool.stages.base import SpeechOutput, StageContext, StageError, Turn, Usage
from podspool.stages.providers import voices
from podspool.stages.providers.speech_text import Timeline

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE: words per minute
ESPEAK_PITCH = 3  # espeak_PARAMETER espeakPITCH: 0-100, 50 the voice's own

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

    def has_voice(self, voice: str) -> bool:
        """Whether espeak-ng knows `voice` (it becomes the current voice); the caller holds self.lock."""
        return bool(self.lib.espeak_SetVoiceByName(voice.encode()) == 0)

    def speak(self, text: str, voice: str, words_per_minute: int, pitch: int = 50) -> bytes:
        """PCM (16-bit mono at self.sample_rate) of `text` in `voice`; the caller holds self.lock."""
        if not self.has_voice(voice):
            raise StageError(f"espeak-ng has no voice {voice!r} (set the cast's espeak voice, or audio.voices "
                             "in the config)", retryable=False)
        # set at every turn: both survive a change of voice
        self.lib.espeak_SetParameter(ESPEAK_RATE, max(80, min(450, words_per_minute)), 0)
        self.lib.espeak_SetParameter(ESPEAK_PITCH, max(0, min(100, pitch)), 0)
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


class EspeakSpeech:
    name = "espeak"
    dry_run = False

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        settings = ctx.settings.audio
        eng = engine()
        with eng.lock:
            how = voices.espeak_voices(voices.show_of(ctx), settings.voices, turns, exists=eng.has_voice)
        timeline = Timeline(settings.sample_rate, settings.pause_ms, ctx.folder)
        try:
            with eng.lock:
                for i, turn in enumerate(turns):
                    voice = how[turn.host]
                    timeline.pause()
                    timeline.append(eng.speak(turn.text, voice.name, round(settings.words_per_minute * voice.pace),
                                              voice.pitch), turn=i, rate=eng.sample_rate)
        except BaseException:
            timeline.discard()
            raise
        # a local engine: no request against any rate budget
        usage = Usage(api="espeak", model="espeak-ng", requests=0, characters=sum(len(t.text) for t in turns))
        return timeline.output([usage])
