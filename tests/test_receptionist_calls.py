"""Whole calls where the receptionist does its job: the caller books, moves or cancels an
appointment, or leaves a message when a transfer fails, and what Zylin promised on the phone is
what the database holds afterwards. Real server, signed webhook, Media Streams, mock ASR/TTS;
the offline brain, or the OpenAI brain against the fake OpenAI server; Twilio REST is a local fake.

The server runs on the real clock, so the day booked is computed from today in New York: an
open weekday a few days ahead, whatever day the tests run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, timedelta

from services.receptionist.lines import TRANSFER_FAILED_LINE
from services.receptionist.spoken import spoken_datetime
from services.simulator.caller import CallerLine
from services.storage import BookingRecord, MessageRecord, Storage
from services.telephony.rest import TwilioTelephony
from tests.conftest import running_zylin
from tests.factories import (
    CALLER,
    OWNER_PHONE,
    OWNER_SMS,
    SMS_FROM,
    example_profile,
    local,
    open_weekday,
    profile_with_an_owner,
    said,
)
from tests.fakes.openai_server import ChatReply, FakeOpenAI
from tests.fakes.twilio_rest import FakeTwilioRest

PROFILE = example_profile()
SPEED = 4.0
BRISK = 45.0   # mock TTS characters per second: replies play quickly, calls stay short


def spelled(code: str) -> str:
    return " ".join(code)


def zylin_turns(record) -> list:
    return [t for t in record.turns if t.speaker == "zylin"]


def tools_run(record) -> list[str]:
    return [e.detail["name"] for e in record.events if e.kind == "tool"]


async def booked_before_the_call(storage: Storage, day: date, phone: str = CALLER) -> BookingRecord:
    start = local(day, 10).astimezone(UTC)
    return await storage.bookings.create_booking(
        service="Cleaning", start_utc=start, end_utc=start + timedelta(minutes=45), customer_name="Ann Lee",
        customer_phone=phone, step_minutes=PROFILE.booking.slot_step_min, lanes=PROFILE.booking.capacity)


# --- the offline brain ---------------------------------------------------------------------------------

async def test_a_caller_books_a_cleaning_and_hears_the_code_that_is_in_the_database():
    day = open_weekday()
    async with running_zylin(database=True, mock_tts_chars_per_s=BRISK) as zylin:
        result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
            CallerLine(f"I'd like a cleaning on {said(day)} at 10 am"),
            CallerLine("My name is Ann Lee"),
            CallerLine("Yes"),
        ])
        record = await zylin.recorder.wait_ended(result.call_sid)
        stored = await zylin.storage.bookings.list_bookings()

    assert not result.timeouts and not result.protocol_errors
    [booking] = stored
    assert (booking.service, booking.customer_name, booking.customer_phone) == ("Cleaning", "Ann Lee", CALLER)
    assert booking.start_utc == local(day, 10).astimezone(UTC)
    assert booking.end_utc - booking.start_utc == timedelta(minutes=45)
    assert booking.call_sid == result.call_sid and [b.code for b in record.bookings] == [booking.code]
    assert tools_run(record) == ["check_availability", "book_appointment"]
    read_back, confirmation = zylin_turns(record)[-2:]
    assert "Shall I book it?" in read_back.text and "the number you're calling from" in read_back.text
    assert confirmation.text.startswith(f"You're all set: a Cleaning on {spoken_datetime(local(day, 10))}.")
    assert f"Your confirmation code is {spelled(booking.code)}." in confirmation.text
    assert not confirmation.interrupted, "the caller heard the whole confirmation"
    assert record.call.outcome == "booked"


async def test_a_caller_moves_their_appointment_to_another_day():
    day = open_weekday()
    new_day = open_weekday(day, days_ahead=1)
    async with running_zylin(database=True, mock_tts_chars_per_s=BRISK) as zylin:
        booking = await booked_before_the_call(zylin.storage, day)
        result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
            CallerLine(f"I need to move my appointment to {said(new_day)} at 2 pm"),
            CallerLine("Yes"),
        ])
        record = await zylin.recorder.wait_ended(result.call_sid)
        moved = await zylin.storage.bookings.get_booking(booking.code)
        active = await zylin.storage.bookings.list_bookings()

    assert not result.timeouts and not result.protocol_errors
    assert tools_run(record) == ["find_bookings", "check_availability", "reschedule_appointment"]
    assert moved.status == "moved" and moved.start_utc == local(new_day, 14).astimezone(UTC)
    assert moved.end_utc - moved.start_utc == timedelta(minutes=45)
    assert [b.code for b in active] == [booking.code], "moved, not booked twice"
    read_back, done = zylin_turns(record)[-2:]
    assert f"from {spoken_datetime(local(day, 10))} to {spoken_datetime(local(new_day, 14))}" in read_back.text
    assert done.text.startswith(f"Done. Your appointment is now on {spoken_datetime(local(new_day, 14))}.")
    assert spelled(booking.code) in done.text and not done.interrupted


async def test_a_caller_cancels_their_appointment_and_the_slot_is_free_again():
    day = open_weekday()
    async with running_zylin(database=True, mock_tts_chars_per_s=BRISK) as zylin:
        booking = await booked_before_the_call(zylin.storage, day)
        result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
            CallerLine("I'd like to cancel my appointment please"),
            CallerLine("Yes"),
        ])
        record = await zylin.recorder.wait_ended(result.call_sid)
        cancelled = await zylin.storage.bookings.get_booking(booking.code)
        active = await zylin.storage.bookings.list_bookings()

    assert not result.timeouts and not result.protocol_errors
    assert tools_run(record) == ["find_bookings", "cancel_appointment"]
    assert cancelled.status == "cancelled" and active == []
    question, done = zylin_turns(record)[-2:]
    assert question.text.endswith(f"Shall I cancel your Cleaning on {spoken_datetime(local(day, 10))}?")
    assert done.text.startswith(f"Done. Your appointment on {spoken_datetime(local(day, 10))} is cancelled.")
    assert not done.interrupted


async def test_someone_else_s_appointment_is_not_found_from_another_number():
    day = open_weekday()
    async with running_zylin(database=True, mock_tts_chars_per_s=BRISK) as zylin:
        booking = await booked_before_the_call(zylin.storage, day, phone="+15550108888")
        result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
            CallerLine("I'd like to cancel my appointment please")])
        record = await zylin.recorder.wait_ended(result.call_sid)
        kept = await zylin.storage.bookings.get_booking(booking.code)

    assert tools_run(record) == ["find_bookings"]
    assert "couldn't find any upcoming appointments" in zylin_turns(record)[-1].text
    assert kept.status == "booked"


# --- a transfer that fails ---------------------------------------------------------------------------

async def message_once_texted(storage: Storage, timeout_s: float = 5.0) -> MessageRecord:
    """The one stored message, once its SMS status is known (it is sent in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        messages, total = await storage.messages.list_messages()
        assert total == 1, messages
        if messages[0].sms_status != "pending" or asyncio.get_running_loop().time() > deadline:
            return messages[0]
        await asyncio.sleep(0.05)


async def test_a_failed_transfer_falls_back_to_a_message_that_is_stored_and_texted_to_the_owner(tmp_path):
    message = "Please ask the dentist to call me back about my crown."
    # The caller waits until the apology after the failed transfer has been heard, then speaks.
    apology_ms = len(TRANSFER_FAILED_LINE) / BRISK * 1000
    async with FakeTwilioRest() as twilio:
        twilio.fail_calls(500)
        telephony = TwilioTelephony(twilio.account_sid, twilio.auth_token, api_base_url=twilio.url,
                                    sms_from=SMS_FROM)
        async with running_zylin(telephony=telephony, database=True, mock_tts_chars_per_s=BRISK,
                                 business_profile=str(profile_with_an_owner(tmp_path))) as zylin:
            result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
                CallerLine("Can I talk to a real person please?"),
                CallerLine(message, pause_before_ms=int(apology_ms) + 4000),
            ])
            record = await zylin.recorder.wait_ended(result.call_sid)
            [sms] = await twilio.wait_messages(1)
            stored = await message_once_texted(zylin.storage)

    assert not result.timeouts and not result.protocol_errors
    [update] = twilio.call_updates
    assert update.call_sid == result.call_sid and update.status == 500
    assert "<Dial" in update.form["Twiml"] and OWNER_PHONE in update.form["Twiml"]
    kinds = [e.kind for e in record.events]
    assert kinds.index("transfer") < kinds.index("transfer_failed")
    texts = [t.text for t in zylin_turns(record)]
    connecting = texts.index("Of course. I'm connecting you now, please hold.")
    assert texts[connecting + 1] == TRANSFER_FAILED_LINE
    assert not zylin_turns(record)[connecting + 1].interrupted, "the caller heard the offer of a message"
    assert texts[-1].startswith("Thank you, I've passed your message on.")
    assert tools_run(record) == ["transfer_to_human", "take_message"]

    assert (stored.message, stored.phone, stored.call_sid) == (message, CALLER, result.call_sid)
    assert [m.id for m in record.messages] == [stored.id]
    assert stored.sms_status == "sent"
    assert (sms.to, sms.from_, sms.status) == (OWNER_SMS, SMS_FROM, 201)
    assert message in sms.body and CALLER in sms.body and "Bright Smile Dental" in sms.body
    assert twilio.unauthorized == 0


# --- the OpenAI brain, scripted ------------------------------------------------------------------------

class ScriptedReceptionist:
    """The fake model's side: check the time the caller asked for, read it back, book it after a
    yes, and confirm with the code the booking tool returned."""

    def __init__(self, day: date) -> None:
        self.day = day
        self.check = {"service": "Cleaning", "date": day.isoformat(), "time": "10:00"}
        self.book = {"service": "Cleaning", "start": f"{day.isoformat()}T10:00", "customer_name": "Ann Lee"}
        self.tool_results: dict[str, dict] = {}
        self.confirmation = ""

    def __call__(self, request: dict) -> ChatReply:
        offered = {t["function"]["name"] for t in request.get("tools", [])}
        assert {"check_availability", "book_appointment"} <= offered
        messages = request["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            names = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls") or []}
            name, data = names[last["tool_call_id"]], json.loads(last["content"])
            self.tool_results[name] = data
            if name == "check_availability":
                if not data.get("requested_free"):
                    return ChatReply.text("I'm sorry, that time isn't free.")
                return ChatReply.text(f"Good news, {spoken_datetime(local(self.day, 10))} is free.",
                                      " Shall I book a cleaning for Ann Lee?")
            if name == "book_appointment" and data.get("ok"):
                self.confirmation = (f"You're booked for {data['spoken_start']}. "
                                     f"Your confirmation code is {spelled(data['code'])}.")
                return ChatReply.text(self.confirmation, " Is there anything else?")
            return ChatReply.text("I'm sorry, something went wrong.")
        words = last["content"].lower()
        if "cleaning" in words:
            return ChatReply.tool_calls(("check_availability", self.check), text=["Let me check that."])
        if words.startswith("yes"):
            return ChatReply.tool_calls(("book_appointment", self.book))
        return ChatReply.text("Sorry, could you say that again?")


async def test_the_openai_brain_books_through_the_tools_and_the_caller_hears_its_confirmation():
    day = open_weekday()
    model = ScriptedReceptionist(day)
    async with FakeOpenAI(api_key="test-key") as openai:
        openai.chat_handler = model
        async with running_zylin(database=True, use_mock_streaming=False, asr_provider="mock",
                                 llm_provider="openai", tts_provider="mock", openai_api_key="test-key",
                                 openai_base_url=openai.base_url, mock_tts_chars_per_s=BRISK) as zylin:
            result = await zylin.caller(speed=SPEED, from_number=CALLER).call([
                CallerLine(f"Hi, I'd like a cleaning on {said(day)} at 10 am. My name is Ann Lee."),
                CallerLine("Yes please, book it."),
            ])
            record = await zylin.recorder.wait_ended(result.call_sid)
            stored = await zylin.storage.bookings.list_bookings()

    assert not result.timeouts and not result.protocol_errors
    assert tools_run(record) == ["check_availability", "book_appointment"]
    assert model.tool_results["check_availability"]["requested_free"] is True
    [booking] = stored
    assert booking.code == model.tool_results["book_appointment"]["code"]
    assert (booking.customer_name, booking.customer_phone) == ("Ann Lee", CALLER)
    assert booking.start_utc == local(day, 10).astimezone(UTC) and booking.call_sid == result.call_sid
    confirmation = zylin_turns(record)[-1]
    assert confirmation.text.startswith(model.confirmation) and not confirmation.interrupted
    assert spelled(booking.code) in confirmation.text
    # The model saw the tool's answer before it spoke: the last request ends with the booking result.
    last_request = openai.chat_requests[-1]["messages"]
    assert last_request[-1]["role"] == "tool" and booking.code in last_request[-1]["content"]
