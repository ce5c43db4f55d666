"""Whole calls through the real server with Flux (the fake Deepgram's /v2/listen) and the OpenAI
brain (the fake): speculative replies on EagerEndOfTurn, committed on EndOfTurn, dropped unheard
on TurnResumed, their side-effecting tools held until the commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import numpy as np

from services.audio.codec import pcm_to_ulaw
from services.telephony import media_streams as wire
from services.telephony.webhook import StreamClaim, stream_parameters
from tests.conftest import Running, running_zylin
from tests.factories import PROVIDER_KEY
from tests.fakes.deepgram_flux import FluxSession
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import ChatReply, FakeOpenAI

MESSAGE = {"name": "Ann Lee", "message": "Please call Ann Lee back about her crown.", "urgency": "normal"}
LEAVE = "Can I leave a message for the dentist?"
SILENCE = b"\xff" * 160


def model(request: dict) -> ChatReply:
    """The fake model: a message is taken with a tool; a booking question is answered in words."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        calls = {c["id"]: c["function"]["name"] for m in request["messages"] for c in m.get("tool_calls") or []}
        if calls[last["tool_call_id"]] == "check_availability":
            return ChatReply.text("Let me see what's free.")
        return ChatReply.text("I've passed your message on.")
    said = last["content"].lower()
    if "anything free" in said:
        return ChatReply.tool_calls(("check_availability", {"service": "Cleaning", "date": "tomorrow"}))
    if "message" in said:
        return ChatReply.tool_calls(("take_message", MESSAGE), text=["Of course, ", "let me write that down."])
    if "thursday" in said:
        return ChatReply.text("Thursday works. What time suits you?")
    return ChatReply.text("Sorry, could you say that again?")


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm_to_ulaw((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())


class Twilio:
    """Twilio's side of one Media Stream, by hand: a frame every 20 ms (silence unless told to
    speak), marks echoed as they arrive (the caller hears everything at once), media recorded."""

    def __init__(self, ws, stream_sid: str) -> None:
        self.ws, self.stream_sid = ws, stream_sid
        self.media: list[tuple[float, int]] = []   # (arrival, bytes)
        self.marks: list[str] = []
        self._seq = 10
        self._speech = bytearray()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def say(self, ulaw: bytes) -> None:
        self._speech += ulaw

    def media_since(self, t: float) -> int:
        return sum(n for at, n in self.media if at > t)

    async def wait_marks(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` sentence marks came back (a reply's `<gen>.start` mark is not counted)."""
        async with asyncio.timeout(timeout):
            while len([m for m in self.marks if not m.endswith(".start")]) < count:
                await asyncio.sleep(0.01)

    async def _send(self) -> None:
        chunk, next_t = 0, time.monotonic()
        while True:
            frame = bytes(self._speech[:160]).ljust(160, b"\xff")
            del self._speech[:160]
            chunk += 1
            self._seq += 1
            await self.ws.send(wire.inbound_media(self._seq, self.stream_sid, chunk, chunk * 20, frame))
            next_t += 0.02
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    async def _receive(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if message["event"] == "media":
                self.media.append((time.monotonic(), len(message["media"]["payload"]) * 3 // 4))
            elif message["event"] == "mark":
                self.marks.append(message["mark"]["name"])
                self._seq += 1
                await self.ws.send(wire.inbound_mark(self._seq, self.stream_sid, message["mark"]["name"]))


@contextlib.asynccontextmanager
async def flux_call(script: list[str] | None = None, **overrides) -> AsyncIterator[
        tuple[Running, FakeDeepgram, FakeOpenAI, Twilio, FluxSession, str]]:
    async with FakeDeepgram(api_key=PROVIDER_KEY, script=script) as deepgram, \
            FakeOpenAI(api_key=PROVIDER_KEY) as openai:
        openai.chat_handler = model
        settings = dict(use_mock_streaming=False, asr_provider="deepgram", llm_provider="openai",
                        tts_provider="mock", deepgram_api_key=PROVIDER_KEY, openai_api_key=PROVIDER_KEY,
                        deepgram_base_url=deepgram.url, openai_base_url=openai.base_url,
                        deepgram_model="flux-general-en", **overrides)
        async with running_zylin(**settings) as zylin:
            call_sid, stream_sid = "CA" + "f1" * 16, "MZ" + "f1" * 16
            params = stream_parameters(StreamClaim(call_sid, "+15550004444", ""), zylin.settings.token_secret)
            async with zylin.media_socket() as ws:
                await ws.send(wire.inbound_connected())
                await ws.send(wire.inbound_start(1, stream_sid, call_sid, "AC" + "f1" * 16, params))
                twilio = Twilio(ws, stream_sid)
                twilio.start()
                try:
                    session = await deepgram.wait_session(0)
                    assert isinstance(session, FluxSession)
                    await twilio.wait_marks(1)    # the greeting was heard
                    await asyncio.sleep(0.1)
                    yield zylin, deepgram, openai, twilio, session, call_sid
                finally:
                    await twilio.stop()
                    await ws.send(wire.inbound_stop(99999, stream_sid, call_sid, "AC" + "f1" * 16))


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def tools_run(record: dict | None) -> list[str]:
    return [e.detail["name"] for e in (record or {}).get("events", []) if e.kind == "tool"]


def turns_of(record: dict, speaker: str) -> list:
    return [t for t in record["turns"] if t.speaker == speaker]


async def test_an_eager_reply_waits_unheard_and_is_sent_on_the_end_of_turn():
    async with flux_call() as (zylin, _, openai, twilio, session, call_sid):
        await session.send_turn_info("StartOfTurn", start=1.0, end=1.02)
        await session.send_turn_info("EagerEndOfTurn", LEAVE, start=1.0, end=2.0, confidence=0.5)
        await wait_for(lambda: len(openai.chat_requests) == 1)
        eager_at = time.monotonic()
        await asyncio.sleep(0.4)   # the brain answered and its first sentence is synthesized meanwhile
        assert twilio.media_since(eager_at) == 0, "nothing of a speculative reply reaches the caller"
        assert tools_run(zylin.recorder.calls.get(call_sid)) == [], "take_message waits for the commit"

        committed_at = time.monotonic()
        await session.send_turn_info("EndOfTurn", LEAVE, start=1.0, end=2.0, confidence=0.9)
        await twilio.wait_marks(3)
        first_media = next(at for at, _ in twilio.media if at > committed_at)
    record = await zylin.recorder.wait_ended(call_sid)

    assert first_media - committed_at < 0.15, "what was ready went out at once"
    assert [t.text for t in turns_of(record, "caller")] == [LEAVE]
    assert tools_run(record) == ["take_message"]
    assert len(openai.chat_requests) == 2          # the speculation, then after the tool's result
    replies = [t.text for t in turns_of(record, "zylin")][1:]
    assert replies[0].startswith("Of course, let me write that down.")
    latency = turns_of(record, "caller")[0].latency
    assert latency.speculative and latency.first_audio_ms is not None
    [speculation] = [e.detail for e in record["events"] if e.kind == "speculative_reply"]
    assert speculation["outcome"] == "committed" and speculation["lead_ms"] >= 400   # eager end -> EndOfTurn


async def test_a_resumed_turn_cancels_the_speculation_without_a_sound_or_a_side_effect():
    async with flux_call() as (zylin, _, openai, twilio, session, call_sid):
        await session.send_turn_info("EagerEndOfTurn", LEAVE, start=1.0, end=2.0, confidence=0.5)
        await wait_for(lambda: len(openai.chat_requests) == 1)
        eager_at = time.monotonic()
        await asyncio.sleep(0.3)
        await session.send_turn_info("TurnResumed", LEAVE, start=1.0, end=2.2)
        await asyncio.sleep(0.5)
        assert twilio.media_since(eager_at) == 0
        assert tools_run(zylin.recorder.calls.get(call_sid)) == []

        # The turn ends with other words: answered afresh, once.
        longer = "Can I leave a message for the dentist about my crown?"
        await session.send_turn_info("EndOfTurn", longer, start=1.0, end=3.0, confidence=0.9)
        await twilio.wait_marks(3)
    record = await zylin.recorder.wait_ended(call_sid)

    assert [t.text for t in turns_of(record, "caller")] == [longer]
    assert tools_run(record) == ["take_message"]
    assert openai.chat_requests[1]["messages"][-1]["content"] == longer
    assert not turns_of(record, "caller")[0].latency.speculative
    [speculation] = [e.detail for e in record["events"] if e.kind == "speculative_reply"]
    assert speculation["outcome"] == "discarded" and speculation["lead_ms"] >= 300   # eager end -> resumed


async def test_an_end_of_turn_with_other_words_than_the_eager_one_restarts_the_reply():
    async with flux_call() as (zylin, _, openai, twilio, session, call_sid):
        await session.send_turn_info("EagerEndOfTurn", "I'd like to book", start=1.0, end=2.0)
        await wait_for(lambda: len(openai.chat_requests) == 1)
        await session.send_turn_info("EndOfTurn", "I'd like to book on Thursday.", start=1.0, end=2.5)
        await twilio.wait_marks(2)
    record = await zylin.recorder.wait_ended(call_sid)

    replies = [t.text for t in turns_of(record, "zylin")][1:]
    assert replies == ["Thursday works. What time suits you?"]
    assert [r["messages"][-1]["content"] for r in openai.chat_requests] == [
        "I'd like to book", "I'd like to book on Thursday."]


async def test_a_mid_sentence_pause_is_one_turn_answered_once():
    script = ["I'd like to book | on Thursday."]
    async with flux_call(script, flux_eot_threshold=0.9, flux_eager_eot_threshold=0.3) as (
            zylin, deepgram, openai, twilio, session, call_sid):
        # "I'd like to book ... um ... on Thursday": the pause is long enough for an eager end
        # (0.3 x 0.6 s of silence), not for the end (0.9 x 0.6 s).
        twilio.say(tone(0.6) + SILENCE * 15 + tone(0.6))
        await deepgram.wait_heard(1, timeout=10)
        await twilio.wait_marks(2)
        await asyncio.sleep(0.3)
    record = await zylin.recorder.wait_ended(call_sid)

    assert session.events == ["StartOfTurn", "Update", "Update", "EagerEndOfTurn", "TurnResumed",
                              "Update", "Update", "EagerEndOfTurn", "EndOfTurn"]
    assert [t.text for t in turns_of(record, "caller")] == ["I'd like to book on Thursday."]
    assert [t.text for t in turns_of(record, "zylin")][1:] == ["Thursday works. What time suits you?"]
    assert turns_of(record, "caller")[0].latency.speculative
    assert [e.detail["outcome"] for e in record["events"] if e.kind == "speculative_reply"] == [
        "discarded", "committed"]   # the pause's eager end was wrong, the second right


async def test_a_read_only_tool_may_run_while_the_reply_is_still_speculative():
    asked = "Do you have anything free tomorrow?"
    async with flux_call() as (zylin, _, openai, twilio, session, call_sid):
        await session.send_turn_info("EagerEndOfTurn", asked, start=1.0, end=2.0)
        eager_at = time.monotonic()
        await wait_for(lambda: tools_run(zylin.recorder.calls.get(call_sid)) == ["check_availability"])
        assert twilio.media_since(eager_at) == 0
        await session.send_turn_info("EndOfTurn", asked, start=1.0, end=2.0)
        await twilio.wait_marks(2)
    record = await zylin.recorder.wait_ended(call_sid)

    assert tools_run(record) == ["check_availability"]
    assert [t.text for t in turns_of(record, "zylin")][1:] == ["Let me see what's free."]
