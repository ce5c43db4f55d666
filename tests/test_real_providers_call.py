"""Whole phone calls with every real adapter (Deepgram ASR, OpenAI brain, OpenAI's Speech API as
the voice) talking, through their real SDKs, to the wire-level fakes on 127.0.0.1 — the code path
production runs. The streaming voices' whole calls are in tests/test_voice_calls.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from services.audio.codec import rms, ulaw_to_pcm
from services.receptionist.lines import ASR_DOWN_LINE, FALLBACK_LINE
from services.simulator.caller import CallerLine
from tests.conftest import running_zylin
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import ChatReply, FakeOpenAI

MESSAGE = {"name": "Ann Lee", "message": "Please call Ann Lee back about her crown.", "urgency": "normal"}
HOURS = ("We're open Monday to Friday from nine in the morning until five in the afternoon.",
         " On Thursdays we stay open until seven, and on Fridays we close at three.")
PRICE = "A cleaning is one hundred and twenty dollars."


def receptionist_model(request: dict) -> ChatReply:
    """The fake model's side of the conversation: it answers by the caller's words, and after a
    tool result it follows up the way a model does."""
    messages = request["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        calls = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls") or []}
        if calls[last["tool_call_id"]] == "take_message":
            assert '"ok": true' in last["content"]
            return ChatReply.text("I've passed your message on to the team.", " Anything else I can do?")
        return ChatReply.text()   # after end_call there is nothing left to say
    said = last["content"].lower()
    if "message" in said:
        return ChatReply.tool_calls(("take_message", MESSAGE), text=["Of course, ", "let me write that down."])
    if "goodbye" in said:
        return ChatReply.tool_calls(("end_call", {"reason": "caller is done"}),
                                    text=["Thanks for calling Bright Smile Dental.", " Goodbye!"])
    if "hours" in said:
        return ChatReply.text(*HOURS)
    if "cleaning" in said:
        return ChatReply.text(PRICE)
    return ChatReply.text("Sorry, could you say that again?")


@contextlib.asynccontextmanager
async def real_zylin(script: list[str], **overrides) -> AsyncIterator[tuple]:
    async with FakeDeepgram(api_key="test-key", script=script) as deepgram, \
            FakeOpenAI(api_key="test-key") as openai:
        openai.chat_handler = receptionist_model
        settings = dict(use_mock_streaming=False, asr_provider="deepgram", llm_provider="openai",
                        tts_provider="openai", openai_tts_api="speech",
                        deepgram_api_key="test-key", openai_api_key="test-key",
                        deepgram_base_url=deepgram.url, openai_base_url=openai.base_url)
        settings.update(overrides)
        async with running_zylin(**settings) as zylin:
            yield zylin, deepgram, openai


def zylin_turns(record: dict) -> list:
    return [t for t in record["turns"] if t.speaker == "zylin"]


def caller_turns(record: dict) -> list:
    return [t for t in record["turns"] if t.speaker == "caller"]


async def test_a_caller_leaves_a_message_and_says_goodbye_with_all_real_adapters():
    lines = ["Can I leave a message for the dentist please?", "No, that's all. Goodbye."]
    async with real_zylin(lines) as (zylin, deepgram, openai):
        result = await zylin.caller(speed=4.0).call([CallerLine(t) for t in lines], hang_up=False)
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert not result.timeouts and not result.protocol_errors
    # The greeting was rendered by the OpenAI speech API once, at start-up, and heard first.
    assert openai.speech_requests[0]["input"].startswith("Thanks for calling Bright Smile Dental")
    assert zylin_turns(record)[0].text.startswith("Thanks for calling Bright Smile Dental")
    assert rms(ulaw_to_pcm(result.heard_ulaw)) > 300
    # Deepgram heard the caller: the stream was opened as documented and closed with CloseStream.
    session = deepgram.sessions[0]
    assert session.query["encoding"] == ["linear16"] and session.query["sample_rate"] == ["8000"]
    assert "Bright Smile Dental" in session.query["keyterm"]
    assert [t.text for t in caller_turns(record)] == lines
    await session.wait_control("CloseStream")
    # The tool call ran, its result went back to the model, and the follow-up was spoken.
    tools = [(e.detail["name"], e.detail["arguments"]) for e in record["events"] if e.kind == "tool"]
    assert tools == [("take_message", MESSAGE), ("end_call", {"reason": "caller is done"})]
    second_request = openai.chat_requests[1]["messages"]
    assert second_request[-1]["role"] == "tool" and '"ok": true' in second_request[-1]["content"]
    message_reply = zylin_turns(record)[1].text
    assert message_reply.startswith("Of course, let me write that down.")
    assert "I've passed your message on to the team." in message_reply
    assert "Goodbye!" in zylin_turns(record)[-1].text
    assert record["ended"] == "zylin ended the call"
    for turn in caller_turns(record):
        latency = turn.latency.as_dict()
        assert all(latency[k] is not None for k in ("asr_ms", "llm_ttft_ms", "tts_ttfb_ms", "first_audio_ms"))


async def test_a_barge_in_cancels_the_speech_still_being_synthesized():
    lines = ["What are your opening hours?", "Sorry, how much is a cleaning?"]
    async with real_zylin(lines) as (zylin, deepgram, openai):
        openai.speech_bytes_per_s = 48000          # speech streams at real time, as it is produced
        greeting_streams = len(openai.speech_streams)
        result = await zylin.caller(speed=2.0).call([
            CallerLine(lines[0], pause_before_ms=100),
            CallerLine(lines[1], barge_in_after_ms=1000),
        ])
        record = await zylin.recorder.wait_ended(result.call_sid)
        hours_streams = [s for s in openai.speech_streams[greeting_streams:]
                         if s.request.json()["input"] in {h.strip() for h in HOURS}]
        for stream in hours_streams:
            await asyncio.wait_for(asyncio.wait([asyncio.ensure_future(stream.finished.wait()),
                                                 asyncio.ensure_future(stream.closed_early.wait())],
                                                return_when=asyncio.FIRST_COMPLETED), 5)

    assert result.clears, "the caller's speech must clear what Twilio had not played"
    hours_reply = next(t for t in zylin_turns(record) if t.text.startswith("We're open"))
    assert hours_reply.interrupted and len(hours_reply.heard_text) < len(hours_reply.text)
    # The synthesis in flight when the caller spoke was hung up on, not read to the end.
    assert any(s.closed_early.is_set() and not s.finished.is_set() for s in hours_streams)
    assert PRICE in zylin_turns(record)[-1].text, "the interrupting question is answered"


async def test_a_call_survives_deepgram_dropping_the_connection_mid_call():
    lines = ["What are your opening hours?", "How much is a cleaning?"]
    async with real_zylin(lines) as (zylin, deepgram, openai):
        call = asyncio.create_task(zylin.caller(speed=4.0).call([CallerLine(t) for t in lines]))
        await deepgram.wait_heard(1)
        await deepgram.sessions[0].drop()           # no close frame: a network drop
        result = await asyncio.wait_for(call, 60)
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert len(deepgram.sessions) == 2, "the recognizer reconnected by itself"
    assert deepgram.heard == lines
    assert any(m["type"] == "Results" and m["channel"]["alternatives"][0]["transcript"] == lines[1]
               for m in deepgram.sessions[1].sent), "the second line was heard on the new connection"
    assert [t.text for t in caller_turns(record)] == lines
    assert PRICE in zylin_turns(record)[-1].text
    assert not [e for e in record["events"] if e.kind == "provider_error"]
    assert not result.timeouts


async def test_a_stalled_model_gets_the_spoken_fallback_within_the_timeout():
    lines = ["What are your opening hours?"]
    async with real_zylin(lines, llm_first_token_timeout_s=0.5, llm_timeout_s=2.0) as (zylin, deepgram, openai):
        openai.chat_handler = lambda request: ChatReply.stall()
        result = await zylin.caller(speed=4.0).call([CallerLine(lines[0])])
        record = await zylin.recorder.wait_ended(result.call_sid)
        for stream in openai.chat_streams:          # both stalled requests were hung up on
            await asyncio.wait_for(stream.closed_early.wait(), 5)

    assert len(openai.chat_requests) == 2            # one quick retry, then the fallback
    assert zylin_turns(record)[-1].text == FALLBACK_LINE
    [latency_ms] = result.reply_latencies_ms()
    assert latency_ms is not None and latency_ms < 2000 + 1500   # within LLM_TIMEOUT_S, plus TTS and play-out
    errors = [e for e in record["events"] if e.kind == "provider_error"]
    assert [e.detail["provider"] for e in errors] == ["llm"]


async def test_a_caller_hears_an_apology_when_deepgram_cannot_be_reached():
    async with real_zylin(["Hello?"]) as (zylin, deepgram, openai):
        deepgram.refuse(503)
        started = time.monotonic()
        result = await zylin.caller(speed=4.0).call([CallerLine("Hello?")])
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert deepgram.attempts >= 3 and not deepgram.sessions
    assert zylin_turns(record)[-1].text == ASR_DOWN_LINE
    assert [e.detail["provider"] for e in record["events"] if e.kind == "provider_error"] == ["asr"]
    assert time.monotonic() - started < 20
