"""What a whole call leaves in the logs at INFO: call SIDs, kinds, counts, statuses, durations and
masked numbers; never a phone number in full, a booking code, the caller's name, the message
they left, or any line said on the call (docs/security.md, "What the logs hold").

A real server, signed webhook, Media Streams, the offline brain and a local fake Twilio REST: the
caller books an appointment under their name, asks for a person (the transfer fails), leaves a
message that is texted to the owner, and asks for a person again (this time it goes through).
"""

from __future__ import annotations

import logging
import re

import pytest

from services.privacy import log_safe, mask_code, mask_phone, scrub
from services.receptionist.lines import TRANSFER_FAILED_LINE
from services.simulator.caller import CallerLine
from services.telephony.rest import TwilioTelephony
from tests.conftest import running_zylin
from tests.factories import CALLER, OWNER_PHONE, OWNER_SMS, SMS_FROM, open_weekday, profile_with_an_owner, said
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_receptionist_calls import BRISK, SPEED, zylin_turns

NAME = "Philippa Quorn"
MESSAGE = "Please ask the dentist to call me back about my crown, it cracked on Sunday."
NUMBERS = (CALLER, OWNER_PHONE, OWNER_SMS, SMS_FROM)
# Loggers that do not hand their records to the root logger.
OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture):
    """Every record at INFO and above, from the root logger and from uvicorn's own loggers."""
    caplog.set_level(logging.INFO)
    for name in ("zylin", "twilio", *OWN_HANDLERS):
        logging.getLogger(name).setLevel(logging.INFO)
    for name in OWN_HANDLERS:
        logging.getLogger(name).addHandler(caplog.handler)
    yield caplog
    for name in OWN_HANDLERS:
        logging.getLogger(name).removeHandler(caplog.handler)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records at INFO and above as they would be written, tracebacks included."""
    return "\n".join(caplog.handler.format(r) for r in caplog.records if r.levelno >= logging.INFO)


def forms_of(number: str) -> list[str]:
    """A number as it might be printed: E.164, without the plus, national, its last seven digits."""
    digits = number.lstrip("+")
    return [number, digits, digits[-10:], digits[-7:]]


async def test_a_whole_call_at_info_logs_masked_numbers_and_none_of_what_was_said(tmp_path, info_logs):
    day = open_weekday()
    apology_ms = len(TRANSFER_FAILED_LINE) / BRISK * 1000
    lines = [
        CallerLine(f"I'd like a cleaning on {said(day)} at 10 am"),
        CallerLine(f"My name is {NAME}"),
        CallerLine("Yes"),
        CallerLine("Can I talk to a real person please?"),
        CallerLine(MESSAGE, pause_before_ms=int(apology_ms) + 4000),
        CallerLine("Can I talk to a real person please?"),
    ]
    async with FakeTwilioRest() as twilio:
        twilio.fail_calls(500)  # the first transfer fails, the second goes through
        telephony = TwilioTelephony(twilio.account_sid, twilio.auth_token, api_base_url=twilio.url,
                                    sms_from=SMS_FROM)
        async with running_zylin(telephony=telephony, database=True, mock_tts_chars_per_s=BRISK,
                                 sms_confirmations=True,
                                 business_profile=str(profile_with_an_owner(tmp_path))) as zylin:
            result = await zylin.caller(speed=SPEED, from_number=CALLER).call(lines)
            record = await zylin.recorder.wait_ended(result.call_sid)
            await twilio.wait_messages(2)  # the booking's confirmation, the message to the owner
            [booking] = await zylin.storage.bookings.list_bookings()

    assert not result.timeouts and not result.protocol_errors
    kinds = [e.kind for e in record.events]
    assert {"tool", "transfer", "transfer_failed"} <= set(kinds), kinds
    assert booking.customer_name == NAME and len(twilio.call_updates) == 2

    text = logged(info_logs)
    # The test can fail: the call's own masked numbers and SID are there.
    assert result.call_sid in text
    for number in (CALLER, OWNER_PHONE, OWNER_SMS):
        assert mask_phone(number) in text, f"{mask_phone(number)} not logged"
    leaks = [f for number in NUMBERS for f in forms_of(number) if f in text]
    assert not leaks, f"numbers in full at INFO: {leaks}"
    assert booking.code not in text, "the booking code is logged"
    for word in (*NAME.split(), "crown", "dentist"):
        assert not re.search(rf"\b{word}\b", text, re.IGNORECASE), f"{word!r} is logged"
    spoken = [line.text for line in lines] + [t.text for t in zylin_turns(record)]
    for line in spoken:
        assert line not in text, f"a line of the call is logged: {line!r}"
    for phrase in ("Good news", "Shall I book it", "passed your message on", "connecting you now",
                   "I couldn't connect you", "real person"):
        assert phrase not in text, f"a line of the call is logged: {phrase!r}"


# --- the parts ---------------------------------------------------------------------------------------

def test_scrub_masks_numbers_anywhere_in_a_string_and_leaves_dates_and_times_alone():
    said = "call +1 (555) 010-7777 or 555.010.8888 on 2026-11-24 at 10:30, or 2026-11-24T15:00"
    out = scrub(said)
    assert "call +1*******777 or *******888 on" in out
    assert "2026-11-24 at 10:30" in out and "2026-11-24T15:00" in out
    assert scrub("call CA0123456789abcdef0123456789abcdef ended") == \
        "call CA0123456789abcdef0123456789abcdef ended", "a call SID is not a phone number"


def test_an_event_s_detail_keeps_kinds_times_and_statuses_and_hides_what_was_said():
    detail = {"name": "book_appointment",
              "arguments": {"service": "Cleaning", "start": "2026-11-24T10:00", "customer_name": NAME,
                            "customer_phone": CALLER},
              "result": {"ok": True, "code": "K7M2QX", "service": "Cleaning", "start": "2026-11-24T10:00",
                         "spoken_start": "Tuesday, November 24 at 10 am", "customer_name": NAME}}
    safe = log_safe(detail)
    assert safe["name"] == "book_appointment"
    assert safe["arguments"]["service"] == "Cleaning" and safe["arguments"]["start"] == "2026-11-24T10:00"
    assert safe["arguments"]["customer_phone"] == mask_phone(CALLER)
    assert safe["result"]["ok"] is True and safe["result"]["code"] == mask_code("K7M2QX") != "K7M2QX"
    assert NAME not in str(safe) and "November 24 at 10 am" not in str(safe)


def test_a_message_s_name_and_text_are_hidden_though_a_tool_s_name_is_kept():
    safe = log_safe({"name": "take_message",
                     "arguments": {"name": NAME, "phone": "", "message": MESSAGE, "urgency": "urgent"},
                     "result": {"ok": True, "note": "Confirm the message will be passed on."}})
    assert safe["name"] == "take_message" and safe["arguments"]["urgency"] == "urgent"
    assert safe["arguments"]["phone"] == ""
    assert NAME not in str(safe) and "crown" not in str(safe) and "Confirm" not in str(safe)


def test_what_zylin_said_and_the_brain_s_reasons_are_hidden_but_provider_errors_are_kept():
    assert log_safe({"why": "speech", "heard": "You're all set: a Cleaning"})["heard"] != \
        "You're all set: a Cleaning"
    assert log_safe({"target": OWNER_PHONE, "reason": f"{NAME} wants the dentist"}) == \
        {"target": mask_phone(OWNER_PHONE), "reason": "<redacted>"}
    assert log_safe({"provider": "llm", "error": f"OpenAI timed out for {CALLER}"}) == \
        {"provider": "llm", "error": f"OpenAI timed out for {mask_phone(CALLER)}"}
