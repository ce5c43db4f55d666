"""The mock brain answers from the business profile and uses the receptionist's tools."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from services.llm.base import Message, TextDelta, ToolCall, ToolSpec
from services.llm.mock import MockBrain
from services.receptionist.profile import parse_profile
from services.receptionist.tools import TOOLS

PROFILE = parse_profile({
    "name": "Bright Smile Dental",
    "timezone": "America/New_York",
    "address": "12 Main Street, Springfield",
    "hours": {"mon": "09:00-17:00", "fri": "09:00-15:00"},
    "services": [
        {"name": "Cleaning", "duration_min": 45, "price": "$120"},
        {"name": "Whitening", "duration_min": 60, "price": "$300"},
        {"name": "Consultation", "duration_min": 30, "price": "free"},
    ],
    "faq": {"parking": "There is free parking behind the building."},
})
ALL_TOOLS = [spec for spec, _ in TOOLS.values()]
NO_TOOLS: list[ToolSpec] = []


async def turn(brain: MockBrain, history: list[Message], tools: list[ToolSpec] = ALL_TOOLS):
    """One brain turn: the streamed deltas, the spoken text and the tool calls."""
    async def collect() -> list:
        return [out async for out in brain.respond(history, tools)]

    outputs = await asyncio.wait_for(collect(), timeout=5)
    deltas = [o for o in outputs if isinstance(o, TextDelta)]
    calls = [o for o in outputs if isinstance(o, ToolCall)]
    assert len(deltas) + len(calls) == len(outputs)
    return deltas, "".join(d.text for d in deltas).strip(), calls


def user(text: str) -> list[Message]:
    return [Message("system", "You are Zylin."), Message("user", text)]


@pytest.mark.asyncio
async def test_a_question_about_hours_is_answered_from_the_profile_in_a_stream_of_words() -> None:
    deltas, text, calls = await turn(MockBrain(PROFILE), user("What time do you close on Friday?"))
    assert text == PROFILE.hours_sentence()
    assert calls == []
    assert len(deltas) == len(text.split()) > 3
    assert all(d.text.strip() and d.text.count(" ") <= 1 for d in deltas)


@pytest.mark.asyncio
async def test_asking_about_prices_lists_the_services() -> None:
    _, text, _ = await turn(MockBrain(PROFILE), user("How much do your services cost?"))
    assert text == PROFILE.services_sentence()


@pytest.mark.asyncio
async def test_asking_about_one_service_gives_its_price_and_length() -> None:
    _, text, _ = await turn(MockBrain(PROFILE), user("How much is whitening?"))
    assert "$300" in text and "60 minutes" in text
    _, text, _ = await turn(MockBrain(PROFILE), user("What does a consultation cost?"))
    assert "free" in text and "30 minutes" in text


@pytest.mark.asyncio
async def test_a_faq_topic_gets_the_owner_s_answer() -> None:
    _, text, _ = await turn(MockBrain(PROFILE), user("Is there parking nearby?"))
    assert text == "There is free parking behind the building."


@pytest.mark.asyncio
async def test_a_caller_who_wants_to_book_is_asked_for_service_and_time() -> None:
    _, text, calls = await turn(MockBrain(PROFILE), user("I'd like to schedule an appointment"))
    assert "book an appointment" in text and "Which service" in text
    assert calls == []


@pytest.mark.asyncio
async def test_a_greeting_is_greeted_back_and_anything_else_gets_the_menu() -> None:
    _, text, _ = await turn(MockBrain(PROFILE), user("Hello"))
    assert text == "Hello! How can I help you today?"
    _, text, _ = await turn(MockBrain(PROFILE), user("My cat is orange"))
    assert text.startswith("Sorry, I can help with our hours")


@pytest.mark.asyncio
async def test_saying_goodbye_gets_a_goodbye_and_ends_the_call() -> None:
    _, text, calls = await turn(MockBrain(PROFILE), user("No, that's all, thanks. Bye!"))
    assert text == "Thanks for calling Bright Smile Dental. Goodbye!"
    assert [c.name for c in calls] == ["end_call"]
    assert calls[0].arguments["reason"]


@pytest.mark.asyncio
async def test_asking_for_a_person_transfers_the_call() -> None:
    for said in ("Can I talk to a real person?", "Put me through to the manager", "(caller pressed 0)"):
        _, text, calls = await turn(MockBrain(PROFILE), user(said))
        assert [c.name for c in calls] == ["transfer_to_human"], said
        assert calls[0].arguments["reason"]
        assert text in ("", "Sure.")


@pytest.mark.asyncio
async def test_only_offered_tools_are_called_otherwise_the_brain_just_talks() -> None:
    _, text, calls = await turn(MockBrain(PROFILE), user("goodbye"), NO_TOOLS)
    assert calls == [] and text.endswith("Goodbye!")
    _, text, calls = await turn(MockBrain(PROFILE), user("I want a human"), NO_TOOLS)
    assert calls == [] and "What would you like me to pass on?" in text


@pytest.mark.asyncio
async def test_a_failed_transfer_offers_a_message_and_the_reply_is_taken_as_the_message() -> None:
    brain = MockBrain(PROFILE)
    history = user("Can I speak to someone?")
    _, _, (call,) = await turn(brain, history)
    refused = {"ok": False, "reason": "no one can take calls on this line right now"}
    history += [Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps(refused),
                        tool_call_id=call.id, name=call.name)]
    _, text, calls = await turn(brain, history)
    assert text == ("I'm sorry, no one can take calls on this line right now. "
                    "I can take a message for the team. What would you like me to pass on?")
    assert calls == []

    history += [Message("assistant", text), Message("user", "Please ask the manager to call me back")]
    _, text, (call,) = await turn(brain, history)
    assert call.name == "take_message"
    assert call.arguments == {"message": "Please ask the manager to call me back", "phone": ""}

    history += [Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps({"ok": True}), tool_call_id=call.id, name=call.name)]
    _, text, calls = await turn(brain, history)
    assert text == "Thank you, I've passed your message on. Is there anything else I can help with?"
    assert calls == []


@pytest.mark.asyncio
async def test_tool_results_get_the_matching_follow_up_line() -> None:
    def after(name: str, data: dict) -> list[Message]:
        call = ToolCall("call_9", name, {})
        return [Message("user", "x"), Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps(data), tool_call_id="call_9")]  # name found by id

    _, text, _ = await turn(MockBrain(PROFILE), after("transfer_to_human", {"ok": True}))
    assert text == "Of course. I'm connecting you now, please hold."
    _, text, calls = await turn(MockBrain(PROFILE), after("end_call", {"ok": True}))
    assert (text, calls) == ("", [])
    _, text, calls = await turn(MockBrain(PROFILE), after("look_up_weather", {"ok": True}))
    assert text and len(text.split()) <= 4 and calls == []


@pytest.mark.asyncio
async def test_tool_call_ids_are_unique_within_a_brain() -> None:
    brain = MockBrain(PROFILE)
    ids = []
    for said in ("bye", "operator please", "goodbye"):
        _, _, calls = await turn(brain, user(said))
        ids += [c.id for c in calls]
    assert len(ids) == 3 == len(set(ids))


@pytest.mark.asyncio
async def test_first_output_waits_for_the_first_token_latency() -> None:
    brain = MockBrain(PROFILE, delay_ms=200)
    stream = brain.respond(user("hello"), ALL_TOOLS)
    started = time.monotonic()
    first = await asyncio.wait_for(anext(stream), timeout=5)
    assert time.monotonic() - started >= 0.19
    assert isinstance(first, TextDelta)
    await stream.aclose()
    await brain.close()
