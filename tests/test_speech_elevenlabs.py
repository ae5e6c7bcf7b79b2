"""ElevenLabs text-to-dialogue against a loopback server speaking its wire format, faults included."""

from __future__ import annotations

import base64
import re
import threading

import pytest
from fakeapi import FakeApi, Reply, Request, error
from fakespeech import DIALOGUE_GAP_S, SECONDS_PER_CHAR, dialogue_handler, episode_turns
from podspool.stages.base import StageError, Turn
from podspool.stages.costs import cost_of
from podspool.stages.providers.elevenlabs import DEFAULT_VOICES, ElevenLabsSpeech
from provider_helpers import KEY, RecordingLimiter, make_ctx

DIALOGUE = "/v1/text-to-dialogue/with-timestamps"
SENTENCE_END = re.compile(r"[.!?…]$")


def test_a_450_word_episode_takes_two_requests_cut_at_turns_or_sentences() -> None:
    turns = episode_turns(450, 20)
    with FakeApi(dialogue_handler()) as fake:
        ctx = make_ctx(fake, "elevenlabs", voices={"Sam": "voice-sam"})
        out = ElevenLabsSpeech().synthesize(turns, ctx)
    assert len(fake.requests) == 2  # was 20, one per turn
    sent = [item for r in fake.requests for item in r.json()["inputs"]]
    for r in fake.requests:
        assert r.method == "POST" and r.path == DIALOGUE and r.headers["xi-api-key"] == KEY
        assert r.json()["model_id"] == "eleven_v3"
        assert sum(len(i["text"]) for i in r.json()["inputs"]) <= 2000
    # cut only between turns or sentences: every input ends a sentence, and each turn's inputs,
    # joined, are the turn
    assert all(SENTENCE_END.search(i["text"]) for i in sent)
    assert " ".join(i["text"] for i in sent) == " ".join(t.text for t in turns)
    assert {i["voice_id"] for i in sent} == {DEFAULT_VOICES[0], "voice-sam"}
    assert [i["voice_id"] for i in sent][:2] == [DEFAULT_VOICES[0], "voice-sam"]
    (usage,) = out.usage
    assert usage.requests == 2 and usage.characters == sum(len(i["text"]) for i in sent)  # character-cost
    assert cost_of(out.usage, ctx.settings) == pytest.approx(usage.characters * 0.10 / 1000)


def test_spans_come_from_voice_segments_across_requests() -> None:
    turns = [Turn("Alex", "One two three."), Turn("Sam", "Four five six seven."), Turn("Alex", "Eight nine.")]
    with FakeApi(dialogue_handler()) as fake:
        # 14 + 20 characters fit one request; the third turn starts a second one
        ctx = make_ctx(fake, "elevenlabs", max_chars_per_request=34)
        ctx.settings.audio.pause_ms = 200
        out = ElevenLabsSpeech().synthesize(turns, ctx)
    assert [len(r.json()["inputs"]) for r in fake.requests] == [2, 1]
    rate = out.sample_rate
    a, b, c = (len(t.text) * SECONDS_PER_CHAR for t in turns)
    first_clip = a + DIALOGUE_GAP_S + b
    expected = [(0.0, a), (a + DIALOGUE_GAP_S, first_clip), (first_clip + 0.2, first_clip + 0.2 + c)]
    assert [(s.turn, s.start, s.end) for s in out.spans] == [
        (i, pytest.approx(start, abs=2 / rate), pytest.approx(end, abs=2 / rate))
        for i, (start, end) in enumerate(expected)]
    assert len(out.pcm) / 2 / rate == pytest.approx(first_clip + 0.2 + c, abs=2 / rate)


@pytest.mark.parametrize(("configured", "asked"), [(22050, "pcm_22050"), (24000, "pcm_24000"),
                                                   (44100, "pcm_44100"), (32000, "pcm_44100")])
def test_the_configured_rate_is_asked_for_and_reported(configured: int, asked: str) -> None:
    with FakeApi(dialogue_handler()) as fake:
        ctx = make_ctx(fake, "elevenlabs")
        ctx.settings.audio.sample_rate = configured
        out = ElevenLabsSpeech().synthesize([Turn("Alex", "Hello there.")], ctx)
    assert fake.requests[0].query["output_format"] == [asked]
    # a rate ElevenLabs does not offer is asked for at the next one up, and resampled clip by clip
    assert out.sample_rate == configured
    assert len(out.pcm) / 2 / configured == pytest.approx(len("Hello there.") * SECONDS_PER_CHAR, abs=2 / configured)


def test_a_turn_longer_than_a_request_is_cut_between_sentences() -> None:
    sentence = "This sentence is exactly forty chars ok."
    long_turn = Turn("Alex", " ".join([sentence] * 6))
    with FakeApi(dialogue_handler()) as fake:
        out = ElevenLabsSpeech().synthesize([long_turn, Turn("Sam", "Short reply.")],
                                            make_ctx(fake, "elevenlabs", max_chars_per_request=100))
    texts = [[i["text"] for i in r.json()["inputs"]] for r in fake.requests]
    assert texts == [[f"{sentence} {sentence}"]] * 2 + [[f"{sentence} {sentence}", "Short reply."]]
    assert [s.turn for s in out.spans] == [0, 1] and out.spans[0].end < out.spans[1].start


@pytest.mark.parametrize("fault", [
    error(429, "busy", headers={"Retry-After": "0.3"}),
    Reply(status=503, body={"detail": {"status": "system_busy", "message": "try later"}}),
    Reply(status=200, body={"audio_base64": "AAAA"}, truncate=10),  # the connection dies mid-body
    Reply(status=200, body={"audio_base64": "not base64!!", "voice_segments": []}),
    Reply(status=200, body="<html>bad gateway</html>", content_type="text/html"),
], ids=["429-retry-after", "503", "truncated", "bad-base64", "html"])
def test_faults_are_retried(fault: Reply) -> None:
    limiter = RecordingLimiter()
    with FakeApi(dialogue_handler()) as fake:
        fake.queue(fault)
        out = ElevenLabsSpeech().synthesize([Turn("Alex", "Hello there.")],
                                            make_ctx(fake, "elevenlabs", limiter=limiter))
    assert len(fake.requests) == 2 and len(limiter.acquired) == 2 and out.pcm
    if fault.status == 429:
        assert limiter.paused == [("elevenlabs", 0.3)]
        assert fake.requests[1].arrived - fake.requests[0].arrived >= 0.3


def test_a_voice_segment_for_an_input_never_sent_is_refused() -> None:
    bad = {"audio_base64": base64.b64encode(b"\x01\x00" * 100).decode(),
           "voice_segments": [{"dialogue_input_index": 5, "start_time_seconds": 0, "end_time_seconds": 1}]}
    with FakeApi(Reply(body=bad)) as fake, pytest.raises(StageError) as info:
        ElevenLabsSpeech().synthesize([Turn("Alex", "Hello.")], make_ctx(fake, "elevenlabs", max_attempts=2))
    assert info.value.retryable and "input 5" in str(info.value) and len(fake.requests) == 2


def test_per_turn_mode_with_eleven_v3_sends_no_stitching_but_measures_spans() -> None:
    turns = [Turn("Alex", "Hello there."), Turn("Sam", "Hi."), Turn("Alex", "Bye now.")]
    rate = 22050

    def tts(request: Request) -> Reply:
        n = len(request.json()["text"]) * 100
        return Reply(body=b"\x01\x00" * n, headers={"request-id": "r1"})

    with FakeApi(tts) as fake:
        ctx = make_ctx(fake, "elevenlabs", mode="per_turn", model="eleven_v3")
        ctx.settings.audio.pause_ms = 100
        out = ElevenLabsSpeech().synthesize(turns, ctx)
    assert all("previous_request_ids" not in r.json() for r in fake.requests)
    lengths = [len(t.text) * 100 / rate for t in turns]
    assert out.spans[1].start == pytest.approx(lengths[0] + 0.1, abs=1e-3)
    assert out.spans[2].end == pytest.approx(sum(lengths) + 0.2, abs=1e-3)


def test_a_request_that_fails_after_others_succeeded_still_bills_them() -> None:
    turns = [Turn("Alex", "One two three."), Turn("Sam", "Four five six seven.")]
    with FakeApi(dialogue_handler()) as fake:
        fake.queue(dialogue_handler(), Reply(status=400, body={"detail": {"message": "bad voice"}}))
        with pytest.raises(StageError) as info:
            ElevenLabsSpeech().synthesize(turns, make_ctx(fake, "elevenlabs", max_chars_per_request=15))
    (paid,) = info.value.usage
    assert not info.value.retryable and (paid.requests, paid.characters) == (1, len("One two three."))


# ---- per-turn mode (text-to-speech) -----------------------------------------------------------------------------------


def tts_server(samples_per_char: int = 2) -> tuple[FakeApi, list[str]]:
    """Answers PCM whose length encodes the text length, with a fresh request-id each time."""
    ids: list[str] = []
    lock = threading.Lock()

    def answer(req: Request) -> Reply:
        with lock:
            ids.append(f"req-{len(ids) + 1}")
            rid = ids[-1]
        n = len(req.json()["text"]) * samples_per_char
        return Reply(body=b"\x01\x00" * n, content_type="application/octet-stream",
                     headers={"request-id": rid})

    return FakeApi(answer), ids


def test_elevenlabs_wire_format_voices_pauses_and_cost() -> None:
    turns = [Turn("Alex", "Hello there [1]."), Turn("Sam", "Hi **Alex**."), Turn("Alex", "Bye.")]
    fake, _ = tts_server()
    with fake:
        ctx = make_ctx(fake, "elevenlabs", mode="per_turn", voices={"Sam": "voice-sam"}, model="eleven_flash_v2_5")
        ctx.settings.audio.pause_ms = 100
        out = ElevenLabsSpeech().synthesize(turns, ctx)
    paths = [r.path for r in fake.requests]
    assert paths == [f"/v1/text-to-speech/{DEFAULT_VOICES[0]}", "/v1/text-to-speech/voice-sam",
                     f"/v1/text-to-speech/{DEFAULT_VOICES[0]}"]
    first = fake.requests[0]
    assert first.query == {"output_format": ["pcm_22050"]} and first.headers["xi-api-key"] == KEY
    assert "authorization" not in first.headers
    assert first.json() == {"text": "Hello there.", "model_id": "eleven_flash_v2_5",  # no [1] spoken
                            "language_code": "en"}
    assert fake.requests[1].json()["text"] == "Hi Alex."
    assert out.sample_rate == 22050
    spoken_chars = len("Hello there.") + len("Hi Alex.") + len("Bye.")
    pause_bytes = 2 * int(22050 * 0.1)
    assert len(out.pcm) == spoken_chars * 2 * 2 + 2 * pause_bytes  # speech + two pauses between turns
    (usage,) = out.usage
    assert (usage.requests, usage.characters) == (3, spoken_chars)
    assert cost_of(out.usage, ctx.settings) == pytest.approx(spoken_chars * 0.05 / 1000)


def test_elevenlabs_splits_long_turns_and_stitches_per_voice() -> None:
    sentence = "This sentence is exactly forty chars ok."
    assert len(sentence) == 40
    turns = [Turn("Alex", " ".join([sentence] * 6)), Turn("Sam", "Short reply."), Turn("Alex", sentence)]
    fake, ids = tts_server()
    with fake:
        out = ElevenLabsSpeech().synthesize(turns, make_ctx(fake, "elevenlabs", mode="per_turn", max_chars_per_request=100))
    texts = [r.json()["text"] for r in fake.requests]
    assert all(len(t) <= 100 for t in texts)
    assert texts[:3] == [" ".join([sentence] * 2)] * 3  # cut between sentences, packed greedily
    alex = [r.json().get("previous_request_ids") for r in fake.requests if DEFAULT_VOICES[0] in r.path]
    sam = [r.json().get("previous_request_ids") for r in fake.requests if DEFAULT_VOICES[1] in r.path]
    assert alex == [None, ["req-1"], ["req-1", "req-2"], ["req-1", "req-2", "req-3"]]  # last 3, same voice
    assert sam == [None]  # another voice's ids are not mixed in
    assert ids == ["req-1", "req-2", "req-3", "req-4", "req-5"]
    assert out.usage[0].characters == sum(len(t) for t in texts)


@pytest.mark.parametrize("status", ["too_many_concurrent_requests", "system_busy"])
def test_elevenlabs_busy_is_retried(status: str) -> None:
    fake, _ = tts_server()
    with fake:
        fake.queue(Reply(status=429, body={"detail": {"status": status, "message": "try again"}}))
        out = ElevenLabsSpeech().synthesize([Turn("Alex", "Hello.")], make_ctx(fake, "elevenlabs", mode="per_turn"))
    assert len(fake.requests) == 2 and len(out.pcm) == len("Hello.") * 4


def test_elevenlabs_json_instead_of_audio_is_retried_and_format_must_be_pcm() -> None:
    fake, _ = tts_server()
    with fake:
        fake.queue(Reply(status=200, body={"detail": "oops"}))
        ElevenLabsSpeech().synthesize([Turn("Alex", "Hello.")], make_ctx(fake, "elevenlabs", mode="per_turn"))
        assert len(fake.requests) == 2
        with pytest.raises(StageError) as info:
            ElevenLabsSpeech().synthesize([Turn("Alex", "Hello.")], make_ctx(fake, "elevenlabs", mode="per_turn", output_format="mp3_44100_128"))
    assert not info.value.retryable and "pcm_" in str(info.value)


def test_elevenlabs_bad_key_fails_at_once() -> None:
    body = {"detail": {"status": "invalid_api_key", "message": f"Invalid API key: {KEY}"}}
    with FakeApi(Reply(status=401, body=body)) as fake, pytest.raises(StageError) as info:
        ElevenLabsSpeech().synthesize([Turn("Alex", "Hello.")], make_ctx(fake, "elevenlabs", mode="per_turn"))
    assert not info.value.retryable and KEY not in str(info.value) and len(fake.requests) == 1
