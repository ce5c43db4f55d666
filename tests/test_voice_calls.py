"""Whole calls through the real server with each streaming voice against its wire-level fake:
Deepgram Aura over one speak WebSocket per call, and OpenAI's Realtime API (one session per call).
Mock recognizer and offline brain; the voices' SDKs talk to the fakes on 127.0.0.1.

Each voice: replies said over the call's one connection (opened at call start, closed at its end),
a barge-in that tells the provider to stop and sends nothing more, a provider failure mid-reply
after which the other voice finishes the reply, and a reconnect after a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.orchestrator.record import MemoryRecorder
from services.simulator.caller import CallerLine, CallResult
from tests.conftest import Running, running_zylin
from tests.fakes.deepgram_server import FakeDeepgram, speak_audio
from tests.fakes.openai_realtime import RealtimeSession, realtime_audio
from tests.fakes.openai_server import FakeOpenAI

KEY = "secret-test-key-42"
HOURS = "What are your opening hours?"   # the offline brain answers in several sentences
PRICE = "How much is a cleaning?"


@contextlib.asynccontextmanager
async def on_aura(deepgram: FakeDeepgram, **overrides: Any) -> AsyncIterator[Running]:
    """A server speaking with Aura streaming (the default with a Deepgram key); `overrides` may
    name a fallback voice."""
    values: dict[str, Any] = dict(use_mock_streaming=False, asr_provider="mock", llm_provider="mock",
                                  deepgram_api_key=KEY, deepgram_base_url=deepgram.url)
    values.update(overrides)
    async with running_zylin(**values) as running:
        assert running.runtime is not None
        phrases = running.runtime._phrases_task
        if phrases is not None:
            await phrases   # the fixed lines, rendered by REST at start-up: not the call's traffic
        yield running


async def call(running: Running, *lines: CallerLine | str, **caller: Any) -> tuple[CallResult, dict]:
    said = [line if isinstance(line, CallerLine) else CallerLine(line) for line in lines]
    result = await running.caller(speed=4.0, **caller).call(said)
    return result, await running.recorder.wait_ended(result.call_sid)


def zylin_lines(record: dict) -> list[str]:
    return [t.text for t in record["turns"] if t.speaker == "zylin"]


def events(record: dict, kind: str) -> list[dict]:
    return [e.detail for e in record["events"] if e.kind == kind]


def aura_audio(deepgram: FakeDeepgram, text: str) -> bytes:
    return speak_audio(text, "mulaw", 8000, deepgram.speak_seconds_per_char)


# --- Deepgram Aura streaming --------------------------------------------------------------------------

async def test_aura_says_every_reply_of_a_call_over_one_socket_opened_at_call_start():
    async with FakeDeepgram(api_key=KEY) as deepgram, on_aura(deepgram) as running:
        rest_before = len(deepgram.speak_requests)
        result, record = await call(running, HOURS, PRICE)
        [session] = deepgram.speak_sessions
        await session.wait_closed()

    replies = zylin_lines(record)[1:]           # the greeting came from the phrase cache
    assert len(replies) == 2
    assert " ".join(session.speaks) == " ".join(replies), "every sentence went over the socket"
    assert session.flushes == len(session.speaks) and session.clears == 0
    assert len(deepgram.speak_requests) == rest_before, "no sentence by REST"
    heard = result.audio_by_mark()
    spoken = [heard[m] for m in heard if not m.startswith("1.")]
    assert spoken == [aura_audio(deepgram, text) for text in session.speaks]   # byte for byte, in order
    assert session.close_code == 1000, "closed with Close at the call's end"
    assert not events(record, "tts_fallback") and not events(record, "provider_error")


async def test_a_barge_in_clears_aura_and_nothing_more_of_the_reply_is_sent():
    async with FakeDeepgram(api_key=KEY) as deepgram, on_aura(deepgram) as running:
        deepgram.speak_ws_bytes_per_s = 4000    # half real time: the reply is still coming when cut
        result, record = await call(running, HOURS, CallerLine(PRICE, barge_in_after_ms=800))
        [session] = deepgram.speak_sessions
        await session.wait_closed()

    assert result.clears and events(record, "barge_in")
    assert session.clears >= 1, "Aura was told to stop"
    cut = result.clears[0]
    after = [r for r in result.received if r.t > cut and r.event in ("media", "mark")]
    # After the clear the next audio is the answer to the interruption (reply 3): its first frame,
    # then its start mark. Nothing of the cut reply follows the clear.
    first_mark = next(r for r in after if r.event == "mark")
    assert first_mark.mark == "3.start"
    assert [r.event for r in after[:after.index(first_mark)]] == ["media"]
    hours = [t for t in record["turns"] if t.speaker == "zylin"][1]
    assert hours.interrupted


async def test_when_the_aura_socket_drops_mid_reply_the_other_voice_finishes_the_reply():
    async with FakeDeepgram(api_key=KEY) as deepgram, \
            on_aura(deepgram, tts_fallback_provider="mock") as running:
        deepgram.speak_ws_hold_after = 1        # each sentence stalls after its first chunk...
        task = asyncio.ensure_future(call(running, HOURS))
        session = await deepgram.wait_speak_session(0)
        await deepgram.wait_speak_ws(lambda: len(session.audio_sent) > 0, timeout=10)
        await session.drop(1011)                # ...and the socket drops there
        result, record = await asyncio.wait_for(task, 30)

    reply = [t for t in record["turns"] if t.speaker == "zylin"][1]
    assert not reply.interrupted and reply.heard_text == reply.text, "the caller heard the whole reply"
    marks = [m for m in result.audio_by_mark() if m.startswith("2.")]
    assert len(marks) >= 2 and all(result.audio_by_mark()[m] for m in marks)
    [switch] = events(record, "tts_fallback")
    assert switch["provider"] == "deepgram" and switch["spoken_by"] == "mock"
    assert [e["heard"] for e in events(record, "provider_error")] == ["part"]   # the broken sentence
    assert [e["provider"] for e in events(record, "tts_reconnect")][:1] == ["deepgram"], "reopened"


async def test_a_socket_deepgram_closes_while_idle_is_reopened_and_no_reply_needs_the_fallback():
    async with FakeDeepgram(api_key=KEY) as deepgram, \
            on_aura(deepgram, tts_fallback_provider="mock") as running:
        deepgram.speak_ws_idle_timeout_s = 0.4   # closes 1011 while the caller talks or pauses
        result, record = await call(running, CallerLine(HOURS, pause_before_ms=4000),
                                    CallerLine(PRICE, pause_before_ms=4000))
        sessions = list(deepgram.speak_sessions)

    assert len(sessions) >= 2, "a closed socket was reopened"
    replies = zylin_lines(record)[1:]
    assert " ".join(t for s in sessions for t in s.speaks) == " ".join(replies), "all over the sockets"
    assert events(record, "tts_reconnect") and not events(record, "tts_fallback")
    heard = result.audio_by_mark()
    spoken = [heard[m] for m in heard if not m.startswith("1.")]
    assert spoken == [aura_audio(deepgram, t) for s in sessions for t in s.speaks]


# --- OpenAI Realtime ------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def on_realtime(openai: FakeOpenAI, **overrides: Any) -> AsyncIterator[Running]:
    """A server speaking with OpenAI's Realtime voice (the default with only an OpenAI key; the
    offline brain here, so the fake is asked for nothing but speech)."""
    values: dict[str, Any] = dict(use_mock_streaming=False, asr_provider="mock", llm_provider="mock",
                                  openai_api_key=KEY, openai_base_url=openai.base_url)
    values.update(overrides)
    async with running_zylin(**values) as running:
        assert running.runtime is not None
        if running.runtime._phrases_task is not None:
            await running.runtime._phrases_task   # the fixed lines: start-up sessions, not the call's
        yield running


async def replies_played(running: Running, count: int, timeout_s: float = 10.0) -> None:
    """Until `count` replies after the greeting have played to the end (the recorder has them)."""
    recorder = running.recorder
    assert isinstance(recorder, MemoryRecorder)
    deadline = asyncio.get_running_loop().time() + timeout_s

    def played() -> int:
        return max((sum(t.speaker == "zylin" for t in c["turns"]) - 1 for c in recorder.calls.values()), default=0)

    while played() < count:
        assert asyncio.get_running_loop().time() < deadline, "the reply did not play"
        await asyncio.sleep(0.01)


def call_sessions(openai: FakeOpenAI, before: int) -> list[RealtimeSession]:
    return openai.realtime.sessions[before:]


async def test_realtime_says_every_reply_of_a_call_over_one_session_read_verbatim():
    async with FakeOpenAI(api_key=KEY) as openai, on_realtime(openai) as running:
        before = len(openai.realtime.sessions)
        result, record = await call(running, HOURS, PRICE)
        [session] = call_sessions(openai, before)
        await session.wait_closed()

    replies = zylin_lines(record)[1:]
    assert " ".join(r.text for r in session.responses) == " ".join(replies)
    update = session.of_type("session.update")[0]["session"]
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["input"]["turn_detection"] is None and update["audio"]["output"]["voice"] == "marin"
    assert {r.conversation for r in session.responses} == {"none"} and session.max_active == 1
    heard = result.audio_by_mark()
    spoken = [heard[m] for m in heard if not m.startswith("1.")]
    assert spoken == [realtime_audio(r.text) for r in session.responses]   # mu-law as sent: no resampling
    assert not events(record, "tts_reworded") and not events(record, "tts_fallback")


async def test_a_sentence_realtime_rewords_is_recorded_on_the_call():
    async with FakeOpenAI(api_key=KEY) as openai, on_realtime(openai) as running:
        openai.realtime.reword = lambda text: text.replace("cleaning", "clean")
        result, record = await call(running, PRICE)

    [reworded] = events(record, "tts_reworded")
    assert reworded["provider"] == "openai" and "cleaning" in reworded["asked"] and "clean " in reworded["said"]


async def test_a_barge_in_cancels_the_realtime_response_and_nothing_more_of_the_reply_is_sent():
    async with FakeOpenAI(api_key=KEY) as openai, on_realtime(openai) as running:
        openai.realtime.delta_interval_s = 0.05    # slower than it plays: the reply is still coming when cut
        before = len(openai.realtime.sessions)
        result, record = await call(running, HOURS, CallerLine(PRICE, barge_in_after_ms=800))
        [session] = call_sessions(openai, before)
        await session.wait_closed()

    assert result.clears and events(record, "barge_in")
    assert session.of_type("response.cancel"), "OpenAI was told to stop"
    assert "cancelled" in [r.status for r in session.responses]
    cut = result.clears[0]
    after = [r for r in result.received if r.t > cut and r.event in ("media", "mark")]
    first_mark = next(r for r in after if r.event == "mark")
    assert first_mark.mark == "3.start"
    assert [r.event for r in after[:after.index(first_mark)]] == ["media"]
    assert not session.sent_of_type("error"), "no cancel of a response that was not active"


async def test_when_the_realtime_session_drops_mid_reply_the_other_voice_finishes_it_and_it_reconnects():
    async with FakeOpenAI(api_key=KEY) as openai, on_realtime(openai, tts_fallback_provider="mock") as running:
        openai.realtime.stall_after = 1            # each sentence stalls after its first delta...
        before = len(openai.realtime.sessions)
        task = asyncio.ensure_future(call(running, HOURS))
        session = await openai.realtime.wait_sessions(before + 1)
        await session.wait_until(lambda: any(r.deltas for r in session.responses), timeout=10)
        await session.drop()                       # ...and the connection is lost there
        result, record = await asyncio.wait_for(task, 30)

    reply = [t for t in record["turns"] if t.speaker == "zylin"][1]
    assert not reply.interrupted and reply.heard_text == reply.text, "the caller heard the whole reply"
    [switch] = events(record, "tts_fallback")
    assert switch["provider"] == "openai" and switch["spoken_by"] == "mock"
    assert [e["heard"] for e in events(record, "provider_error")] == ["part"]
    assert [e["provider"] for e in events(record, "tts_reconnect")][:1] == ["openai"], "reconnected"
    assert len(openai.realtime.sessions) >= before + 2


async def test_a_realtime_session_that_expires_between_replies_is_replaced_and_no_reply_needs_the_fallback():
    async with FakeOpenAI(api_key=KEY) as openai, on_realtime(openai, tts_fallback_provider="mock") as running:
        before = len(openai.realtime.sessions)
        task = asyncio.ensure_future(call(running, HOURS, CallerLine(PRICE, pause_before_ms=3000)))
        session = await openai.realtime.wait_sessions(before + 1)
        await replies_played(running, 1)
        await session.expire()                     # session_expired, then closed, while the caller pauses
        result, record = await asyncio.wait_for(task, 30)

    sessions = call_sessions(openai, before)
    assert len(sessions) == 2
    assert " ".join(r.text for s in sessions for r in s.responses) == " ".join(zylin_lines(record)[1:])
    assert events(record, "tts_reconnect") and not events(record, "tts_fallback")


# --- both keys: Aura streaming speaks, OpenAI Realtime stands by ----------------------------------------

async def test_with_both_keys_a_dropped_aura_socket_hands_the_reply_to_the_realtime_session_open_since_call_start():
    async with FakeDeepgram(api_key=KEY) as deepgram, FakeOpenAI(api_key=KEY) as openai, \
            on_aura(deepgram, openai_api_key=KEY, openai_base_url=openai.base_url) as running:
        before = len(openai.realtime.sessions)
        deepgram.speak_ws_hold_after = 1
        task = asyncio.ensure_future(call(running, HOURS, PRICE))
        standby = await openai.realtime.wait_sessions(before + 1)   # opened with the call, before any failure
        session = await deepgram.wait_speak_session(0)
        assert not standby.responses
        await deepgram.wait_speak_ws(lambda: len(session.audio_sent) > 0, timeout=10)
        await session.drop(1011)
        result, record = await asyncio.wait_for(task, 30)

    [switch] = events(record, "tts_fallback")
    assert switch["provider"] == "deepgram" and switch["spoken_by"] == "openai"
    hours, price = [t for t in record["turns"] if t.speaker == "zylin"][1:]
    assert not hours.interrupted and hours.heard_text == hours.text
    said_by_openai = [r.text for r in standby.responses]
    assert said_by_openai[-1] == price.text, "the rest of the call is in the Realtime voice"
    heard = result.audio_by_mark()
    assert [heard[m] for m in heard if m.startswith("3.")] == [realtime_audio(price.text)]
