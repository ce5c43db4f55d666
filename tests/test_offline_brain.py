"""The offline brain answers from the business profile and uses the receptionist's tools."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from services.llm.base import Message, TextDelta, ToolCall, ToolSpec
from services.receptionist import tools as receptionist_tools
from services.receptionist.offline.brain import OfflineBrain
from services.receptionist.tool_types import BROKEN, CallContext
from services.receptionist.tools import Toolbox, tool_specs
from services.storage import Storage
from services.storage.bookings import BookingNotFound, Bookings, SlotTaken
from tests.conftest import fresh_database
from tests.factories import dental_profile, example_profile

PROFILE = dental_profile(  # what the brain says back: its address, prices (one free) and the parking answer
    address="12 Main Street, Springfield",
    services=[
        {"name": "Cleaning", "duration_min": 45, "price": "$120"},
        {"name": "Whitening", "duration_min": 60, "price": "$300"},
        {"name": "Consultation", "duration_min": 30, "price": "free"},
    ],
    faq={"parking": "There is free parking behind the building."},
)
BOOKING_TOOLS = ("check_availability", "book_appointment", "find_bookings", "reschedule_appointment",
                 "cancel_appointment")
# The tool layer's specs for this profile.
ALL_TOOLS = list(tool_specs(PROFILE).values())
NO_TOOLS: list[ToolSpec] = []
INSTRUCTIONS = ""  # the offline brain answers from its profile; it has no use for a model's instructions


async def turn(brain: OfflineBrain, history: list[Message], tools: list[ToolSpec] = ALL_TOOLS):
    """One brain turn: the streamed deltas, the spoken text and the tool calls."""
    async def collect() -> list:
        return [out async for out in brain.respond(INSTRUCTIONS, history, tools)]

    outputs = await asyncio.wait_for(collect(), timeout=5)
    deltas = [o for o in outputs if isinstance(o, TextDelta)]
    calls = [o for o in outputs if isinstance(o, ToolCall)]
    assert len(deltas) + len(calls) == len(outputs)
    return deltas, "".join(d.text for d in deltas).strip(), calls


def user(text: str) -> list[Message]:
    return [Message("system", "You are Zylin."), Message("user", text)]


async def test_a_question_about_hours_is_answered_from_the_profile_in_a_stream_of_words() -> None:
    deltas, text, calls = await turn(OfflineBrain(PROFILE), user("What are your opening hours?"))
    assert text == PROFILE.hours_sentence()
    assert calls == []
    assert len(deltas) == len(text.split()) > 3
    assert all(d.text.strip() and d.text.count(" ") <= 1 for d in deltas)


async def test_asking_about_prices_lists_the_services() -> None:
    _, text, _ = await turn(OfflineBrain(PROFILE), user("How much do your services cost?"))
    assert text == PROFILE.services_sentence()


async def test_asking_about_one_service_gives_its_price_and_length() -> None:
    _, text, _ = await turn(OfflineBrain(PROFILE), user("How much is whitening?"))
    assert "$300" in text and "60 minutes" in text
    _, text, _ = await turn(OfflineBrain(PROFILE), user("What does a consultation cost?"))
    assert "free" in text and "30 minutes" in text


async def test_a_faq_topic_gets_the_owner_s_answer() -> None:
    _, text, _ = await turn(OfflineBrain(PROFILE), user("Is there parking nearby?"))
    assert text == "There is free parking behind the building."


async def test_a_caller_who_wants_to_book_is_asked_for_service_and_time() -> None:
    _, text, calls = await turn(OfflineBrain(PROFILE), user("I'd like to schedule an appointment"))
    assert "book an appointment" in text and "Which service" in text
    assert calls == []


async def test_a_greeting_is_greeted_back_and_anything_else_gets_the_menu() -> None:
    _, text, _ = await turn(OfflineBrain(PROFILE), user("Hello"))
    assert text == "Hello! How can I help you today?"
    _, text, _ = await turn(OfflineBrain(PROFILE), user("My cat is orange"))
    assert text.startswith("Sorry, I can help with our hours")


async def test_saying_goodbye_gets_a_goodbye_and_ends_the_call() -> None:
    _, text, calls = await turn(OfflineBrain(PROFILE), user("No, that's all, thanks. Bye!"))
    assert text == "Thanks for calling Bright Smile Dental. Goodbye!"
    assert [c.name for c in calls] == ["end_call"]
    assert calls[0].arguments["reason"]


async def test_asking_for_a_person_transfers_the_call() -> None:
    for said in ("Can I talk to a real person?", "Put me through to the manager", "(caller pressed 0)"):
        _, text, calls = await turn(OfflineBrain(PROFILE), user(said))
        assert [c.name for c in calls] == ["transfer_to_human"], said
        assert calls[0].arguments["reason"]
        assert text in ("", "Sure.")


async def test_only_offered_tools_are_called_otherwise_the_brain_just_talks() -> None:
    _, text, calls = await turn(OfflineBrain(PROFILE), user("goodbye"), NO_TOOLS)
    assert calls == [] and text.endswith("Goodbye!")
    _, text, calls = await turn(OfflineBrain(PROFILE), user("I want a human"), NO_TOOLS)
    assert calls == [] and "What would you like me to pass on?" in text


async def test_a_failed_transfer_offers_a_message_and_the_reply_is_taken_as_the_message() -> None:
    brain = OfflineBrain(PROFILE)
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


async def test_tool_results_get_the_matching_follow_up_line() -> None:
    def after(name: str, data: dict) -> list[Message]:
        call = ToolCall("call_9", name, {})
        return [Message("user", "x"), Message("assistant", "", tool_calls=[call]),
                Message("tool", json.dumps(data), tool_call_id="call_9")]  # name found by id

    _, text, _ = await turn(OfflineBrain(PROFILE), after("transfer_to_human", {"ok": True}))
    assert text == "Of course. I'm connecting you now, please hold."
    _, text, calls = await turn(OfflineBrain(PROFILE), after("end_call", {"ok": True}))
    assert (text, calls) == ("", [])
    _, text, calls = await turn(OfflineBrain(PROFILE), after("look_up_weather", {"ok": True}))
    assert text and len(text.split()) <= 4 and calls == []


async def test_tool_call_ids_are_unique_within_a_brain() -> None:
    brain = OfflineBrain(PROFILE)
    ids = []
    for said in ("bye", "operator please", "goodbye"):
        _, _, calls = await turn(brain, user(said))
        ids += [c.id for c in calls]
    assert len(ids) == 3 == len(set(ids))


async def test_first_output_waits_for_the_first_token_latency() -> None:
    brain = OfflineBrain(PROFILE, delay_ms=200)
    stream = brain.respond(INSTRUCTIONS, user("hello"), ALL_TOOLS)
    started = time.monotonic()
    first = await asyncio.wait_for(anext(stream), timeout=5)
    assert time.monotonic() - started >= 0.19
    assert isinstance(first, TextDelta)
    await stream.aclose()
    await brain.close()


# --- booking, moving and cancelling: the test plays the tool layer ---------------------------------

SUNDAY = datetime(2026, 11, 22, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # tomorrow is Monday the 23rd


class Call:
    """One call through one brain: the caller speaks, the test answers its tool calls."""

    def __init__(self, tools: list[ToolSpec] = ALL_TOOLS) -> None:
        self.brain = OfflineBrain(PROFILE, clock=lambda: SUNDAY)
        self.tools = tools
        self.history = [Message("system", "You are Zylin."), Message("assistant", PROFILE.greeting)]
        self.pending: ToolCall | None = None

    async def says(self, text: str) -> tuple[str, ToolCall | None]:
        assert self.pending is None, "the brain is waiting for a tool result"
        self.history.append(Message("user", text))
        return await self._turn()

    async def tool_returns(self, **data) -> tuple[str, ToolCall | None]:
        call, self.pending = self.pending, None
        assert call is not None, "the brain called no tool"
        self.history.append(Message("tool", json.dumps(data), tool_call_id=call.id, name=call.name))
        return await self._turn()

    async def _turn(self) -> tuple[str, ToolCall | None]:
        _, text, calls = await turn(self.brain, self.history, self.tools)
        assert len(calls) <= 1
        self.history.append(Message("assistant", text, tool_calls=calls))
        self.pending = calls[0] if calls else None
        return text, self.pending


def args(call: ToolCall | None) -> tuple[str, dict]:
    assert call is not None
    return call.name, call.arguments


FREE_AT_3 = {"ok": True, "service": "Cleaning", "date": "2026-11-23", "requested": "2026-11-23T15:00",
             "requested_free": True, "slots": ["2026-11-23T15:00"], "alternatives": [], "spoken": ""}
BOOKED = {"ok": True, "code": "ABC123", "start": "2026-11-23T15:00",
          "spoken_start": "Monday, November 23 at 3 pm", "service": "Cleaning"}
ONE_BOOKING = {"ok": True, "bookings": [
    {"code": "ABC123", "service": "Cleaning", "start": "2026-11-23T15:00",
     "spoken_start": "Monday, November 23 at 3 pm"}]}


async def test_a_caller_books_a_cleaning_tomorrow_at_3_and_hears_the_code() -> None:
    call = Call()
    text, tool = await call.says("Hi, I'd like a cleaning tomorrow at 3")
    assert text == "Let me check."
    assert args(tool) == ("check_availability", {"service": "Cleaning", "date": "2026-11-23", "time": "15:00"})

    text, tool = await call.tool_returns(**FREE_AT_3)
    assert text == "Good news, Monday, November 23 at 3 pm is free. May I have your name, please?"
    assert tool is None

    text, tool = await call.says("My name is Ann Lee")
    assert text == ("That's a Cleaning on Monday, November 23 at 3 pm for Ann Lee, and I'll use the number "
                    "you're calling from. Shall I book it?")
    assert tool is None

    text, tool = await call.says("Yes please")
    assert args(tool) == ("book_appointment", {"service": "Cleaning", "start": "2026-11-23T15:00",
                                               "customer_name": "Ann Lee", "customer_phone": ""})

    text, tool = await call.tool_returns(**BOOKED)
    assert text == ("You're all set: a Cleaning on Monday, November 23 at 3 pm. Your confirmation code is "
                    "A B C 1 2 3. Is there anything else I can help with?")
    assert tool is None

    text, tool = await call.says("No, thank you")
    assert text == "Thanks for calling Bright Smile Dental. Goodbye!"
    assert args(tool)[0] == "end_call"


async def test_a_booking_is_put_together_one_question_at_a_time() -> None:
    call = Call()
    text, _ = await call.says("I'd like to make an appointment")
    assert "Which service" in text
    text, _ = await call.says("A consultation, please")
    assert text == "What day would suit you?"
    text, tool = await call.says("Friday morning")
    assert args(tool) == ("check_availability",
                          {"service": "Consultation", "date": "2026-11-27", "part_of_day": "morning"})
    slots = [f"2026-11-27T{t}" for t in ("09:00", "09:30", "10:00", "10:30", "11:00", "11:30")]
    text, tool = await call.tool_returns(ok=True, service="Consultation", date="2026-11-27", requested=None,
                                         requested_free=None, slots=slots, alternatives=[], spoken="")
    assert text == "On Friday, November 27 I could do 9 am, 10:30 am or 11:30 am. Would one of those work?"
    text, _ = await call.says("The second one")
    assert text == "May I have your name, please?"
    text, _ = await call.says("Bob")
    assert text.startswith("That's a Consultation on Friday, November 27 at 10:30 am for Bob,")
    _, tool = await call.says("Sure, that works")
    assert args(tool)[1]["start"] == "2026-11-27T10:30"


@pytest.mark.parametrize("pick, start", [
    ("the first one", "2026-11-27T09:00"), ("10:15 please", "2026-11-27T10:15"),
    ("the last one", "2026-11-27T11:00"), ("how about 4 instead?", None),
])
async def test_a_taken_time_gets_alternatives_and_the_caller_picks_one(pick: str, start: str | None) -> None:
    call = Call()
    await call.says("This is Ann. Can I book a whitening on Friday at 10?")
    text, _ = await call.tool_returns(
        ok=True, service="Whitening", date="2026-11-27", requested="2026-11-27T10:00", requested_free=False,
        slots=[], alternatives=["2026-11-27T10:15", "2026-11-27T09:00", "2026-11-27T11:00"], spoken="")
    assert text == ("I'm sorry, Friday, November 27 at 10 am is taken. On Friday, November 27 I could do "
                    "9 am, 10:15 am or 11 am. Would one of those work?")
    text, tool = await call.says(pick)
    if start is None:  # not one of the offers: check the new wish
        assert args(tool) == ("check_availability", {"service": "Whitening", "date": "2026-11-27", "time": "16:00"})
        return
    assert tool is None and text.startswith("That's a Whitening on ") and "for Ann," in text
    _, tool = await call.says("yeah")
    assert args(tool) == ("book_appointment", {"service": "Whitening", "start": start,
                                               "customer_name": "Ann", "customer_phone": ""})


async def test_a_refused_booking_offers_the_alternatives_the_tool_returned() -> None:
    call = Call()
    await call.says("my name is Ann Lee and I'd like a cleaning tomorrow at 3")
    await call.tool_returns(**FREE_AT_3)
    _, tool = await call.says("correct")
    assert args(tool)[0] == "book_appointment"
    text, tool = await call.tool_returns(ok=False, reason="that time was just taken",
                                         alternatives=["2026-11-23T15:15", "2026-11-24T09:00"])
    assert text == ("I'm sorry, that time was just taken. I could do Monday, November 23 at 3:15 pm or "
                    "Tuesday, November 24 at 9 am. Would one of those work?")
    assert tool is None
    text, _ = await call.says("3:15")
    assert text.startswith("That's a Cleaning on Monday, November 23 at 3:15 pm for Ann Lee")
    _, tool = await call.says("yes")
    assert args(tool)[1]["start"] == "2026-11-23T15:15"


async def test_saying_no_at_the_read_back_asks_again_and_a_change_is_checked_again() -> None:
    call = Call()
    await call.says("It's Ann, a cleaning tomorrow at 3 please")
    text, _ = await call.tool_returns(**FREE_AT_3)
    assert "for Ann," in text and text.endswith("Shall I book it?")
    text, tool = await call.says("No, another time")
    assert (text, tool) == ("No problem. What day or time would suit you better?", None)
    text, tool = await call.says("Friday at 11")
    assert args(tool) == ("check_availability", {"service": "Cleaning", "date": "2026-11-27", "time": "11:00"})
    await call.tool_returns(**{**FREE_AT_3, "requested": "2026-11-27T11:00"})
    _, tool = await call.says("actually make it half past two")  # a change at the read-back
    assert args(tool) == ("check_availability", {"service": "Cleaning", "date": "2026-11-27", "time": "14:30"})


async def test_the_caller_s_number_is_confirmed_not_asked_and_can_be_changed() -> None:
    call = Call()
    await call.says("I'd like a cleaning tomorrow at 3, my name is Ann")
    text, _ = await call.tool_returns(**FREE_AT_3)
    assert "I'll use the number you're calling from" in text
    text, tool = await call.says("Could you use a different number?")
    assert (text, tool) == ("Of course. What number should I use?", None)
    text, _ = await call.says("555 123 4567")
    assert "the number ending in 567" in text
    _, tool = await call.says("yes")
    assert args(tool)[1]["customer_phone"] == "5551234567"


async def test_a_question_in_the_middle_of_a_booking_is_answered_and_the_question_asked_again() -> None:
    call = Call()
    await call.says("a cleaning tomorrow at 3")
    await call.tool_returns(**FREE_AT_3)
    text, tool = await call.says("Is there parking?")
    assert text == "There is free parking behind the building. May I have your name, please?"
    text, _ = await call.says("Ann")
    assert text.startswith("That's a Cleaning") and "for Ann," in text
    text, _ = await call.says("hmm")
    assert text.startswith("Sorry, I didn't catch that. That's a Cleaning")
    text, tool = await call.says("Actually, cancel that")
    assert (text, tool) == ("No problem, I won't book anything. Is there anything else I can help with?", None)


async def test_a_closed_day_is_explained_with_the_tool_s_alternatives() -> None:
    call = Call()
    await call.says("Can I get a cleaning on Wednesday in the afternoon?")
    text, _ = await call.tool_returns(ok=False, reason="we're closed on Wednesdays",
                                      alternatives=["2026-11-27T13:00", "2026-11-30T14:00"])
    assert text == ("I'm sorry, we're closed on Wednesdays. I could do Friday, November 27 at 1 pm or "
                    "Monday, November 30 at 2 pm. Would one of those work?")
    text, _ = await call.says("Monday")
    assert text == "May I have your name, please?"


async def test_cancelling_finds_the_booking_confirms_and_cancels_it() -> None:
    call = Call()
    text, tool = await call.says("I need to cancel my appointment")
    assert args(tool) == ("find_bookings", {"customer_phone": ""})
    text, tool = await call.tool_returns(**ONE_BOOKING)
    assert (text, tool) == ("Shall I cancel your Cleaning on Monday, November 23 at 3 pm?", None)
    text, tool = await call.says("Yes, please cancel it")
    assert args(tool) == ("cancel_appointment", {"code": "ABC123"})
    text, tool = await call.tool_returns(ok=True, code="ABC123", spoken_start="Monday, November 23 at 3 pm")
    assert text == ("Done. Your appointment on Monday, November 23 at 3 pm is cancelled. "
                    "Is there anything else I can help with?")


async def test_a_caller_who_changes_their_mind_keeps_the_appointment() -> None:
    call = Call()
    await call.says("I can't make it, please cancel")
    await call.tool_returns(**ONE_BOOKING)
    text, tool = await call.says("Hmm, no")
    assert (text, tool) == ("All right, I'll leave your appointment as it is. "
                            "Is there anything else I can help with?", None)


async def test_with_several_bookings_the_caller_says_which_one() -> None:
    call = Call()
    await call.says("cancel my booking")
    text, _ = await call.tool_returns(ok=True, bookings=[
        ONE_BOOKING["bookings"][0],
        {"code": "XYZ789", "service": "Whitening", "start": "2026-11-27T10:00",
         "spoken_start": "Friday, November 27 at 10 am"}])
    assert text == ("I see 2 appointments: a Cleaning on Monday, November 23 at 3 pm and a Whitening on "
                    "Friday, November 27 at 10 am. Which one would you like to cancel?")
    text, _ = await call.says("the whitening")
    assert text == "Shall I cancel your Whitening on Friday, November 27 at 10 am?"
    _, tool = await call.says("yes")
    assert args(tool) == ("cancel_appointment", {"code": "XYZ789"})


async def test_no_booking_found_is_said_plainly() -> None:
    call = Call()
    await call.says("I want to cancel my appointment")
    text, tool = await call.tool_returns(ok=True, bookings=[])
    assert text.startswith("I couldn't find any upcoming appointments for the number you're calling from.")
    assert tool is None


async def test_moving_an_appointment_checks_the_new_time_and_reschedules_after_a_yes() -> None:
    call = Call()
    text, tool = await call.says("Can I move my appointment to Friday at 10?")
    assert args(tool) == ("find_bookings", {"customer_phone": ""})
    text, tool = await call.tool_returns(**ONE_BOOKING)
    assert args(tool) == ("check_availability", {"service": "Cleaning", "date": "2026-11-27", "time": "10:00"})
    text, tool = await call.tool_returns(**{**FREE_AT_3, "requested": "2026-11-27T10:00"})
    assert text == ("I'll move your Cleaning from Monday, November 23 at 3 pm to Friday, November 27 at 10 am. "
                    "Shall I go ahead?")
    text, tool = await call.says("That works")
    assert args(tool) == ("reschedule_appointment", {"new_start": "2026-11-27T10:00", "code": "ABC123"})
    text, tool = await call.tool_returns(ok=True, code="ABC123", start="2026-11-27T10:00",
                                         spoken_start="Friday, November 27 at 10 am")
    assert text == ("Done. Your appointment is now on Friday, November 27 at 10 am. Your confirmation code "
                    "is A B C 1 2 3. Is there anything else I can help with?")


async def test_a_reschedule_without_a_day_asks_for_one() -> None:
    call = Call()
    await call.says("I need to reschedule")
    text, tool = await call.tool_returns(**ONE_BOOKING)
    assert (text, tool) == ("What day would you like to move it to?", None)
    _, tool = await call.says("next Friday at half past two")
    assert args(tool) == ("check_availability", {"service": "Cleaning", "date": "2026-11-27", "time": "14:30"})


async def test_without_the_booking_tools_the_brain_offers_a_message_instead() -> None:
    call = Call(tools=[t for t in ALL_TOOLS if t.name not in BOOKING_TOOLS])
    text, tool = await call.says("I'd like a cleaning tomorrow at 3")
    assert tool is None
    assert text.endswith("I can take a message for the team. What would you like me to pass on?")
    _, tool = await call.says("Please book me a cleaning tomorrow")
    assert args(tool)[0] == "take_message"


async def test_the_call_so_far_is_read_from_the_history_so_a_new_brain_carries_on() -> None:
    call = Call()
    await call.says("I'd like a cleaning tomorrow at 3")
    await call.tool_returns(**FREE_AT_3)
    await call.says("my name is Ann Lee")
    call.brain = OfflineBrain(PROFILE, clock=lambda: SUNDAY)  # e.g. after a barge-in cut a reply
    _, tool = await call.says("yes")
    assert args(tool)[0] == "book_appointment"


async def test_a_check_cut_off_by_a_barge_in_is_made_again() -> None:
    call = Call()
    _, first = await call.says("a cleaning tomorrow at 3")
    call.pending, call.history[-1].tool_calls = None, []  # the orchestrator drops an unanswered call
    text, tool = await call.says("sorry, go on")
    assert args(tool) == args(first) and text == "Let me check."


async def test_the_new_day_of_a_move_is_the_one_after_to() -> None:
    call = Call()
    await call.says("I have an appointment on Monday, can I push it to Tuesday morning?")
    _, tool = await call.tool_returns(**ONE_BOOKING)
    assert args(tool) == ("check_availability",
                          {"service": "Cleaning", "date": "2026-11-24", "part_of_day": "morning"})


async def test_a_corrected_name_is_read_back_again() -> None:
    call = Call()
    await call.says("a cleaning tomorrow at 3")
    await call.tool_returns(**FREE_AT_3)
    text, _ = await call.says("Lee")
    assert "for Lee," in text
    text, tool = await call.says("Sorry, my name is actually Ann Lee")
    assert "for Ann Lee," in text and text.endswith("Shall I book it?") and tool is None


# --- holidays: the example profile closes on 25 December 2026 and shortens the 24th ---------------

EXAMPLE = example_profile()
NEW_YORK = ZoneInfo("America/New_York")


def brain_on(day: datetime) -> OfflineBrain:
    """The offline brain of the example business, with the call's clock at 9 am that day."""
    return OfflineBrain(EXAMPLE, clock=lambda: day.replace(hour=9, tzinfo=NEW_YORK))


async def test_the_hours_answer_mentions_the_holidays_of_the_next_two_weeks() -> None:
    _, text, _ = await turn(brain_on(datetime(2026, 12, 20)), user("What are your opening hours?"))
    assert text.startswith(EXAMPLE.hours_sentence())
    assert text.endswith("Exceptions to the usual hours: Thursday, December 24: open 9 am to 12 pm only; "
                         "Friday, December 25: closed; Friday, January 1: closed.")


async def test_the_hours_answer_far_from_any_holiday_is_just_the_week() -> None:
    _, text, _ = await turn(brain_on(datetime(2026, 11, 30)), user("What are your opening hours?"))
    assert text == EXAMPLE.hours_sentence()


@pytest.mark.parametrize("question", ["Are you open on Christmas?", "Are you open on December 25?",
                                      "are you open on the 25th?", "What time do you open on Christmas Day?"])
async def test_the_offline_brain_says_it_is_closed_on_christmas_day(question: str) -> None:
    _, text, calls = await turn(brain_on(datetime(2026, 12, 20)), user(question))
    assert text == "We're closed on Friday, December 25."
    assert calls == []


@pytest.mark.parametrize("question", ["Are you open on the 24th?", "What time do you close on Christmas Eve?",
                                      "Are you open on December 24?"])
async def test_christmas_eve_is_answered_with_its_special_hours(question: str) -> None:
    _, text, _ = await turn(brain_on(datetime(2026, 12, 20)), user(question))
    assert text == "We're open 9 am to 12 pm on Thursday, December 24 (special hours)."


async def test_a_day_question_is_answered_for_that_date_today_and_tomorrow_included() -> None:
    _, text, _ = await turn(brain_on(datetime(2026, 12, 24)), user("Are you open tomorrow?"))
    assert text == "We're closed tomorrow, Friday, December 25."
    _, text, _ = await turn(brain_on(datetime(2026, 12, 24)), user("What time do you close today?"))
    assert text == "We're open 9 am to 12 pm today, Thursday, December 24 (special hours)."
    _, text, _ = await turn(brain_on(datetime(2026, 12, 1)), user("What time do you close on Friday?"))
    assert text == "We're open 9 am to 3 pm on Friday, December 4."


# --- a tool fails: the caller hears the brain's own words, never what the tool told the brain ---------

# What a tool result tells the brain to do. ("offer" alone is a caller's word: "we don't offer that".)
INSTRUCTIONS = re.compile(r"\bapologi[sz]e|\boffer (?:to|a)\b|\btell the caller\b|\bconfirm the message\b"
                          r"|\bnote\b|\bask (?:what|which|for|the)\b|\bthe caller\b|\bcaller's\b|HH:MM"
                          r"|\btool\b", re.IGNORECASE)
CALLER = "+15550107777"
MONDAY = "2026-11-23"                           # open 9-5; SUNDAY is the call's "now"
NO_TRANSFER = [t for t in ALL_TOOLS if t.name != "transfer_to_human"]


class Racing:
    """A call's bookings that lose every race: between the check and the write, another caller
    takes the time, or the booking is moved or cancelled elsewhere."""

    def __init__(self, bookings: Bookings, lost: Exception) -> None:
        self._bookings, self._lost = bookings, lost

    def __getattr__(self, name: str):
        return getattr(self._bookings, name)

    async def create_booking(self, **_) -> None:
        raise self._lost

    async def move_booking(self, *_, **__) -> None:
        raise self._lost

    async def cancel_booking(self, *_) -> None:
        raise self._lost


def context(storage, *, phone: str = CALLER, profile=PROFILE, can_transfer: bool = False) -> CallContext:
    return CallContext(call_sid="CA" + "0" * 32, caller_phone=phone, profile=profile,
                       can_transfer=can_transfer, storage=storage, clock=lambda: SUNDAY)


async def booked(storage: Storage, start: str, service: str = "Cleaning", phone: str = CALLER) -> str:
    at = datetime.fromisoformat(start).replace(tzinfo=SUNDAY.tzinfo).astimezone(UTC)
    booking = await storage.bookings.create_booking(
        service=service, start_utc=at, end_utc=at + timedelta(minutes=45), customer_name="Ann Lee",
        customer_phone=phone, step_minutes=15, lanes=1)
    return booking.code


async def tool_failures(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict]]:
    """(what, tool, result data) for every way each tool can fail, worded by the real tool layer."""
    failures: list[tuple[str, str, dict]] = []

    async def fails(what: str, name: str, ctx: CallContext | None = None, **arguments) -> None:
        result = await Toolbox(ctx or context(storage)).run(ToolCall("call_x", name, arguments))
        assert result.data.get("ok") is False, (what, result.data)
        failures.append((what, name, result.data))

    mine = await booked(storage, f"{MONDAY}T10:00")
    await booked(storage, f"{MONDAY}T14:00")
    gone = await booked(storage, f"{MONDAY}T16:00", service="Root canal", phone="+15550100000")
    stranger = context(storage, phone="+15550109999")
    raced = context(SimpleNamespace(bookings=Racing(storage.bookings, SlotTaken()), messages=storage.messages))
    vanished = context(SimpleNamespace(bookings=Racing(storage.bookings, BookingNotFound()),
                                       messages=storage.messages))
    cleaning = {"service": "Cleaning", "customer_name": "Ann Lee"}

    await fails("unknown service", "check_availability", service="Root canal", date=MONDAY)
    await fails("unreadable date", "check_availability", service="Cleaning", date="next week")
    await fails("no date", "check_availability", service="Cleaning")
    await fails("no service", "check_availability", date=MONDAY)
    await fails("part of day not offered", "check_availability", service="Cleaning", date=MONDAY, part_of_day="night")
    await fails("unreadable time", "check_availability", service="Cleaning", date=MONDAY, time="3pm")
    await fails("time skipped by DST", "check_availability", service="Cleaning", date="2027-03-14", time="02:30")
    await fails("unknown service", "book_appointment", **{**cleaning, "service": "Root canal"},
                start=f"{MONDAY}T11:00")
    await fails("unreadable start", "book_appointment", **cleaning, start="Monday at eleven")
    await fails("no name", "book_appointment", service="Cleaning", start=f"{MONDAY}T11:00", customer_name=" ")
    await fails("no phone", "book_appointment", context(storage, phone=""), **cleaning, start=f"{MONDAY}T11:00")
    await fails("in the past", "book_appointment", **cleaning, start="2026-11-20T10:00")
    await fails("closed day", "book_appointment", **cleaning, start="2026-11-24T10:00")
    await fails("taken", "book_appointment", **cleaning, start=f"{MONDAY}T10:00")
    await fails("just taken", "book_appointment", raced, **cleaning, start=f"{MONDAY}T11:00")
    for tool, extra in (("reschedule_appointment", {"new_start": f"{MONDAY}T11:00"}), ("cancel_appointment", {})):
        await fails("unknown code", tool, code="XXXXXX", **extra)
        await fails("nothing booked", tool, stranger, **extra)
        await fails("several booked", tool, **extra)
    await fails("service gone", "reschedule_appointment", code=gone, new_start=f"{MONDAY}T11:00")
    await fails("unreadable new start", "reschedule_appointment", code=mine, new_start="Friday")
    await fails("closed day", "reschedule_appointment", code=mine, new_start="2026-11-24T10:00")
    await fails("just taken", "reschedule_appointment", raced, code=mine, new_start=f"{MONDAY}T11:00")
    await fails("moved away", "reschedule_appointment", vanished, code=mine, new_start=f"{MONDAY}T11:00")
    await fails("cancelled meanwhile", "cancel_appointment", vanished, code=mine)
    await fails("empty message", "take_message", message="  ")
    await fails("no message", "take_message", phone="+15550001111")
    await fails("urgency not offered", "take_message", message="Call me back", urgency="whenever")
    await fails("no owner number", "transfer_to_human", reason="caller asked for a person")
    await fails("outside transfer hours", "transfer_to_human",
                context(storage, profile=replace(PROFILE, owner_phone="+15550001111"), can_transfer=True),
                reason="caller asked for a person")
    await fails("no such tool", "look_up_weather", city="Springfield")

    async def broken(ctx: CallContext, args: object) -> None:
        raise RuntimeError("the database is down")

    readable = {"check_availability": {"service": "Cleaning", "date": MONDAY},
                "book_appointment": {**cleaning, "start": f"{MONDAY}T11:00"},
                "reschedule_appointment": {"code": mine, "new_start": f"{MONDAY}T11:00"},
                "take_message": {"message": "Call me back"}}
    for name, tool in list(receptionist_tools.TOOLS.items()):
        monkeypatch.setitem(receptionist_tools.TOOLS, name, replace(tool, handler=broken))
        await fails("the tool broke", name, **readable.get(name, {}))
        assert failures[-1][2] == BROKEN, name  # read, so the tool ran, and broke
    return failures


async def brain_just_called(tool: str) -> Call:
    """A call in which the brain has just called `tool`, the way it does on a real call."""
    call = Call(NO_TRANSFER if tool == "take_message" else ALL_TOOLS)
    steps = {
        "check_availability": ["I'd like a cleaning tomorrow at 3"],
        "book_appointment": ["I'd like a cleaning tomorrow at 3", FREE_AT_3, "My name is Ann Lee", "Yes please"],
        "find_bookings": ["I need to cancel my appointment"],
        "cancel_appointment": ["I need to cancel my appointment", ONE_BOOKING, "Yes, please cancel it"],
        "reschedule_appointment": ["Can I move my appointment to Friday at 10?", ONE_BOOKING,
                                   {**FREE_AT_3, "requested": "2026-11-27T10:00"}, "That works"],
        "transfer_to_human": ["Can I speak to someone?"],
        "take_message": ["Can I speak to someone?", "Please ask the dentist to call me back"],
        "end_call": ["That's all, goodbye"],
    }[tool]
    for step in steps:
        await (call.says(step) if isinstance(step, str) else call.tool_returns(**step))
    assert call.pending is not None and call.pending.name == tool, call.history
    return call


async def said_after(tool: str, data: dict) -> list[str]:
    """What the brain says when `tool` returns `data`: in the middle of that tool's conversation,
    and right after a caller line with nothing else going on."""
    lines = []
    if tool in receptionist_tools.TOOLS:
        call = await brain_just_called(tool)
        text, _ = await call.tool_returns(**data)
        lines.append(text)
    bare = [Message("user", "x"), Message("assistant", "", tool_calls=[ToolCall("call_9", tool, {})]),
            Message("tool", json.dumps(data), tool_call_id="call_9", name=tool)]
    _, text, _ = await turn(OfflineBrain(PROFILE, clock=lambda: SUNDAY), bare)
    return lines + [text]


async def test_no_tool_failure_has_the_brain_read_out_what_the_tool_told_it(monkeypatch) -> None:
    async with fresh_database("sqlite") as database:
        failures = await tool_failures(Storage(database), monkeypatch)
    assert len(failures) >= 30

    spoken, wrong = [], []
    for what, tool, data in failures:
        for text in await said_after(tool, data):
            spoken.append(text)
            if INSTRUCTIONS.search(text) or (data.get("note") and data["note"] in text):
                wrong.append(f"{tool}, {what}: {text!r}")
    assert not wrong, "the caller hears what the tool told the brain:\n" + "\n".join(wrong)
    assert sum(s.startswith("I'm sorry") for s in spoken) > len(failures) / 2


async def test_a_caller_who_asks_to_leave_a_message_is_asked_what_to_pass_on() -> None:
    for wish in ("Can I leave a message please?", "Could you take a message for the dentist?"):
        _, text, calls = await turn(OfflineBrain(PROFILE), user(wish))
        assert text.endswith("What would you like me to pass on?") and calls == [], text
