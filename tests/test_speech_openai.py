"""OpenAI-compatible /audio/speech against a loopback server speaking its wire format, faults included."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from fakeapi import FakeApi, Reply, error
from fakespeech import SECONDS_PER_CHAR, episode_turns, openai_speech_handler, tone, wav_streamed
from podspool.stages import artifacts
from podspool.stages import audio as audio_stage
from podspool.stages.base import EpisodeInput, StageError, Turn
from podspool.stages.costs import cost_of
from podspool.stages.providers.openai.speech import DEFAULT_VOICES, OpenAISpeech
from podspool.stages.settings import StageSettings
from provider_helpers import KEY, RecordingLimiter, make_ctx

TURNS = [Turn("Alex", "Hello there [1]."), Turn("Sam", "Hi **Alex**, good to be here."), Turn("Alex", "Bye.")]


def test_wire_format_voices_per_host_spans_and_cost() -> None:
    with FakeApi(openai_speech_handler()) as fake:
        ctx = make_ctx(fake, "openai_speech", base_path="/v1", voices={"Sam": "coral"},
                       instructions="Warm and curious.")
        ctx.settings.audio.pause_ms = 100
        out = OpenAISpeech().synthesize(TURNS, ctx)
    bodies = [r.json() for r in fake.requests]
    assert [r.path for r in fake.requests] == ["/v1/audio/speech"] * 3
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert bodies[0] == {"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": DEFAULT_VOICES[0],
                         "response_format": "pcm", "instructions": "Warm and curious."}
    assert [b["voice"] for b in bodies] == [DEFAULT_VOICES[0], "coral", DEFAULT_VOICES[0]]
    assert bodies[1]["input"] == "Hi Alex, good to be here."
    assert out.sample_rate == 22050  # OpenAI's pcm is 24 kHz: resampled to the configured rate clip by clip
    lengths = [len(b["input"]) * SECONDS_PER_CHAR for b in bodies]
    ends = [lengths[0], lengths[0] + 0.1 + lengths[1], sum(lengths) + 0.2]
    assert [round(s.end, 3) for s in out.spans] == [pytest.approx(e, abs=1e-3) for e in ends]
    assert out.spans[1].start == pytest.approx(lengths[0] + 0.1, abs=1e-3)
    (usage,) = out.usage
    assert (usage.api, usage.requests, usage.characters) == ("openai_speech", 3, sum(len(b["input"]) for b in bodies))
    assert cost_of(out.usage, ctx.settings) == pytest.approx(usage.characters * 0.015 / 1000)


def test_a_local_server_needs_no_key_and_a_streamed_wav_carries_its_rate() -> None:
    with FakeApi(openai_speech_handler(rate=16000)) as fake:
        ctx = make_ctx(fake, "openai_speech", key=None, model="kokoro", response_format="wav")
        out = OpenAISpeech().synthesize(TURNS[:1], ctx)
    assert "authorization" not in fake.requests[0].headers
    assert out.sample_rate == 22050  # the WAV's 16 kHz, resampled to the configured rate
    assert len(out.pcm) / 2 / 22050 == pytest.approx(len("Hello there.") * SECONDS_PER_CHAR, abs=1e-3)
    assert cost_of(out.usage, ctx.settings) == 0.0  # a model OpenAI does not sell: a local server


def test_turns_over_the_request_limit_are_cut_between_sentences() -> None:
    sentence = "A sentence of exactly forty characters.."
    with FakeApi(openai_speech_handler()) as fake:
        out = OpenAISpeech().synthesize([Turn("Alex", " ".join([sentence] * 5))],
                                        make_ctx(fake, "openai_speech", max_chars_per_request=100))
    assert [len(r.json()["input"]) for r in fake.requests] == [81, 81, 40]
    assert len(out.spans) == 1 and out.usage[0].requests == 3


@pytest.mark.parametrize("fault", [
    error(429, "Rate limit reached for requests", type_="requests", headers={"Retry-After": "0.3"}),
    error(500, "The server had an error", type_="server_error"),
    Reply(status=200, body=b"\x01\x00" * 4000, truncate=1001),  # cut mid-body
    Reply(status=200, body={"error": {"message": "oops"}}),  # JSON where audio belongs
    Reply(status=200, body=b"\x01\x00\x01"),  # not whole samples
], ids=["429-retry-after", "500", "truncated", "json", "odd-bytes"])
def test_faults_are_retried(fault: Reply) -> None:
    limiter = RecordingLimiter()
    with FakeApi(openai_speech_handler()) as fake:
        fake.queue(fault)
        out = OpenAISpeech().synthesize(TURNS[:1], make_ctx(fake, "openai_speech", limiter=limiter))
    assert len(fake.requests) == 2 and [a for a, _ in limiter.acquired] == ["openai_speech"] * 2
    assert len(out.pcm) / 2 / 22050 == pytest.approx(len(tone(len("Hello there.") * SECONDS_PER_CHAR, 24000)) / 2 / 24000,
                                                     abs=1e-4)
    if fault.status == 429:
        assert limiter.paused == [("openai_speech", 0.3)]


def test_a_wav_cut_short_is_retried_and_stereo_is_refused() -> None:
    short = wav_streamed(b"", 24000)[:-4] + (8000).to_bytes(4, "little") + b"\x01\x00" * 100
    stereo = bytearray(wav_streamed(b"\x01\x00" * 100, 24000))
    stereo[22] = 2  # channels
    with FakeApi(openai_speech_handler()) as fake:
        fake.queue(Reply(body=short, content_type="audio/wav"))
        OpenAISpeech().synthesize(TURNS[:1], make_ctx(fake, "openai_speech", response_format="wav"))
        assert len(fake.requests) == 2
        fake.queue(Reply(body=bytes(stereo), content_type="audio/wav"))
        with pytest.raises(StageError) as info:
            OpenAISpeech().synthesize(TURNS[:1], make_ctx(fake, "openai_speech", response_format="wav"))
    assert not info.value.retryable and "mono" in str(info.value)


def test_a_bad_key_fails_at_once_without_showing_it() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error",
                      "code": "invalid_api_key"}}
    with FakeApi(Reply(status=401, body=body)) as fake, pytest.raises(StageError) as info:
        OpenAISpeech().synthesize(TURNS, make_ctx(fake, "openai_speech"))
    assert not info.value.retryable and KEY not in str(info.value) and len(fake.requests) == 1


def test_the_audio_stage_speaks_an_episode_through_provider_openai(tmp_path: Path) -> None:
    turns = episode_turns(120, 6)
    script = "# Dark matter\n\n" + "\n\n".join(f"**{t.host}:** {t.text}" for t in turns) + "\n"
    (tmp_path / artifacts.SCRIPT_MD).write_text(script, encoding="utf-8")
    with FakeApi(openai_speech_handler()) as fake:
        ctx = make_ctx(fake, "openai_speech")
        ctx.settings.audio.provider = "openai"
        ctx.settings.audio.words_per_minute = 120  # the fake's pace, near enough for the duration check
        result = audio_stage.run(tmp_path, EpisodeInput("ep_001_b", "b", 1, "Dark matter"), ctx)
    assert result.ok and len(fake.requests) == len(turns)
    with wave.open(str(tmp_path / artifacts.AUDIO_WAV)) as w:  # read back by the standard library
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, ctx.settings.audio.sample_rate)
        assert w.getnframes() / w.getframerate() > 0.9 * sum(len(t.text) for t in turns) * SECONDS_PER_CHAR


def test_doctor_checks_the_speech_endpoint_not_the_writers(tmp_path: Path) -> None:
    from podspool.daemon.cli.doctor import run_checks
    from podspool.daemon.config import Config

    with FakeApi(Reply(body={})) as fake:
        cfg = Config.model_validate({"audio": {"provider": "openai"},
                                     "providers": {"openai_speech": {"base_url": fake.base_url + "/v1"}}})
        lines: list[str] = []
        ok = run_checks(tmp_path / "spool", cfg, lines.append)
    assert ok, lines
    assert any(f"openai_speech base_url {fake.base_url}/v1 answers" in line and line.startswith("ok")
               for line in lines)
    assert not any("127.0.0.1:11434" in line for line in lines)  # the writer's server is not in use


def test_a_request_that_fails_after_others_succeeded_still_bills_them() -> None:
    with FakeApi(openai_speech_handler()) as fake:
        fake.queue(openai_speech_handler(), error(400, "Invalid voice", type_="invalid_request_error"))
        with pytest.raises(StageError) as info:
            OpenAISpeech().synthesize(TURNS[:2], make_ctx(fake, "openai_speech"))
    (paid,) = info.value.usage
    assert (paid.api, paid.requests, paid.characters) == ("openai_speech", 1, len("Hello there."))
    assert cost_of(info.value.usage, StageSettings()) > 0
