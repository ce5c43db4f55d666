"""The OpenAI brain, with the real SDK, against the fake OpenAI server on 127.0.0.1.

Most tests run over both interfaces: the Responses API (the default) and Chat Completions
(OPENAI_API=chat). The fake refuses what OpenAI refuses; the refusal tests below hold it to that,
and hold the brain to never being refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import openai
import pytest

from services.llm import openai_brain
from services.llm.base import BrainError, Message, TextDelta, ToolCall
from services.llm.openai_brain import OpenAIBrain, chat_messages, chat_tools, responses_input, responses_tools
from services.providers import build_brain, openai_brain_arguments
from services.receptionist.persona import system_prompt
from services.receptionist.tools import tool_specs
from services.settings import Settings
from tests.factories import PROVIDER_KEY, dental_profile, plain_settings
from tests.fakes.openai_server import (
    ChatReply,
    FakeOpenAI,
    ModelReply,
    ModelRule,
    check_chat_request,
    tools_refused_message,
)

PROFILE = dental_profile()
TOOL_SPECS = list(tool_specs(PROFILE).values())
HELLO = [Message("user", "Hi, can I leave a message?")]


@pytest.fixture(params=["responses", "chat"])
def api(request) -> str:
    return request.param


def settings_for(fake: FakeOpenAI, **overrides) -> Settings:
    values = dict(openai_api_key=PROVIDER_KEY, openai_base_url=fake.base_url,
                  llm_first_token_timeout_s=2.0, llm_timeout_s=5.0)
    values.update(overrides)
    return plain_settings(**values)


def brain_for(fake: FakeOpenAI, **overrides) -> OpenAIBrain:
    """The brain services/providers.py builds from these settings, with a quicker retry."""
    return OpenAIBrain(**openai_brain_arguments(settings_for(fake, **overrides)), retry_pause_s=0.05)


def respond(brain, history=HELLO, tools=TOOL_SPECS):
    """One turn, with the instructions the engine gives the brain."""
    return brain.respond(system_prompt(PROFILE), history, tools)


async def collect(brain: OpenAIBrain, history=HELLO, tools=TOOL_SPECS) -> list:
    async def run():
        return [out async for out in respond(brain, history, tools)]
    return await asyncio.wait_for(run(), 10)


async def refusal(fake: FakeOpenAI, api: str, **request) -> openai.APIStatusError | None:
    """Send one request with the SDK; OpenAI's refusal, or None when it was answered."""
    fake.reply(ChatReply.text("fine"))
    client = openai.AsyncOpenAI(api_key="test-key", base_url=fake.base_url, max_retries=0)
    create = client.responses.create if api == "responses" else client.chat.completions.create
    try:
        stream = await create(stream=True, **request)
        async with stream:
            async for _ in stream:
                pass
        return None
    except openai.APIStatusError as exc:
        return exc
    finally:
        fake.model_replies.clear()
        await client.close()


def wire_events(fake: FakeOpenAI, n: int = 0) -> list[dict]:
    """The JSON events of the nth model stream, as sent."""
    frames = fake.model_streams[n].body.decode().split("\n\n")
    data = [line.removeprefix("data: ") for frame in frames for line in frame.split("\n")
            if line.startswith("data: ")]
    return [json.loads(d) for d in data if d != "[DONE]"]


# --- the request -----------------------------------------------------------------------------------------
async def test_the_default_request_goes_to_the_responses_api_with_instructions_tools_and_reasoning(openai_fake):
    openai_fake.reply(ChatReply.text("Of course."))
    await collect(brain_for(openai_fake))

    assert openai_fake.requests[0].path == "/v1/responses"
    assert openai_fake.requests[0].headers["authorization"] == "Bearer test-key"
    body = openai_fake.model_requests[0].body
    assert body["model"] == "gpt-5.4-mini" and body["stream"] is True and body["store"] is False
    assert body["reasoning"] == {"effort": "low"} and "reasoning_effort" not in body
    assert body["instructions"].startswith("You are Zylin, the receptionist who answers the phone for "
                                           "Bright Smile Dental.")
    assert body["input"] == [{"role": "user", "content": "Hi, can I leave a message?"}]
    assert [t["name"] for t in body["tools"]] == [spec.name for spec in TOOL_SPECS]
    take_message = next(t for t in body["tools"] if t["name"] == "take_message")
    assert take_message["type"] == "function" and take_message["strict"] is False
    assert take_message["parameters"]["required"] == ["message"]


async def test_the_chat_completions_request_carries_the_system_message_tools_and_history(openai_fake):
    openai_fake.reply(ChatReply.text("Of course."))
    await collect(brain_for(openai_fake, openai_api="chat"))

    assert openai_fake.requests[0].path == "/v1/chat/completions"
    body = openai_fake.model_requests[0].body
    assert body["model"] == "gpt-5.4-mini" and body["stream"] is True
    assert [t["function"]["name"] for t in body["tools"]] == [spec.name for spec in TOOL_SPECS]
    take_message = next(t for t in body["tools"] if t["function"]["name"] == "take_message")
    assert take_message["type"] == "function"
    assert take_message["function"]["parameters"]["required"] == ["message"]
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1:] == [{"role": "user", "content": "Hi, can I leave a message?"}]


async def test_model_and_effort_are_settings_and_an_empty_effort_is_not_sent(openai_fake, api):
    openai_fake.reply(ChatReply.text("Hi."))
    await collect(brain_for(openai_fake, openai_api=api, openai_model="gpt-4.1-mini", openai_reasoning_effort=""))
    body = openai_fake.model_requests[0].body
    assert body["model"] == "gpt-4.1-mini"
    assert "reasoning" not in body and "reasoning_effort" not in body


async def test_the_brain_services_providers_builds_from_the_settings_sends_them(openai_fake):
    openai_fake.reply(ChatReply.text("Hi."))
    settings = settings_for(openai_fake, llm_provider="openai", openai_api="chat", openai_model="gpt-4.1-mini",
                            openai_reasoning_effort="")
    await collect(build_brain(settings, PROFILE))
    assert openai_fake.requests[0].path == "/v1/chat/completions"
    body = openai_fake.model_requests[0].body
    assert body["model"] == "gpt-4.1-mini" and "reasoning_effort" not in body
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith("You are Zylin, the receptionist who answers the phone for "
                                                     "Bright Smile Dental.")


async def test_on_chat_completions_a_model_outside_gpt_5_x_gets_the_effort_setting_with_its_tools(openai_fake):
    openai_fake.models["local-llama"] = ModelRule(("low", "medium", "high"))   # a compatible server's model
    openai_fake.reply(ChatReply.text("Hi."))
    await collect(brain_for(openai_fake, openai_api="chat", openai_model="local-llama"))
    assert openai_fake.model_requests[0].body["reasoning_effort"] == "low"


# --- the history -----------------------------------------------------------------------------------------
CALL = ToolCall("call_1", "take_message", {"message": "Call back", "name": "Ann"})
WITH_TOOLS = [
    Message("user", "Take a message please."),
    Message("assistant", "Sure.", tool_calls=[CALL]),
    Message("tool", '{"ok": true}', tool_call_id="call_1", name="take_message"),
    Message("assistant", "Done, I'll pass it on."),
    Message("system", "The caller has been quiet for a while."),
]
LEFTOVERS = [Message("user", "Hi"),
             Message("assistant", "", tool_calls=[ToolCall("call_9", "end_call", {})]),   # a barge-in: no answer
             Message("tool", "{}", tool_call_id="call_x"),                                  # answers nothing
             Message("user", "Wait, one more thing")]


def test_history_with_tool_calls_and_results_maps_to_chat_messages():
    assert chat_messages("SYSTEM", WITH_TOOLS) == [
        {"role": "system", "content": "SYSTEM"},
        {"role": "user", "content": "Take a message please."},
        {"role": "assistant", "content": "Sure.", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "take_message", "arguments": json.dumps({"message": "Call back", "name": "Ann"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        {"role": "assistant", "content": "Done, I'll pass it on."},
        {"role": "system", "content": "The caller has been quiet for a while."},
    ]


def test_history_with_tool_calls_and_results_maps_to_responses_items_without_item_ids():
    assert responses_input(WITH_TOOLS) == [
        {"role": "user", "content": "Take a message please."},
        {"role": "assistant", "content": "Sure."},
        {"type": "function_call", "call_id": "call_1", "name": "take_message",
         "arguments": json.dumps({"message": "Call back", "name": "Ann"})},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
        {"role": "assistant", "content": "Done, I'll pass it on."},
        {"role": "system", "content": "The caller has been quiet for a while."},
    ]


def test_a_tool_call_left_unanswered_by_a_barge_in_is_not_sent():
    said = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Wait, one more thing"}]
    assert chat_messages("S", LEFTOVERS)[1:] == said
    assert responses_input(LEFTOVERS) == said


async def test_the_brain_never_sends_an_unanswered_call_or_an_answer_to_no_call(openai_fake, api):
    history = LEFTOVERS + [
        Message("assistant", "Let me check.", tool_calls=[ToolCall("call_2", "check_availability", {}),
                                                          ToolCall("call_3", "take_message", {"message": "x"})]),
        Message("tool", '{"ok": true}', tool_call_id="call_3"),       # call_2 was cut off by a barge-in
        Message("user", "Thanks"),
    ]
    openai_fake.reply(ChatReply.text("You're welcome."))
    assert await collect(brain_for(openai_fake, openai_api=api), history) == [TextDelta("You're welcome.")]

    seen = openai_fake.model_requests[0]["messages"]          # accepted: the fake refuses either orphan
    calls = [c["id"] for m in seen for c in m.get("tool_calls") or []]
    assert calls == ["call_3"]
    assert [m["tool_call_id"] for m in seen if m["role"] == "tool"] == ["call_3"]


# --- the stream --------------------------------------------------------------------------------------------
async def test_text_deltas_arrive_as_they_stream(openai_fake, api):
    openai_fake.reply(ChatReply.text("We're open", " until five", " today."))
    assert await collect(brain_for(openai_fake, openai_api=api)) == [
        TextDelta("We're open"), TextDelta(" until five"), TextDelta(" today.")]


async def test_two_parallel_tool_calls_are_assembled_from_their_deltas(openai_fake, api):
    message = {"message": "Please call me back about my crown, it's urgent", "name": "Ann Lee",
               "phone": "+15551230000", "urgency": "urgent"}
    reply = ChatReply.tool_calls(("take_message", message),
                                 ("transfer_to_human", {"reason": "caller asked for Dr. Lee"}), pieces=5)
    openai_fake.reply(reply)
    outputs = await collect(brain_for(openai_fake, openai_api=api))

    sent = wire_events(openai_fake)
    if api == "responses":
        pieces = [e for e in sent if e["type"] == "response.function_call_arguments.delta"]
        assert [e["output_index"] for e in pieces] == sorted(e["output_index"] for e in pieces)
    else:
        deltas = [e["choices"][0]["delta"] for e in sent]
        pieces = [d for d in deltas if "tool_calls" in d and "id" not in d["tool_calls"][0]]
        assert [d["tool_calls"][0]["index"] for d in pieces[:2]] == [0, 1]     # interleaved by index
    assert len(pieces) >= 8                                                      # really split
    assert outputs == [ToolCall(reply.calls[0].id, "take_message", message),
                       ToolCall(reply.calls[1].id, "transfer_to_human", {"reason": "caller asked for Dr. Lee"})]


async def test_text_before_a_tool_call_comes_out_first_so_it_can_be_spoken_while_the_tool_runs(openai_fake, api):
    openai_fake.reply(ChatReply.tool_calls(("take_message", {"message": "Call back"}),
                                           text=["Sure, ", "let me note that down."]))
    outputs = await collect(brain_for(openai_fake, openai_api=api))
    assert outputs[:2] == [TextDelta("Sure, "), TextDelta("let me note that down.")]
    assert isinstance(outputs[2], ToolCall) and outputs[2].arguments == {"message": "Call back"}
    assert len(outputs) == 3


async def test_invalid_tool_arguments_become_empty_arguments_and_are_logged(openai_fake, api, caplog):
    openai_fake.reply(ChatReply.tool_calls(("end_call", '{"reason": "bye'), ("take_message", "[1, 2]")))
    outputs = await collect(brain_for(openai_fake, openai_api=api))
    assert [(o.name, o.arguments) for o in outputs] == [("end_call", {}), ("take_message", {})]
    assert "invalid JSON arguments for end_call" in caplog.text


async def test_a_tool_result_is_fed_back_and_the_follow_up_streams(openai_fake, api):
    openai_fake.reply(ChatReply.tool_calls(("take_message", {"message": "Call back"})),
                      ChatReply.text("I've passed that on."))
    brain = brain_for(openai_fake, openai_api=api)
    history = list(HELLO)
    [call] = await collect(brain, history)
    history += [Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps({"ok": True}), tool_call_id=call.id, name=call.name)]
    assert await collect(brain, history) == [TextDelta("I've passed that on.")]

    second = openai_fake.model_requests[1]
    if api == "responses":
        assert second.body["input"][-2:] == [
            {"type": "function_call", "call_id": call.id, "name": "take_message",
             "arguments": json.dumps({"message": "Call back"})},
            {"type": "function_call_output", "call_id": call.id, "output": '{"ok": true}'}]
    assert second["messages"][-2]["tool_calls"][0]["id"] == call.id
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"ok": true}'}


async def test_a_reply_cut_off_at_the_token_limit_keeps_what_was_said_and_is_logged(openai_fake, api, caplog):
    reply = ChatReply.text("We're open until", " five")
    reply.finish = "length"
    openai_fake.reply(reply)
    assert await collect(brain_for(openai_fake, openai_api=api)) == [TextDelta("We're open until"),
                                                                     TextDelta(" five")]
    assert "cut off" in caplog.text


# --- what OpenAI refuses, and the brain is never refused ------------------------------------------------------------
async def test_the_default_settings_are_answered_not_refused_by_an_api_that_refuses_tools_with_reasoning_on_chat(
        openai_fake):
    openai_fake.reply(ChatReply.tool_calls(("take_message", {"message": "Call back"}), text=["Sure."]))
    outputs = await collect(brain_for(openai_fake))            # gpt-5.4-mini, effort low, tools
    assert outputs[0] == TextDelta("Sure.") and outputs[1].name == "take_message"
    body = openai_fake.model_requests[0].body
    assert body["reasoning"] == {"effort": "low"} and body["tools"]   # reasoning kept, with the tools


@pytest.mark.parametrize("model, effort, refused", [
    ("gpt-5.4-mini", "low", True), ("gpt-5.4-mini", "high", True), ("gpt-5.4-mini", None, False),
    ("gpt-5.4-mini", "none", False), ("gpt-5.4", "medium", True),
    ("gpt-5.6", None, True), ("gpt-5.6", "low", True), ("gpt-5.6", "none", False),
    ("gpt-5-mini", "low", False),
])
async def test_chat_completions_refuses_function_tools_with_reasoning_for_gpt_5_x_as_openai_does(
        openai_fake, model, effort, refused):
    request = dict(model=model, messages=[{"role": "user", "content": "hi"}], tools=chat_tools(TOOL_SPECS))
    if effort is not None:
        request["reasoning_effort"] = effort
    error = await refusal(openai_fake, "chat", **request)
    if not refused:
        assert error is None
        return
    assert isinstance(error, openai.BadRequestError)
    assert error.body == {"message": tools_refused_message(model), "type": "invalid_request_error",
                          "param": "reasoning_effort", "code": None}
    assert error.body["message"] == (f"Function tools with reasoning_effort are not supported for {model} in "
                                     "/v1/chat/completions. To use function tools, use /v1/responses or set "
                                     "reasoning_effort to 'none'.")
    # The same request without tools, and the same tools on the Responses API, are answered.
    assert await refusal(openai_fake, "chat", **{k: v for k, v in request.items() if k != "tools"}) is None
    assert await refusal(openai_fake, "responses", model=model, input="hi", tools=responses_tools(TOOL_SPECS),
                         **({"reasoning": {"effort": effort}} if effort else {})) is None


async def test_on_chat_completions_tools_go_to_gpt_5_x_with_effort_none_logged_once(openai_fake, caplog,
                                                                                     monkeypatch):
    monkeypatch.setattr(openai_brain, "_told_effort_none", set())
    caplog.set_level(logging.INFO, logger="zylin.llm.openai")
    openai_fake.reply(ChatReply.text("Hello."), ChatReply.text("Hello again."))
    brain = brain_for(openai_fake, openai_api="chat")
    assert await collect(brain) == [TextDelta("Hello.")]
    assert await collect(brain) == [TextDelta("Hello again.")]

    assert [r.body["reasoning_effort"] for r in openai_fake.model_requests] == ["none", "none"]
    told = [r for r in caplog.records if "reasoning_effort 'none'" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO and "gpt-5.4-mini" in told[0].getMessage()


async def test_gpt_5_6_on_chat_completions_is_answered_even_with_no_effort_set(openai_fake):
    openai_fake.reply(ChatReply.text("Hello."))
    brain = brain_for(openai_fake, openai_api="chat", openai_model="gpt-5.6", openai_reasoning_effort="")
    assert await collect(brain) == [TextDelta("Hello.")]
    assert openai_fake.model_requests[0].body["reasoning_effort"] == "none"


async def test_gpt_5_mini_keeps_its_effort_on_chat_completions_since_it_does_not_take_none(openai_fake):
    error = await refusal(openai_fake, "chat", model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}],
                          reasoning_effort="none")
    assert error.status_code == 400 and error.body["param"] == "reasoning_effort"
    assert error.body["message"] == ("Unsupported value: 'reasoning_effort' does not support 'none' with this "
                                     "model. Supported values are: 'minimal', 'low', 'medium', and 'high'.")
    openai_fake.reply(ChatReply.text("Hello."))
    assert await collect(brain_for(openai_fake, openai_api="chat", openai_model="gpt-5-mini")) == [TextDelta("Hello.")]
    assert openai_fake.model_requests[-1].body["reasoning_effort"] == "low"


async def test_an_unknown_model_is_a_404_whose_message_reaches_the_log_and_the_brain_error(openai_fake, api, caplog):
    openai_fake.reply(ChatReply.text("never sent"))
    with pytest.raises(BrainError) as caught:
        await collect(brain_for(openai_fake, openai_api=api, openai_model="gpt-5.4-mni"))
    for said in (str(caught.value), caplog.text):
        assert "HTTP 404" in said and "model_not_found" in said
        assert "The model `gpt-5.4-mni` does not exist or you do not have access to it." in said
    assert len(openai_fake.model_requests) == 1                   # not retried


async def test_the_fake_knows_the_speech_and_transcription_models_the_project_uses(openai_fake):
    assert {"gpt-4o-mini-tts", "tts-1", "gpt-transcribe", "gpt-5.4-mini", "gpt-5.6"} <= set(openai_fake.models)
    error = await refusal(openai_fake, "responses", model="gpt-9", input="hi")
    assert isinstance(error, openai.NotFoundError) and error.body["code"] == "model_not_found"


async def test_the_responses_api_refuses_an_output_that_answers_no_call(openai_fake):
    error = await refusal(openai_fake, "responses", model="gpt-5.4-mini", store=False, input=[
        {"role": "user", "content": "hi"},
        {"type": "function_call_output", "call_id": "call_x", "output": "{}"}])
    assert error.status_code == 400 and error.body["param"] == "input"
    assert error.body["message"] == "No tool call found for function call output with call_id call_x."


async def test_the_responses_api_refuses_a_call_left_without_its_output(openai_fake):
    error = await refusal(openai_fake, "responses", model="gpt-5.4-mini", store=False, input=[
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_9", "name": "end_call", "arguments": "{}"}])
    assert error.status_code == 400 and error.body["param"] == "input"
    assert error.body["message"] == "No tool output found for function call call_9."


async def test_the_responses_api_refuses_item_ids_when_nothing_is_stored(openai_fake):
    error = await refusal(openai_fake, "responses", model="gpt-5.4-mini", store=False, input=[
        {"role": "user", "content": "hi"},
        {"type": "function_call", "id": "fc_123", "call_id": "call_1", "name": "end_call", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{}"}])
    assert error.status_code == 404
    assert error.body["message"].startswith("Item with id 'fc_123' not found. Items are not persisted when "
                                            "`store` is set to false.")


def test_chat_completions_refuses_an_unanswered_call_and_a_result_that_answers_none():
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "end_call", "arguments": "{}"}}]}
    answer = {"role": "tool", "tool_call_id": "c1", "content": "{}"}
    hi = {"role": "user", "content": "hi"}
    assert check_chat_request({"model": "gpt-4.1-mini", "messages": [hi, call, answer]}) is None
    unanswered = check_chat_request({"model": "gpt-4.1-mini", "messages": [hi, call]})
    assert "must be followed by tool messages" in unanswered.message
    orphan = check_chat_request({"model": "gpt-4.1-mini", "messages": [hi, answer]})
    assert "must be a response to a preceeding message with 'tool_calls'" in orphan.message


async def test_a_refused_parameter_is_logged_with_the_message_and_param_but_never_the_key(api, caplog):
    key = "sk-proj-zylinTestKey0123456789abcd"
    async with FakeOpenAI(api_key=key) as fake:
        brain = brain_for(fake, openai_api_key=key, openai_api=api, openai_model="gpt-4.1-mini")
        with pytest.raises(BrainError) as caught:            # gpt-4.1-mini takes no reasoning effort
            await collect(brain)
    param = "reasoning.effort" if api == "responses" else "reasoning_effort"
    for said in (str(caught.value), caplog.text):
        assert f"Unsupported parameter: '{param}' is not supported with this model." in said
        assert f"param {param}" in said and "HTTP 400" in said
    assert len(fake.model_requests) == 1
    assert key not in caplog.text and "zylinTestKey" not in caplog.text


async def test_the_api_key_never_reaches_the_logs_even_when_openai_quotes_it(caplog):
    caplog.set_level(logging.DEBUG)
    key = "sk-secret-1234567890abcd"
    async with FakeOpenAI(api_key="another-key") as fake:
        client = openai.AsyncOpenAI(api_key=key, base_url=fake.base_url, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as raw:
            await client.responses.create(model="gpt-5.4-mini", input="hi")
        await client.close()
        with pytest.raises(BrainError, match="401") as caught:
            await collect(brain_for(fake, openai_api_key=key))
    assert "sk-secre" in raw.value.body["message"]          # OpenAI's 401 quotes part of the key...
    for said in (str(caught.value), caplog.text):            # ...and Zylin repeats the rest, not that
        assert "Incorrect API key provided" in said and "invalid_api_key" in said
        assert key not in said and "sk-secre" not in said and "0abcd" not in said


# --- rate limits -----------------------------------------------------------------------------------------------
async def test_a_rate_limit_is_retried_once_and_the_answer_still_comes(openai_fake, api):
    openai_fake.reply(ChatReply.failure(429), ChatReply.text("Hello!"))
    assert await collect(brain_for(openai_fake, openai_api=api)) == [TextDelta("Hello!")]
    assert len(openai_fake.model_requests) == 2


async def test_a_rate_limit_waits_as_long_as_retry_after_asks_when_that_fits_the_budget(openai_fake, api):
    openai_fake.reply(ChatReply.failure(429, retry_after_ms=400), ChatReply.text("Hello!"))
    assert await collect(brain_for(openai_fake, openai_api=api)) == [TextDelta("Hello!")]
    first, second = openai_fake.model_requests
    assert 0.4 <= second.received_at - first.received_at < 1.4    # not the 0.05 s quick pause


async def test_a_rate_limit_asking_for_longer_than_the_budget_fails_at_once(openai_fake, api):
    openai_fake.reply(ChatReply.failure(429, retry_after_s=30), ChatReply.text("too late"))
    started = time.monotonic()
    with pytest.raises(BrainError, match="asked to wait 30 s"):
        await collect(brain_for(openai_fake, openai_api=api))
    assert time.monotonic() - started < 1.0
    assert len(openai_fake.model_requests) == 1


async def test_a_429_carries_retry_after_and_the_rate_limit_headers(openai_fake):
    openai_fake.reply(ChatReply.failure(429, retry_after_s=2, retry_after_ms=1500))
    client = openai.AsyncOpenAI(api_key="test-key", base_url=openai_fake.base_url, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-5.4-mini", input="hi", stream=True)
    await client.close()
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    assert headers["x-ratelimit-remaining-requests"] == "0" and "x-ratelimit-reset-tokens" in headers
    assert caught.value.body["code"] == "rate_limit_exceeded" and caught.value.body["type"] == "requests"


async def test_an_exhausted_quota_is_not_retried(openai_fake, api):
    openai_fake.reply(ChatReply.failure(429, code="insufficient_quota"), ChatReply.text("never"))
    with pytest.raises(BrainError, match="insufficient_quota"):
        await collect(brain_for(openai_fake, openai_api=api))
    assert len(openai_fake.model_requests) == 1


# --- other failures ------------------------------------------------------------------------------------------------
async def test_a_server_error_twice_raises_brain_error(openai_fake, api):
    openai_fake.reply(ChatReply.failure(500), ChatReply.failure(503))
    with pytest.raises(BrainError, match="503"):
        await collect(brain_for(openai_fake, openai_api=api))
    assert len(openai_fake.model_requests) == 2


async def test_a_bad_request_is_not_retried(openai_fake, api):
    openai_fake.reply(ChatReply.failure(400, "Invalid 'input': too long.", param="input"))
    with pytest.raises(BrainError, match="400: Invalid 'input': too long. \\(param input"):
        await collect(brain_for(openai_fake, openai_api=api))
    assert len(openai_fake.model_requests) == 1


# Chat Completions has one way to fail mid-stream (an error chunk); Responses has two.
@pytest.mark.parametrize("api,event", [("responses", "response.failed"), ("responses", "error"),
                                       ("chat", "response.failed")])
async def test_a_stream_that_fails_before_a_word_is_retried_and_its_reason_logged(openai_fake, api, event, caplog):
    openai_fake.reply(ModelReply.broken(message="The model is overloaded.", event=event), ChatReply.text("Hi!"))
    assert await collect(brain_for(openai_fake, openai_api=api)) == [TextDelta("Hi!")]
    assert len(openai_fake.model_requests) == 2
    assert "The model is overloaded." in caplog.text and "server_error" in caplog.text


async def test_a_stream_that_fails_after_words_raises_brain_error_naming_the_failure(openai_fake, api):
    openai_fake.reply(ModelReply.broken("Let me check", message="The model is overloaded."), ChatReply.text("x"))
    said = []
    with pytest.raises(BrainError, match="broke off.*The model is overloaded."):
        async for out in respond(brain_for(openai_fake, openai_api=api)):
            said.append(out)
    assert said == [TextDelta("Let me check")]
    assert len(openai_fake.model_requests) == 1


async def test_no_first_token_is_retried_then_gives_up_within_the_timeouts(openai_fake, api):
    openai_fake.reply(ChatReply.stall(), ChatReply.stall())
    brain = brain_for(openai_fake, openai_api=api, llm_first_token_timeout_s=0.3, llm_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(BrainError, match="first token"):
        await collect(brain)
    elapsed = time.monotonic() - started

    assert len(openai_fake.model_requests) == 2
    assert 0.6 <= elapsed < 2.0
    for stream in openai_fake.model_streams:          # both stalled streams were hung up on
        await asyncio.wait_for(stream.closed_early.wait(), 5)


async def test_a_stall_before_the_headers_counts_as_no_first_token(openai_fake, api):
    openai_fake.reply(ChatReply.stall(before_headers=True), ChatReply.text("There you are."))
    brain = brain_for(openai_fake, openai_api=api, llm_first_token_timeout_s=0.3, llm_timeout_s=3.0)
    assert await collect(brain) == [TextDelta("There you are.")]


async def test_no_retry_when_the_overall_timeout_leaves_no_time(openai_fake, api):
    openai_fake.reply(ChatReply.stall(), ChatReply.text("too late"))
    brain = brain_for(openai_fake, openai_api=api, llm_first_token_timeout_s=0.3, llm_timeout_s=0.5)
    with pytest.raises(BrainError):
        await collect(brain)
    assert len(openai_fake.model_requests) == 1


async def test_a_stall_after_text_was_said_raises_brain_error_without_retrying(openai_fake, api):
    reply = ChatReply.text("Let me check", " that", " for you.")
    reply.stall_after = 1                       # the first words, then nothing
    openai_fake.reply(reply, ChatReply.text("never asked for"))
    brain = brain_for(openai_fake, openai_api=api, llm_first_token_timeout_s=0.3, llm_timeout_s=0.8)
    said = []
    with pytest.raises(BrainError, match="broke off"):
        async for out in respond(brain):
            said.append(out)
    assert said == [TextDelta("Let me check")]
    assert len(openai_fake.model_requests) == 1


async def test_closing_the_reply_early_hangs_up_the_http_stream(openai_fake, api):
    reply = ChatReply.text("Our hours are", " nine to five", " on weekdays.")
    reply.stall_after = 1
    openai_fake.reply(reply)
    replies = respond(brain_for(openai_fake, openai_api=api))
    assert await asyncio.wait_for(anext(replies), 5) == TextDelta("Our hours are")

    await replies.aclose()                      # the caller barged in

    await asyncio.wait_for(openai_fake.model_streams[0].closed_early.wait(), 5)


async def test_cancelling_the_task_hangs_up_the_http_stream(openai_fake, api):
    openai_fake.reply(ChatReply.stall())
    brain = brain_for(openai_fake, openai_api=api)
    task = asyncio.create_task(collect(brain))
    await openai_fake.wait_model_requests(1)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(openai_fake.model_streams[0].closed_early.wait(), 5)
