"""OpenAI's Realtime voice, with the real SDK, against the fake Realtime WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from openai import AsyncOpenAI

from services.storage.vocabulary import EventKind
from services.tts.openai_realtime import RealtimeCallVoice, RealtimeError, RealtimeVoice
from tests.factories import PROVIDER_KEY, plain_settings
from tests.fakes.openai_realtime import RealtimeSession, realtime_audio
from tests.fakes.openai_server import FakeOpenAI

ONE = "Thanks for calling Bright Smile Dental."
TWO = "How can I help you today?"
MODEL = "gpt-realtime-2.1-mini"


class Events:
    """What the voice told the call log."""

    def __init__(self) -> None:
        self.seen: list[tuple[EventKind, dict[str, str]]] = []

    def __call__(self, kind: EventKind, **detail: str) -> None:
        self.seen.append((kind, detail))

    def of(self, kind: EventKind) -> list[dict[str, str]]:
        return [detail for k, detail in self.seen if k == kind]


def voice_for(fake: FakeOpenAI, connect_timeout_s: float = 5.0, **settings: Any) -> RealtimeVoice:
    return RealtimeVoice(plain_settings(openai_api_key=PROVIDER_KEY, openai_base_url=fake.base_url, **settings),
                         connect_timeout_s=connect_timeout_s)


@pytest.fixture
async def voice(openai_fake):
    tts = voice_for(openai_fake)
    yield tts
    await tts.close()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def call(voice, events):
    call_voice = voice.for_call(events)
    yield call_voice
    await call_voice.close()


async def say(tts: RealtimeCallVoice | RealtimeVoice, text: str) -> bytes:
    async def run() -> bytes:
        return b"".join([chunk async for chunk in tts.synthesize(text)])
    return await asyncio.wait_for(run(), 10)


async def session_of(fake: FakeOpenAI, n: int = 1) -> RealtimeSession:
    return await fake.realtime.wait_sessions(n)


# --- construction and the session ---------------------------------------------------------------------
def test_it_is_built_with_no_event_loop_running_and_describes_its_audio():
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    tts = RealtimeVoice(plain_settings(openai_api_key="k", openai_tts_voice="cedar"))
    assert (tts.sample_rate, tts.encoding) == (8000, "mulaw")
    assert tts.cache_key == f"openai-realtime:{MODEL}:cedar:pcmu"
    asyncio.run(tts.close())


async def test_for_call_prewarms_the_session_before_any_sentence(openai_fake, call):
    session = await session_of(openai_fake)
    await session.wait_sent("session.updated")
    assert session.request.query["model"] == [MODEL]
    assert session.request.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    update = session.of_type("session.update")[0]["session"]
    assert update["type"] == "realtime" and update["output_modalities"] == ["audio"]
    assert update["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert update["audio"]["input"] == {"turn_detection": None}
    assert "exactly" in update["instructions"]
    assert session.of_type("response.create") == []          # nothing spoken yet

    audio = await say(call, ONE)

    assert audio == realtime_audio(ONE, "audio/pcmu")         # mu-law 8 kHz of the sentence, byte for byte
    assert session.types[0] == "session.update" and session.types[1] == "response.create"
    response = session.of_type("response.create")[0]["response"]
    assert response["conversation"] == "none" and response["output_modalities"] == ["audio"]
    assert response["input"] == [{"type": "message", "role": "user",
                                  "content": [{"type": "input_text", "text": ONE}]}]
    assert "input_audio_buffer.append" not in session.types   # no audio is ever sent


async def test_two_sentences_one_ahead_each_get_their_own_audio_one_response_at_a_time(openai_fake, call):
    openai_fake.realtime.delta_interval_s = 0.01
    first, second = call.synthesize(ONE), call.synthesize(TWO)
    first_chunk = await asyncio.wait_for(anext(first), 5)
    second_task = asyncio.create_task(say_rest(second))       # the speaker pulls the next one meanwhile
    rest = await say_rest(first)
    assert first_chunk + rest == realtime_audio(ONE)
    assert await asyncio.wait_for(second_task, 10) == realtime_audio(TWO)
    session = await session_of(openai_fake)
    assert session.max_active == 1
    assert [r.text for r in session.responses] == [ONE, TWO]
    assert not session.sent_of_type("error")


async def say_rest(stream) -> bytes:
    """The rest of a stream's audio, within a bound (a broken voice fails the test, never hangs it)."""
    async def run() -> bytes:
        return b"".join([c async for c in stream])
    return await asyncio.wait_for(run(), 10)


async def test_sentences_are_spoken_in_the_order_they_began(openai_fake, call):
    later, sooner = call.synthesize(TWO), call.synthesize(ONE)
    sooner_task = asyncio.create_task(say_rest(sooner))
    session = await session_of(openai_fake)
    await session.wait_event("response.create")
    later_task = asyncio.create_task(say_rest(later))
    assert await asyncio.wait_for(sooner_task, 10) == realtime_audio(ONE)
    assert await asyncio.wait_for(later_task, 10) == realtime_audio(TWO)
    assert [r.text for r in session.responses] == [ONE, TWO]


# --- barge-in ------------------------------------------------------------------------------------------
async def test_closing_mid_sentence_cancels_that_response_and_the_next_sentence_is_fine(openai_fake, call):
    openai_fake.realtime.stall_after = 2
    stream = call.synthesize(ONE)
    await asyncio.wait_for(anext(stream), 5)
    session = await session_of(openai_fake)
    response = session.responses[0]

    await stream.aclose()                                     # barge-in

    await session.wait_event("response.cancel")
    assert session.of_type("response.cancel")[0]["response_id"] == response.id
    await asyncio.wait_for(response.done.wait(), 5)
    assert response.status == "cancelled"
    openai_fake.realtime.stall_after = None
    openai_fake.release.set()
    assert await say(call, TWO) == realtime_audio(TWO)
    assert not session.sent_of_type("error")                  # no cancel_not_active, no active response


async def test_closing_the_call_mid_response_ends_the_session_promptly(openai_fake, call):
    openai_fake.realtime.delta_interval_s = 0.002
    stream = call.synthesize(ONE * 20)                        # many more deltas than websockets queues
    await asyncio.wait_for(anext(stream), 5)
    session = await session_of(openai_fake)
    started = time.monotonic()
    await call.close()
    await session.wait_closed()
    assert time.monotonic() - started < 1.5
    with pytest.raises(RealtimeError, match="closed"):
        await say_rest(stream)


async def test_a_sentence_closed_before_its_turn_never_reaches_the_service(openai_fake, call):
    openai_fake.realtime.stall_after = 1
    speaking, waiting = call.synthesize(ONE), call.synthesize(TWO)
    await asyncio.wait_for(anext(speaking), 5)
    pending = asyncio.create_task(anext(waiting))
    session = await session_of(openai_fake)
    await asyncio.sleep(0)                                    # let it take its place in line
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    openai_fake.release.set()
    await say_rest(speaking)
    assert [r.text for r in session.responses] == [ONE]
    assert session.of_type("response.cancel") == []


async def test_a_sentence_given_up_before_its_response_was_created_is_cancelled_once_it_is(openai_fake, call):
    held = openai_fake.realtime.hold_created = asyncio.Event()
    openai_fake.realtime.stall_after = 1                      # still speaking when the cancel comes
    session = await session_of(openai_fake)
    first = asyncio.create_task(anext(call.synthesize(ONE)))
    await session.wait_event("response.create")
    first.cancel()                                            # the first-byte timeout gives up on it
    with pytest.raises(asyncio.CancelledError):
        await first
    assert session.of_type("response.cancel") == []           # no id to cancel yet
    held.set()
    await session.wait_event("response.cancel")
    assert session.of_type("response.cancel")[0]["response_id"] == session.responses[0].id
    await asyncio.wait_for(session.responses[0].done.wait(), 5)
    assert session.responses[0].status == "cancelled"
    openai_fake.realtime.stall_after = None
    assert await say(call, TWO) == realtime_audio(TWO)
    assert not session.sent_of_type("error")


async def test_a_cancel_after_the_response_finished_is_not_sent(openai_fake, call):
    stream = call.synthesize(ONE)
    audio = await say_rest(stream)
    await stream.aclose()
    session = await session_of(openai_fake)
    assert audio == realtime_audio(ONE)
    assert session.of_type("response.cancel") == []


# --- what the voice reports -----------------------------------------------------------------------------
async def test_a_reworded_sentence_is_reported_without_the_text_in_the_logs(openai_fake, call, events, caplog):
    openai_fake.realtime.reword = lambda text: text.replace("Bright Smile", "Bright Smiles")
    caplog.set_level("INFO", "zylin.tts.realtime")
    await say(call, ONE)
    assert events.of(EventKind.TTS_REWORDED) == [
        {"provider": "openai", "said": "Thanks for calling Bright Smiles Dental.", "asked": ONE}]
    assert "Smile" not in caplog.text and "1 words differ" in caplog.text


async def test_case_punctuation_and_spacing_are_not_rewording(openai_fake, call, events):
    openai_fake.realtime.reword = lambda text: "  thanks FOR calling bright smile dental  "
    await say(call, ONE)
    assert events.of(EventKind.TTS_REWORDED) == []


async def test_usage_is_totalled_on_the_call_and_the_process_voice(openai_fake, voice, call):
    await say(call, ONE)
    await say(call, TWO)
    session = await session_of(openai_fake)
    sent = [r.usage for r in session.responses]
    assert all(u is not None for u in sent)
    assert call.usage.responses == 2
    assert call.usage.output_tokens == sum(u["output_tokens"] for u in sent)
    assert call.usage.output_audio_tokens == sum(u["output_token_details"]["audio_tokens"] for u in sent) > 0
    assert call.usage.input_tokens == sum(u["input_tokens"] for u in sent)
    assert voice.usage.output_tokens == call.usage.output_tokens


# --- failures -------------------------------------------------------------------------------------------
async def test_an_error_event_for_the_sentence_fails_it_with_the_code(openai_fake, call):
    session = await session_of(openai_fake)
    await session.wait_sent("session.updated")
    original = session._response_create

    async def refuse(event: dict) -> None:
        from tests.fakes.openai_realtime import Refusal
        await session.error(Refusal("server_error", "The server had an error.", type="server_error"), event)
    session._response_create = refuse  # type: ignore[method-assign]
    with pytest.raises(RealtimeError, match="openai realtime: server_error") as raised:
        await say(call, ONE)
    assert raised.value.code == "server_error"
    session._response_create = original  # type: ignore[method-assign]
    assert await say(call, TWO) == realtime_audio(TWO)        # the session goes on


async def test_a_dropped_socket_fails_the_sentence_reconnects_and_reports_it(openai_fake, call, events):
    openai_fake.realtime.stall_after = 1
    stream = call.synthesize(ONE)
    await asyncio.wait_for(anext(stream), 5)
    session = await session_of(openai_fake)

    await session.drop()

    with pytest.raises(RealtimeError, match="connection lost"):
        await asyncio.wait_for(say_rest(stream), 5)
    fresh = await session_of(openai_fake, 2)                  # reconnected at once, before any sentence
    await fresh.wait_sent("session.updated")
    openai_fake.realtime.stall_after = None
    assert await say(call, TWO) == realtime_audio(TWO)
    assert [e["provider"] for e in events.of(EventKind.TTS_RECONNECT)] == ["openai"]
    assert "connection lost" in events.of(EventKind.TTS_RECONNECT)[0]["reason"]


async def test_an_expired_session_reconnects(openai_fake, call, events):
    session = await session_of(openai_fake)
    await session.wait_sent("session.updated")
    await session.expire()
    fresh = await session_of(openai_fake, 2)
    await fresh.wait_sent("session.updated")
    assert await say(call, ONE) == realtime_audio(ONE)
    assert events.of(EventKind.TTS_RECONNECT) == [{"provider": "openai", "reason": "session expired"}]


@pytest.mark.parametrize("status", [401, 403, 404, 503])
async def test_a_refused_upgrade_fails_the_sentence_promptly(openai_fake, status):
    openai_fake.realtime.refuse_status = status
    tts = voice_for(openai_fake)
    call_voice = tts.for_call()
    started = time.monotonic()
    with pytest.raises(RealtimeError, match=f"HTTP {status}") as raised:
        await say(call_voice, ONE)
    assert raised.value.status_code == status and time.monotonic() - started < 5
    openai_fake.realtime.refuse_status = None
    assert await say(call_voice, TWO) == realtime_audio(TWO)  # the next sentence connects afresh
    await call_voice.close()
    await tts.close()


async def test_a_wrong_key_is_refused_at_the_upgrade_with_401():
    async with FakeOpenAI(api_key="the-right-key") as fake:
        tts = voice_for(fake)
        with pytest.raises(RealtimeError, match="HTTP 401"):
            await say(tts, ONE)
        await tts.close()
        assert fake.realtime.sessions == []


async def test_no_session_in_time_fails_within_the_bound(openai_fake):
    hold = asyncio.Event()
    original = RealtimeSession.run

    async def silent(self: RealtimeSession) -> None:       # accepts the socket, then says nothing
        await hold.wait()
    RealtimeSession.run = silent  # type: ignore[method-assign]
    try:
        tts = voice_for(openai_fake, connect_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(RealtimeError, match="no session within"):
            await say(tts, ONE)
        assert time.monotonic() - started < 2
    finally:
        RealtimeSession.run = original  # type: ignore[method-assign]
        hold.set()
        await tts.close()


async def test_the_process_voice_says_a_line_in_a_short_lived_session(openai_fake, voice):
    assert await say(voice, ONE) == realtime_audio(ONE)
    session = await session_of(openai_fake)
    await session.wait_closed()


async def test_close_is_idempotent_and_ends_the_session(openai_fake, voice):
    call_voice = voice.for_call()
    session = await session_of(openai_fake)
    await session.wait_sent("session.updated")
    await call_voice.close()
    await call_voice.close()
    await session.wait_closed()
    with pytest.raises(RealtimeError):
        await say(call_voice, ONE)


# --- the fake refuses what the real service refuses (the real SDK against it) --------------------------
@pytest.fixture
async def connection(openai_fake):
    client = AsyncOpenAI(api_key=PROVIDER_KEY, base_url=openai_fake.base_url, max_retries=0)
    async with client.realtime.connect(model=MODEL) as conn:
        assert (await conn.recv()).type == "session.created"
        yield conn
    await client.close()


async def next_of(conn, *kinds: str):
    async def run():
        async for event in conn:
            if event.type in kinds:
                return event
    return await asyncio.wait_for(run(), 5)


def speak(text: str) -> dict:
    return {"conversation": "none", "input": [{"type": "message", "role": "user",
                                               "content": [{"type": "input_text", "text": text}]}]}


async def test_the_fake_refuses_a_voice_the_realtime_api_does_not_have(connection):
    await connection.session.update(session={"type": "realtime", "audio": {"output": {"voice": "onyx"}}},
                                    event_id="evt_1")
    error = (await next_of(connection, "error", "session.updated")).error
    assert (error.type, error.code, error.param, error.event_id) == (
        "invalid_request_error", "invalid_value", "session.audio.output.voice", "evt_1")
    assert "'onyx'" in error.message


async def test_the_fake_refuses_an_audio_format_it_does_not_have(connection):
    await connection.session.update(session={"type": "realtime", "audio": {"output": {  # type: ignore[typeddict-item]
        "format": {"type": "audio/pcm", "rate": 16000}}}})
    error = (await next_of(connection, "error", "session.updated")).error
    assert (error.code, error.param) == ("invalid_value", "session.audio.output.format.rate")
    await connection.send({"type": "session.update", "session": {  # type: ignore[typeddict-item]
        "type": "realtime", "audio": {"output": {"format": {"type": "audio/ogg"}}}}})
    error = (await next_of(connection, "error", "session.updated")).error
    assert (error.code, error.param) == ("invalid_value", "session.audio.output.format.type")


async def test_the_fake_refuses_a_new_voice_once_audio_was_produced(connection):
    await connection.session.update(session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
    assert (await next_of(connection, "session.updated", "error")).type == "session.updated"  # before audio: fine
    await connection.response.create(response=speak(ONE))  # type: ignore[arg-type]
    await next_of(connection, "response.done")
    await connection.session.update(session={"type": "realtime", "audio": {"output": {"voice": "marin"}}})
    error = (await next_of(connection, "error", "session.updated")).error
    assert error.code == "cannot_update_voice"


async def test_the_fake_refuses_a_second_active_response(openai_fake, connection):
    openai_fake.realtime.stall_after = 1
    await connection.response.create(response=speak(ONE))  # type: ignore[arg-type]
    await next_of(connection, "response.created")
    await connection.response.create(response=speak(TWO), event_id="evt_2")  # type: ignore[arg-type]
    error = (await next_of(connection, "error")).error
    assert (error.code, error.event_id) == ("conversation_already_has_active_response", "evt_2")
    openai_fake.release.set()
    assert (await next_of(connection, "response.done")).response.status == "completed"


async def test_the_fake_refuses_a_cancel_with_no_active_response(connection):
    await connection.response.cancel(event_id="evt_3")
    error = (await next_of(connection, "error")).error
    assert (error.code, error.message, error.event_id) == (
        "response_cancel_not_active", "Cancellation failed: no active response found", "evt_3")


async def test_the_fake_refuses_unknown_events_and_models(openai_fake, connection):
    await connection.send({"type": "response.speak"})  # type: ignore[arg-type, typeddict-item]
    error = (await next_of(connection, "error")).error
    assert (error.code, error.param) == ("invalid_value", "type")
    client = AsyncOpenAI(api_key=PROVIDER_KEY, base_url=openai_fake.base_url, max_retries=0)
    async with client.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        error = (await next_of(conn, "error")).error
        assert error.code == "model_not_found"
    await client.close()


# --- with the speaker's own synthesis jobs -------------------------------------------------------------
async def test_the_speakers_syntheses_one_ahead_each_hear_their_own_sentence(openai_fake, call):
    from services.orchestrator.speaker import Synthesis

    openai_fake.realtime.delta_interval_s = 0.005
    first, second = Synthesis(call, ONE, None), Synthesis(call, TWO, None)   # the speaker starts both
    try:
        assert await asyncio.wait_for(collect(first), 10) == realtime_audio(ONE)
        assert await asyncio.wait_for(collect(second), 10) == realtime_audio(TWO)
    finally:
        first.cancel()
        second.cancel()
    session = await session_of(openai_fake)
    assert session.max_active == 1 and not session.sent_of_type("error")


async def test_a_voice_that_cannot_connect_lets_the_speaker_fall_back_before_the_first_byte(openai_fake):
    from services.orchestrator.latency import TurnLatency
    from services.orchestrator.speaker import CallVoices, Speaker
    from services.telephony.media_streams import StreamSender
    from services.tts.mock import MockSynthesizer

    openai_fake.realtime.refuse_status = 503
    tts = voice_for(openai_fake)
    call_voice = tts.for_call()
    recorded: list[tuple[str, dict]] = []

    async def send_text(text: str) -> None:
        pass

    speaker = Speaker(CallVoices([call_voice, MockSynthesizer()]), StreamSender(send_text, "MZ1"), 1,
                      TurnLatency(), lambda kind, **detail: recorded.append((kind, detail)))
    speaker.say(ONE)
    speaker.finish()
    try:
        await asyncio.wait_for(speaker.run(), 10)
    finally:
        await call_voice.close()
        await tts.close()
    assert speaker.sentences and speaker.sentences[0].audio_bytes > 0
    assert recorded == [("tts_fallback", {"provider": "openai", "error": "openai: HTTP 503", "spoken_by": "mock"})]


async def collect(job) -> bytes:
    return b"".join([chunk async for chunk in job.chunks()])
