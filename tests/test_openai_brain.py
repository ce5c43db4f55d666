"""The OpenAI brain, with the real SDK, against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime

import pytest
import pytest_asyncio

from services.llm.base import BrainError, Message, TextDelta, ToolCall
from services.llm.openai_brain import OpenAIBrain, chat_messages, system_prompt
from services.receptionist.profile import parse_profile
from services.receptionist.tools import tool_specs
from services.settings import Settings
from tests.fakes.openai_server import ChatReply, FakeOpenAI

PROFILE = parse_profile({
    "name": "Bright Smile Dental", "timezone": "America/New_York", "address": "12 Main Street",
    "hours": {"mon": "09:00-17:00", "fri": "09:00-15:00"},
    "services": [{"name": "Cleaning", "duration_min": 45, "price": "$120", "description": "Routine cleaning."},
                 {"name": "Whitening", "duration_min": 60, "price": "$300"}],
    "faq": {"parking": "Free parking behind the building."},
})
TOOL_SPECS = list(tool_specs(PROFILE).values())
HELLO = [Message("user", "Hi, can I leave a message?")]


@pytest_asyncio.fixture
async def openai_fake():
    async with FakeOpenAI(api_key="test-key") as fake:
        yield fake


def brain_for(fake: FakeOpenAI, **overrides) -> OpenAIBrain:
    values = dict(openai_api_key="test-key", openai_base_url=fake.base_url,
                  llm_first_token_timeout_s=2.0, llm_timeout_s=5.0)
    values.update(overrides)
    return OpenAIBrain(Settings(_env_file=None, **values), PROFILE, retry_pause_s=0.05)


async def collect(brain: OpenAIBrain, history=HELLO, tools=TOOL_SPECS) -> list:
    async def run():
        return [out async for out in brain.respond(history, tools)]
    return await asyncio.wait_for(run(), 10)


# --- the request -----------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_request_streams_with_tools_model_and_reasoning_effort(openai_fake):
    openai_fake.reply(ChatReply.text("Of course."))
    await collect(brain_for(openai_fake))

    request = openai_fake.chat_requests[0]
    assert openai_fake.requests[0].headers["authorization"] == "Bearer test-key"
    assert request["model"] == "gpt-5.4-mini" and request["stream"] is True
    assert request["reasoning_effort"] == "low"
    assert [t["function"]["name"] for t in request["tools"]] == [spec.name for spec in TOOL_SPECS]
    take_message = next(t for t in request["tools"] if t["function"]["name"] == "take_message")
    assert take_message["type"] == "function"
    assert take_message["function"]["parameters"]["required"] == ["message"]
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][1:] == [{"role": "user", "content": "Hi, can I leave a message?"}]


@pytest.mark.asyncio
async def test_model_and_reasoning_effort_are_settings_and_an_empty_effort_is_not_sent(openai_fake):
    openai_fake.reply(ChatReply.text("Hi."))
    await collect(brain_for(openai_fake, openai_model="local-llama", openai_reasoning_effort=""))
    assert openai_fake.chat_requests[0]["model"] == "local-llama"
    assert "reasoning_effort" not in openai_fake.chat_requests[0]


def test_the_system_prompt_knows_the_business_and_speaks_like_a_receptionist():
    prompt = system_prompt(PROFILE)
    for fact in ("Bright Smile Dental", "12 Main Street", "Monday 9 am to 5 pm", "Friday 9 am to 3 pm",
                 "Cleaning (45 minutes, price $120): Routine cleaning.", "Whitening (60 minutes, price $300)",
                 "parking: Free parking behind the building.", "America/New_York"):
        assert fact in prompt
    now = PROFILE.now()
    assert f"{now:%A}, {now:%B} {now.day}, {now.year}" in prompt
    assert "short" in prompt and "markdown" in prompt and "never invent availability" in prompt
    assert prompt.rstrip().endswith(f"({PROFILE.timezone}).")   # the clock last: a cacheable prefix


def test_history_with_tool_calls_and_results_maps_to_chat_messages():
    call = ToolCall("call_1", "take_message", {"message": "Call back", "name": "Ann"})
    history = [
        Message("user", "Take a message please."),
        Message("assistant", "Sure.", tool_calls=[call]),
        Message("tool", '{"ok": true}', tool_call_id="call_1", name="take_message"),
        Message("assistant", "Done, I'll pass it on."),
        Message("system", "The caller has been quiet for a while."),
    ]
    messages = chat_messages("SYSTEM", history)
    assert messages == [
        {"role": "system", "content": "SYSTEM"},
        {"role": "user", "content": "Take a message please."},
        {"role": "assistant", "content": "Sure.", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "take_message", "arguments": json.dumps({"message": "Call back", "name": "Ann"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        {"role": "assistant", "content": "Done, I'll pass it on."},
        {"role": "system", "content": "The caller has been quiet for a while."},
    ]


def test_a_tool_call_left_unanswered_by_a_barge_in_is_not_sent():
    history = [Message("user", "Hi"),
               Message("assistant", "", tool_calls=[ToolCall("call_9", "end_call", {})]),
               Message("tool", "{}", tool_call_id="call_x"),       # answers nothing
               Message("user", "Wait, one more thing")]
    assert chat_messages("S", history)[1:] == [{"role": "user", "content": "Hi"},
                                               {"role": "user", "content": "Wait, one more thing"}]


# --- the stream --------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_text_deltas_arrive_as_they_stream(openai_fake):
    openai_fake.reply(ChatReply.text("We're open", " until five", " today."))
    assert await collect(brain_for(openai_fake)) == [
        TextDelta("We're open"), TextDelta(" until five"), TextDelta(" today.")]


@pytest.mark.asyncio
async def test_two_parallel_tool_calls_are_assembled_from_interleaved_deltas(openai_fake):
    message = {"message": "Please call me back about my crown, it's urgent", "name": "Ann Lee",
               "phone": "+15551230000", "urgency": "urgent"}
    openai_fake.reply(ChatReply.tool_calls(("take_message", message),
                                           ("transfer_to_human", {"reason": "caller asked for Dr. Lee"}),
                                           pieces=5))
    outputs = await collect(brain_for(openai_fake))

    sent = [json.loads(c)["choices"][0]["delta"] for c in
            (chunk.removeprefix(b"data: ") for chunk in openai_fake.chat_streams[0].chunks)]
    argument_pieces = [d for d in sent if "tool_calls" in d and "id" not in d["tool_calls"][0]]
    assert len(argument_pieces) >= 8            # really split, and interleaved by index
    assert [d["tool_calls"][0]["index"] for d in argument_pieces[:2]] == [0, 1]
    first_ids = [d["tool_calls"][0]["id"] for d in sent if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert outputs == [ToolCall(first_ids[0], "take_message", message),
                       ToolCall(first_ids[1], "transfer_to_human", {"reason": "caller asked for Dr. Lee"})]


@pytest.mark.asyncio
async def test_text_before_a_tool_call_comes_out_first_so_it_can_be_spoken_while_the_tool_runs(openai_fake):
    openai_fake.reply(ChatReply.tool_calls(("take_message", {"message": "Call back"}),
                                           text=["Sure, ", "let me note that down."]))
    outputs = await collect(brain_for(openai_fake))
    assert outputs[:2] == [TextDelta("Sure, "), TextDelta("let me note that down.")]
    assert isinstance(outputs[2], ToolCall) and outputs[2].arguments == {"message": "Call back"}
    assert len(outputs) == 3


@pytest.mark.asyncio
async def test_invalid_tool_arguments_become_empty_arguments_and_are_logged(openai_fake, caplog):
    openai_fake.reply(ChatReply.tool_calls(("end_call", '{"reason": "bye'), ("take_message", "[1, 2]")))
    outputs = await collect(brain_for(openai_fake))
    assert [(o.name, o.arguments) for o in outputs] == [("end_call", {}), ("take_message", {})]
    assert "invalid JSON arguments for end_call" in caplog.text


@pytest.mark.asyncio
async def test_a_tool_result_is_fed_back_and_the_follow_up_streams(openai_fake):
    openai_fake.reply(ChatReply.tool_calls(("take_message", {"message": "Call back"})),
                      ChatReply.text("I've passed that on."))
    brain = brain_for(openai_fake)
    history = list(HELLO)
    [call] = await collect(brain, history)
    history += [Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps({"ok": True}), tool_call_id=call.id, name=call.name)]
    assert await collect(brain, history) == [TextDelta("I've passed that on.")]

    second = openai_fake.chat_requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == call.id
    assert second[-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"ok": true}'}


# --- failures --------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_rate_limit_is_retried_once_and_the_answer_still_comes(openai_fake):
    openai_fake.reply(ChatReply.failure(429), ChatReply.text("Hello!"))
    assert await collect(brain_for(openai_fake)) == [TextDelta("Hello!")]
    assert len(openai_fake.chat_requests) == 2


@pytest.mark.asyncio
async def test_a_server_error_twice_raises_brain_error(openai_fake):
    openai_fake.reply(ChatReply.failure(500), ChatReply.failure(503))
    with pytest.raises(BrainError, match="503"):
        await collect(brain_for(openai_fake))
    assert len(openai_fake.chat_requests) == 2


@pytest.mark.asyncio
async def test_a_bad_request_is_not_retried(openai_fake):
    openai_fake.reply(ChatReply.failure(400, "Unsupported parameter: 'reasoning_effort'"))
    with pytest.raises(BrainError, match="400"):
        await collect(brain_for(openai_fake))
    assert len(openai_fake.chat_requests) == 1


@pytest.mark.asyncio
async def test_no_first_token_is_retried_then_gives_up_within_the_timeouts(openai_fake):
    openai_fake.reply(ChatReply.stall(), ChatReply.stall())
    brain = brain_for(openai_fake, llm_first_token_timeout_s=0.3, llm_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(BrainError, match="first token"):
        await collect(brain)
    elapsed = time.monotonic() - started

    assert len(openai_fake.chat_requests) == 2
    assert 0.6 <= elapsed < 2.0
    for stream in openai_fake.chat_streams:          # both stalled streams were hung up on
        await asyncio.wait_for(stream.closed_early.wait(), 5)


@pytest.mark.asyncio
async def test_a_stall_before_the_headers_counts_as_no_first_token(openai_fake):
    openai_fake.reply(ChatReply.stall(before_headers=True), ChatReply.text("There you are."))
    brain = brain_for(openai_fake, llm_first_token_timeout_s=0.3, llm_timeout_s=3.0)
    assert await collect(brain) == [TextDelta("There you are.")]


@pytest.mark.asyncio
async def test_no_retry_when_the_overall_timeout_leaves_no_time(openai_fake):
    openai_fake.reply(ChatReply.stall(), ChatReply.text("too late"))
    brain = brain_for(openai_fake, llm_first_token_timeout_s=0.3, llm_timeout_s=0.5)
    with pytest.raises(BrainError):
        await collect(brain)
    assert len(openai_fake.chat_requests) == 1


@pytest.mark.asyncio
async def test_a_stall_after_text_was_said_raises_brain_error_without_retrying(openai_fake):
    reply = ChatReply.text("Let me check", " that", " for you.")
    reply.stall_after = 2                       # role chunk and the first words, then nothing
    openai_fake.reply(reply, ChatReply.text("never asked for"))
    brain = brain_for(openai_fake, llm_first_token_timeout_s=0.3, llm_timeout_s=0.8)
    said = []
    with pytest.raises(BrainError, match="broke off"):
        async for out in brain.respond(HELLO, TOOL_SPECS):
            said.append(out)
    assert said == [TextDelta("Let me check")]
    assert len(openai_fake.chat_requests) == 1


@pytest.mark.asyncio
async def test_closing_the_reply_early_hangs_up_the_http_stream(openai_fake):
    reply = ChatReply.text("Our hours are", " nine to five", " on weekdays.")
    reply.stall_after = 2
    openai_fake.reply(reply)
    replies = brain_for(openai_fake).respond(HELLO, TOOL_SPECS)
    assert await asyncio.wait_for(anext(replies), 5) == TextDelta("Our hours are")

    await replies.aclose()                      # the caller barged in

    await asyncio.wait_for(openai_fake.chat_streams[0].closed_early.wait(), 5)


@pytest.mark.asyncio
async def test_cancelling_the_task_hangs_up_the_http_stream(openai_fake):
    openai_fake.reply(ChatReply.stall(after=1))
    brain = brain_for(openai_fake)
    task = asyncio.create_task(collect(brain))
    await openai_fake.wait_chat_requests(1)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(openai_fake.chat_streams[0].closed_early.wait(), 5)


@pytest.mark.asyncio
async def test_the_fake_rejects_a_history_the_api_would_reject(openai_fake):
    # Guards the fake's faithfulness: an unanswered tool call is a 400 at OpenAI.
    brain = brain_for(openai_fake)
    history = [Message("user", "hi"), Message("assistant", "", tool_calls=[ToolCall("c1", "end_call", {})]),
               Message("tool", "{}", tool_call_id="c1")]
    openai_fake.reply(ChatReply.text("ok"))
    await collect(brain, history)               # answered: accepted
    request = dict(openai_fake.chat_requests[0])
    request["messages"] = request["messages"][:-1]
    from tests.fakes.openai_server import check_chat_request
    assert "must be followed by tool messages" in check_chat_request(request)


@pytest.mark.asyncio
async def test_the_api_key_never_reaches_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeOpenAI(api_key="another-key") as fake:
        brain = brain_for(fake, openai_api_key="sk-secret-123")
        with pytest.raises(BrainError, match="401"):
            await collect(brain)
    assert "sk-secret-123" not in caplog.text


def test_the_clock_in_the_prompt_is_the_business_time_zone(monkeypatch):
    fixed = datetime(2026, 3, 6, 14, 5, tzinfo=PROFILE.tz)
    monkeypatch.setattr(type(PROFILE), "now", lambda self: fixed)
    assert "Right now it is Friday, March 6, 2026, 2:05 pm" in system_prompt(PROFILE)
