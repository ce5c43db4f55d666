"""Aura over the speak WebSocket (one per call), with the real SDK, against the fake Deepgram on
127.0.0.1; and the fake's own refusals, checked with the SDK directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.speak.v1.types import SpeakV1Text
from websockets.exceptions import ConnectionClosed

from services.asr.deepgram import deepgram_environment
from services.orchestrator.latency import TurnLatency
from services.orchestrator.speaker import CallVoices, Speaker
from services.storage.vocabulary import EventKind
from services.telephony.media_streams import StreamSender, parse_outbound
from services.tts.aura_stream import AuraStream, FlushRefused, VoiceDropped, VoiceInterrupted, VoiceUnavailable
from services.tts.deepgram_aura import AuraSynthesizer
from services.tts.mock import MockSynthesizer
from tests.factories import PROVIDER_KEY, plain_settings
from tests.fakes.deepgram_server import FakeDeepgram, speak_audio

FIRST = "Your cleaning is booked for Tuesday at ten."
SECOND = "Is there anything else, Maria?"
THIRD = "Have a lovely day."


def rendered(fake: FakeDeepgram, text: str) -> bytes:
    """The fake's audio for `text`: what the REST voice returns for it too."""
    return speak_audio(text, "mulaw", 8000, fake.speak_seconds_per_char)


class Events(list):
    """on_event's calls, as (kind, detail)."""

    def __call__(self, kind: EventKind, **detail: Any) -> None:
        self.append((kind, detail))


@pytest.fixture
async def voices(deepgram):
    """make(**stream_options) -> (AuraStream, Events): one call's voice on the fake."""
    made: list[tuple[AuraSynthesizer, AuraStream]] = []

    def make(fake: FakeDeepgram | None = None, **options: Any) -> tuple[AuraStream, Events]:
        fake = fake or deepgram
        rest = AuraSynthesizer(plain_settings(deepgram_api_key=PROVIDER_KEY, deepgram_base_url=fake.url),
                               stream_options={"connect_timeout_s": 2.0, **options})
        events = Events()
        stream = rest.for_call(events)
        assert isinstance(stream, AuraStream)
        made.append((rest, stream))
        return stream, events

    yield make
    for rest, stream in made:
        await stream.close()
        await rest.close()


async def collect(chunks: AsyncGenerator[bytes, None], timeout: float = 5.0) -> list[bytes]:
    async def run() -> list[bytes]:
        return [chunk async for chunk in chunks]
    return await asyncio.wait_for(run(), timeout)


# --- the voice ----------------------------------------------------------------------------------------
def test_streaming_is_a_per_call_voice_with_the_rest_voice_s_format():
    settings = plain_settings(deepgram_api_key="k", deepgram_tts_model="aura-2-orion-en")
    rest = AuraSynthesizer(settings, streaming=False)
    assert rest.for_call() is rest                      # REST: one voice shared by every call
    streaming = AuraSynthesizer(settings)               # DEEPGRAM_TTS_STREAMING is on by default
    stream = streaming.for_call()                       # outside a loop: nothing opens yet
    assert isinstance(stream, AuraStream) and stream is not streaming.for_call()
    assert (stream.sample_rate, stream.encoding, stream.cache_key) == (8000, "mulaw", streaming.cache_key)
    assert stream.for_call() is stream


async def test_the_socket_is_open_before_the_first_sentence(deepgram, voices):
    voices()
    session = await deepgram.wait_speak_session(0)        # pre-warmed: no sentence asked for yet
    assert session.speaks == [] and session.controls == []
    assert session.request.path == "/v1/speak"
    assert session.headers["authorization"] == "Token test-key"
    assert {k: v[0] for k, v in session.query.items()} == {
        "model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": "8000"}   # no container on the socket


async def test_two_sentences_one_ahead_each_get_exactly_their_own_audio(deepgram, voices):
    deepgram.speak_ws_bytes_per_s = 40_000               # the first is still playing when the second is asked
    stream, _ = voices()
    session = await deepgram.wait_speak_session(0)
    first = asyncio.create_task(collect(stream.synthesize(FIRST)))
    second = asyncio.create_task(collect(stream.synthesize(SECOND)))
    await deepgram.wait_speak_ws(lambda: session.flushes == 2)
    assert not first.done()                                # both are on the socket at once

    first_audio, second_audio = b"".join(await first), b"".join(await second)

    assert first_audio == rendered(deepgram, FIRST)
    assert second_audio == rendered(deepgram, SECOND)
    assert session.controls == ["Speak", "Flush", "Speak", "Flush"] and session.speaks == [FIRST, SECOND]
    assert len(deepgram.speak_sessions) == 1 and deepgram.speak_requests == []


async def test_closing_a_sentence_early_clears_fails_the_next_and_the_socket_goes_on(deepgram, voices):
    deepgram.speak_ws_hold_after = 1                       # each flush stalls after its first chunk
    stream, _ = voices()
    session = await deepgram.wait_speak_session(0)
    first = stream.synthesize(FIRST)
    assert len(await asyncio.wait_for(anext(first), 5)) == 1601
    second = stream.synthesize(SECOND)
    waiting = asyncio.create_task(anext(second))
    await deepgram.wait_speak_ws(lambda: session.flushes == 2)

    await first.aclose()                                   # barge-in

    with pytest.raises(VoiceInterrupted):                  # Clear emptied Deepgram's buffer: at once
        await asyncio.wait_for(waiting, 2)
    await deepgram.wait_speak_ws(lambda: session.clears == 1)
    assert session.controls == ["Speak", "Flush", "Speak", "Flush", "Clear"]

    deepgram.speak_ws_hold_after = None
    third = b"".join(await collect(stream.synthesize(THIRD)))
    assert third == rendered(deepgram, THIRD)              # nothing of the cleared audio leaks in
    assert len(deepgram.speak_sessions) == 1 and stream.connections == 1


async def test_a_clear_never_answered_counts_as_a_dropped_socket(deepgram, voices):
    deepgram.speak_ws_hold_after, deepgram.speak_ws_answer_clear = 1, False
    stream, events = voices(clear_timeout_s=0.3)
    sentence = stream.synthesize(FIRST)
    await asyncio.wait_for(anext(sentence), 5)
    await sentence.aclose()
    await deepgram.wait_speak_session(1)                   # given up on, and reopened
    assert events == [(EventKind.TTS_RECONNECT, {"provider": "deepgram", "reason": "no Cleared within 0.3 s"})]
    deepgram.speak_ws_hold_after = None
    assert b"".join(await collect(stream.synthesize(SECOND))) == rendered(deepgram, SECOND)


async def test_past_twenty_flushes_a_minute_sentences_go_by_rest_and_deepgram_never_warns(deepgram, voices, caplog):
    stream, _ = voices()
    session = await deepgram.wait_speak_session(0)
    texts = [f"This is sentence number {i}." for i in range(23)]
    with caplog.at_level(logging.INFO, logger="zylin.tts.aura"):
        audio = [b"".join(await collect(stream.synthesize(text))) for text in texts]

    assert audio == [rendered(deepgram, text) for text in texts]   # the same voice either way
    assert session.flushes == 20 and deepgram.speak_ws_flushes == 20 and session.warnings == 0
    assert [r.json()["text"] for r in deepgram.speak_requests] == texts[20:]
    assert stream.rest_sentences == 3
    assert sum("flush limit" in r.getMessage() for r in caplog.records) == 1   # once per window


async def test_the_flush_window_rolls(deepgram, voices):
    stream, _ = voices(flush_limit=2, flush_window_s=0.3)
    session = await deepgram.wait_speak_session(0)
    for text in (FIRST, SECOND, THIRD):
        await collect(stream.synthesize(text))
    assert session.flushes == 2 and len(deepgram.speak_requests) == 1
    await asyncio.sleep(0.35)                              # the window itself is what is tested
    await collect(stream.synthesize(FIRST))
    assert session.flushes == 3


async def test_a_flush_warning_fails_the_sentence_at_once_and_the_rest_of_the_window_goes_by_rest(deepgram, voices):
    deepgram.speak_ws_flush_limit = 1                      # Deepgram's limit below ours: it warns
    stream, _ = voices()
    session = await deepgram.wait_speak_session(0)
    assert b"".join(await collect(stream.synthesize(FIRST))) == rendered(deepgram, FIRST)

    with pytest.raises(FlushRefused):
        await collect(stream.synthesize(SECOND), timeout=2)
    assert session.warnings == 1

    assert b"".join(await collect(stream.synthesize(THIRD))) == rendered(deepgram, THIRD)
    assert [r.json()["text"] for r in deepgram.speak_requests] == [THIRD]


@pytest.mark.parametrize("code, reason", [(1011, "closed with code 1011"), (None, "connection lost")])
async def test_a_drop_mid_sentence_fails_it_and_the_socket_reopens_at_once(deepgram, voices, caplog, code, reason):
    deepgram.speak_ws_hold_after = 1
    stream, events = voices()
    session = await deepgram.wait_speak_session(0)
    sentence = stream.synthesize(FIRST)
    with caplog.at_level(logging.DEBUG):
        await asyncio.wait_for(anext(sentence), 5)

        await session.drop(code)

        with pytest.raises(VoiceDropped) as dropped:
            await asyncio.wait_for(anext(sentence), 2)
        await sentence.aclose()
        assert reason in str(dropped.value)
        await deepgram.wait_speak_session(1)               # reopened before any sentence asks
    assert events == [(EventKind.TTS_RECONNECT, {"provider": "deepgram", "reason": reason})]
    assert FIRST not in caplog.text and "Tuesday" not in caplog.text   # reasons, never text

    deepgram.speak_ws_hold_after = None
    assert b"".join(await collect(stream.synthesize(SECOND))) == rendered(deepgram, SECOND)
    assert deepgram.speak_sessions[1].speaks == [SECOND] and stream.reconnects == 1


async def test_a_socket_deepgram_closes_while_idle_is_reopened(deepgram, voices):
    deepgram.speak_ws_idle_timeout_s = 0.2
    stream, events = voices()
    first = await deepgram.wait_speak_session(0)
    await first.wait_closed()
    deepgram.speak_ws_idle_timeout_s = None
    assert first.close_code == 1011
    await deepgram.wait_speak_session(1)
    assert events == [(EventKind.TTS_RECONNECT, {"provider": "deepgram", "reason": "closed with code 1011"})]
    assert b"".join(await collect(stream.synthesize(FIRST))) == rendered(deepgram, FIRST)


async def test_a_refused_socket_makes_the_sentence_fail_promptly(deepgram, voices):
    deepgram.refuse(503)
    stream, _ = voices()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(VoiceUnavailable) as refused:
        await collect(stream.synthesize(FIRST), timeout=3)
    assert "HTTP 503" in str(refused.value) and loop.time() - started < 2.0
    with pytest.raises(VoiceUnavailable):                  # soon after: at once, no new attempt
        await collect(stream.synthesize(SECOND), timeout=0.5)
    assert deepgram.speak_requests == []


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts TCP connections and never answers: an upgrade that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_connect_that_hangs_is_given_up_within_the_bound():
    async with silent_server() as url:
        rest = AuraSynthesizer(plain_settings(deepgram_api_key=PROVIDER_KEY, deepgram_base_url=url),
                               stream_options={"connect_timeout_s": 0.3})
        stream = rest.for_call()
        try:
            with pytest.raises(VoiceUnavailable) as hung:
                await collect(stream.synthesize(FIRST), timeout=2)
            assert "timed out" in str(hung.value)
        finally:
            await stream.close()
            await rest.close()


async def test_close_sends_close_and_is_idempotent(deepgram, voices):
    stream, events = voices()
    session = await deepgram.wait_speak_session(0)
    await collect(stream.synthesize(FIRST))

    await stream.close()
    await stream.close()

    await session.wait_closed()
    assert session.controls[-1] == "Close" and session.close_code == 1000
    assert len(deepgram.speak_sessions) == 1 and events == []   # no reconnect after the call's end
    with pytest.raises(VoiceUnavailable):
        await collect(stream.synthesize(SECOND), timeout=1)


async def test_close_fails_a_sentence_still_on_the_socket(deepgram, voices):
    deepgram.speak_ws_hold_after = 1
    stream, _ = voices()
    sentence = stream.synthesize(FIRST)
    await asyncio.wait_for(anext(sentence), 5)
    await stream.close()
    with pytest.raises(VoiceDropped):
        await asyncio.wait_for(anext(sentence), 2)


# --- the fake's refusals, with the SDK directly ------------------------------------------------------------
def sdk(fake: FakeDeepgram, key: str = PROVIDER_KEY) -> AsyncDeepgramClient:
    return AsyncDeepgramClient(api_key=key, environment=deepgram_environment(fake.url))


QUERY: dict[str, Any] = {"model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": 8000}


async def test_the_fake_refuses_a_wrong_key_with_401(deepgram):
    with pytest.raises(ApiError) as refused:
        async with sdk(deepgram, "wrong-key").speak.v1.connect(**QUERY):
            pass
    assert refused.value.status_code == 401 and deepgram.speak_sessions == []


@pytest.mark.parametrize("query", [
    {"encoding": "mulaw", "sample_rate": 24000},            # mu-law: 8000 or 16000 only
    {"encoding": "mp3", "sample_rate": 24000},              # not a streaming encoding
    {"encoding": "linear16", "sample_rate": 44100},         # not an offered rate
])
async def test_the_fake_refuses_a_bad_query_with_400(deepgram, query):
    with pytest.raises(ApiError) as refused:
        async with sdk(deepgram).speak.v1.connect(model="aura-2-thalia-en", **query):
            pass
    assert refused.value.status_code == 400


async def test_the_fake_refuses_a_container_on_the_socket(deepgram):
    with pytest.raises(ApiError) as refused:
        async with sdk(deepgram).speak.v1.connect(
                **QUERY, request_options={"additional_query_parameters": {"container": "none"}}):
            pass
    assert refused.value.status_code == 400


async def drain(socket: Any) -> list[Any]:
    """What the socket still sends, until it closes (cleanly or not)."""
    messages: list[Any] = []

    async def run() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in socket:
                messages.append(message)
    await asyncio.wait_for(run(), 5)
    return messages


async def test_the_fake_closes_1008_on_an_unknown_message_type(deepgram):
    async with sdk(deepgram).speak.v1.connect(**QUERY) as socket:
        await socket._send({"type": "Reset"})              # the Go SDK's old Reset (deepgram-go-sdk#347)
        await drain(socket)
    session = deepgram.speak_sessions[0]
    await session.wait_closed()
    assert session.close_code == 1008


async def test_the_fake_closes_1008_on_a_speak_over_2000_characters(deepgram):
    async with sdk(deepgram).speak.v1.connect(**QUERY) as socket:
        await socket.send_text(SpeakV1Text(text="a" * 2001))
        await drain(socket)
    session = deepgram.speak_sessions[0]
    await session.wait_closed()
    assert session.close_code == 1008 and session.buffer == []


async def test_the_fake_flushes_clears_and_closes_as_documented(deepgram):
    async with sdk(deepgram).speak.v1.connect(**QUERY) as socket:
        metadata = await asyncio.wait_for(socket.recv(), 5)
        await socket.send_text(SpeakV1Text(text="Hello "))
        await socket.send_text(SpeakV1Text(text="there."))
        await socket.send_flush()
        audio = b""
        while isinstance(message := await asyncio.wait_for(socket.recv(), 5), bytes):
            audio += message
        await socket.send_clear()
        cleared = await asyncio.wait_for(socket.recv(), 5)
        await socket.send_close()
        await drain(socket)
    assert metadata.type == "Metadata" and metadata.model_name == "aura-2-thalia-en"
    assert audio == rendered(deepgram, "Hello there.")     # buffered Speaks say one text on Flush
    assert (message.type, message.sequence_id) == ("Flushed", 0)
    assert (cleared.type, cleared.sequence_id) == ("Cleared", 1)
    assert deepgram.speak_sessions[0].close_code == 1000


async def test_the_fake_warns_on_the_21st_flush_within_a_minute_and_does_not_process_it(deepgram):
    async with sdk(deepgram).speak.v1.connect(**QUERY) as socket:
        for i in range(21):
            await socket.send_text(SpeakV1Text(text=f"Line {i}."))
            await socket.send_flush()
        messages: list[Any] = []
        while not any(getattr(m, "type", None) == "Warning" for m in messages):
            messages.append(await asyncio.wait_for(socket.recv(), 5))
        await socket.send_close()
        messages += await drain(socket)
    flushed = [m.sequence_id for m in messages if getattr(m, "type", None) == "Flushed"]
    warning = next(m for m in messages if getattr(m, "type", None) == "Warning")
    assert flushed == list(range(20))
    assert warning.warn_code == "EXCESSIVE_FLUSH"          # Deepgram's field names (deepgram-python-sdk#653)


# --- with the speaker ----------------------------------------------------------------------------------------
def speaker_for(main: Any, fallback: Any = None) -> tuple[Speaker, list[str], list[tuple[str, dict]]]:
    sent: list[str] = []
    recorded: list[tuple[str, dict]] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    voices = CallVoices([main] if fallback is None else [main, fallback])
    speaker = Speaker(voices, StreamSender(send_text, "MZ1"), 1, TurnLatency(),
                      lambda kind, **detail: recorded.append((kind, detail)))
    return speaker, sent, recorded


async def test_a_reply_over_the_socket_keeps_each_sentence_s_audio_and_mark(deepgram, voices):
    deepgram.speak_ws_bytes_per_s = 80_000                 # the next sentence is asked while one plays
    stream, _ = voices()
    speaker, sent, recorded = speaker_for(stream)
    for text in (FIRST, SECOND, THIRD):
        speaker.say(text)
    speaker.finish()
    await asyncio.wait_for(speaker.run(), 10)

    assert [s.text for s in speaker.sentences] == [FIRST, SECOND, THIRD]
    assert [s.audio_bytes for s in speaker.sentences] == [len(rendered(deepgram, t)) for t in (FIRST, SECOND, THIRD)]
    marks = [out.name for out in map(parse_outbound, sent) if out.event == "mark"]
    assert marks == ["1.start", "1.0", "1.1", "1.2"] and recorded == []
    assert deepgram.speak_sessions[0].speaks == [FIRST, SECOND, THIRD] and deepgram.speak_requests == []


async def test_a_socket_that_will_not_open_hands_the_sentence_to_the_fallback_voice(deepgram, voices):
    deepgram.refuse(503)
    stream, _ = voices()
    speaker, _, recorded = speaker_for(stream, MockSynthesizer())
    speaker.say(FIRST)
    speaker.finish()
    await asyncio.wait_for(speaker.run(), 10)

    assert [s.text for s in speaker.sentences] == [FIRST] and speaker.sentences[0].audio_bytes > 0
    assert recorded == [("tts_fallback", {"provider": "deepgram", "error": "deepgram: VoiceUnavailable",
                                          "spoken_by": "mock"})]


async def test_a_sentence_the_socket_stalls_on_is_cleared_and_said_by_the_fallback(deepgram, voices):
    deepgram.speak_ws_first_audio_delay_s = 3.0            # longer than the first-byte bound below
    stream, _ = voices()
    session = await deepgram.wait_speak_session(0)
    sent: list[str] = []
    recorded: list[tuple[str, dict]] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    voices = CallVoices([stream, MockSynthesizer()], max_gap_s=0.8)   # given up after 0.3 s of silence
    speaker = Speaker(voices, StreamSender(send_text, "MZ1"), 1, TurnLatency(),
                      lambda kind, **detail: recorded.append((kind, detail)))
    speaker.say(FIRST)
    speaker.finish()
    await asyncio.wait_for(speaker.run(), 10)

    assert recorded == [("tts_fallback", {"provider": "deepgram", "error": "deepgram: no audio in time",
                                          "spoken_by": "mock"})]
    await deepgram.wait_speak_ws(lambda: session.clears == 1)   # the stalled sentence was cleared
    deepgram.speak_ws_first_audio_delay_s = 0.0
    assert b"".join(await collect(stream.synthesize(SECOND))) == rendered(deepgram, SECOND)
    assert session.audio_sent == bytearray(rendered(deepgram, SECOND))   # none of the stalled one's audio went out
