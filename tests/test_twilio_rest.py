"""Twilio REST as Twilio behaves: a client built before the event loop runs, calls that already
ended (21220, 20404), a request that never answers, and a transfer that nobody picks up.
The real twilio SDK talks to the local fake (tests/fakes/twilio_rest.py)."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from services.simulator.caller import CallerLine
from services.telephony.rest import TwilioTelephony, dial_twiml
from services.telephony.webhook import StreamClaim, check_stream_token
from tests.conftest import running_zylin
from tests.factories import AUTH_TOKEN, CALLER, OWNER_PHONE, OWNER_SMS, PUBLIC_URL, SMS_FROM, profile_with_an_owner
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_receptionist_calls import BRISK, SPEED, message_once_texted, tools_run, zylin_turns

CALL = "CA" + "1" * 32


def telephony_for(twilio: FakeTwilioRest, timeout_s: float = 5.0) -> TwilioTelephony:
    return TwilioTelephony(twilio.account_sid, twilio.auth_token, api_base_url=twilio.url,
                           sms_from=SMS_FROM, timeout_s=timeout_s)


def test_the_twilio_client_can_be_built_before_any_event_loop_runs():
    # `python main.py` builds the app before uvicorn starts its loop; the SDK's aiohttp session
    # needs a running loop, so building it in the constructor crashed the server at start-up.
    telephony = TwilioTelephony("AC" + "0" * 32, "token", sms_from=SMS_FROM)
    assert telephony.can_transfer


async def test_hanging_up_a_call_that_already_ended_counts_as_ended():
    async with FakeTwilioRest() as twilio:
        twilio.end_call(CALL)
        telephony = telephony_for(twilio)
        assert await telephony.hang_up(CALL) is True
        await telephony.close()
    [update] = twilio.call_updates
    assert update.status == 400 and update.form["Status"] == "completed"


async def test_a_second_hang_up_gets_21220_and_still_counts_as_ended():
    async with FakeTwilioRest() as twilio:
        telephony = telephony_for(twilio)
        assert await telephony.hang_up(CALL) is True
        assert await telephony.hang_up(CALL) is True
        await telephony.close()
    assert [u.status for u in twilio.call_updates] == [200, 400]


async def test_hanging_up_a_call_twilio_does_not_know_20404_counts_as_ended():
    async with FakeTwilioRest() as twilio:
        twilio.unknown_calls.add(CALL)
        telephony = telephony_for(twilio)
        assert await telephony.hang_up(CALL) is True
        await telephony.close()
    assert twilio.call_updates[0].status == 404


async def test_a_transfer_of_a_call_that_ended_is_a_failed_transfer():
    async with FakeTwilioRest() as twilio:
        twilio.end_call(CALL)
        telephony = telephony_for(twilio)
        assert await telephony.transfer(CALL, OWNER_PHONE, PUBLIC_URL + "/api/twilio/dial-result") is False
        await telephony.close()


async def test_a_twilio_request_that_never_answers_gives_up_within_the_bound():
    async with FakeTwilioRest() as twilio:
        twilio.stall()
        telephony = telephony_for(twilio, timeout_s=0.5)
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(
            telephony.hang_up(CALL), telephony.transfer(CALL, OWNER_PHONE, PUBLIC_URL + "/x"),
            telephony.send_sms(OWNER_SMS, "hello")), timeout=5)
        elapsed = time.monotonic() - started
        twilio.release.set()
        await telephony.close()
    assert results == [False, False, False]
    assert twilio.stalled == 3
    assert elapsed < 2.0, f"each request is bounded by its 0.5 s timeout, took {elapsed:.2f} s"


def test_the_dial_twiml_has_a_signed_action_and_nothing_after_the_dial():
    root = ET.fromstring(dial_twiml(OWNER_PHONE, PUBLIC_URL + "/api/twilio/dial-result?segment=1", 20))
    [dial] = list(root)
    assert dial.tag == "Dial" and dial.text == OWNER_PHONE
    assert dial.get("action") == PUBLIC_URL + "/api/twilio/dial-result?segment=1"
    assert dial.get("method") == "POST" and dial.get("timeout") == "20"


async def test_a_call_whose_hang_up_never_answers_still_ends_within_the_bound():
    async with FakeTwilioRest() as twilio:
        twilio.stall()
        async with running_zylin(telephony=telephony_for(twilio, timeout_s=0.5)) as zylin:
            result = await zylin.caller().call([CallerLine("That's all, bye!")], hang_up=False)
            record = await zylin.recorder.wait_ended(result.call_sid)
        twilio.release.set()
    assert not result.timeouts, result.timeouts
    assert result.closed_by_server, "Zylin closes the stream itself when Twilio does not answer"
    assert record["ended"] == "zylin ended the call"
    assert twilio.stalled == 1


# --- a transfer nobody answers -------------------------------------------------------------------------

def dial_form(call_sid: str, status: str, duration: str = "") -> dict[str, str]:
    form = {"CallSid": call_sid, "AccountSid": "AC" + "7" * 32, "From": CALLER, "To": "+15559870000",
            "CallStatus": "in-progress", "DialCallStatus": status, "Direction": "inbound"}
    if duration:
        form["DialCallDuration"] = duration
    return form


async def test_a_transfer_nobody_answers_brings_the_caller_back_to_leave_a_message(tmp_path: Path):
    message = "Please ask the dentist to call me back about my crown."
    async with FakeTwilioRest() as twilio:
        async with running_zylin(telephony=telephony_for(twilio), database=True, mock_tts_chars_per_s=BRISK,
                                 business_profile=str(profile_with_an_owner(tmp_path))) as zylin:
            caller = zylin.caller(speed=SPEED, from_number=CALLER)
            # Twilio ends the stream once the <Dial> replaces it.
            dialing = asyncio.ensure_future(twilio.wait_call_updates(1, timeout=20))
            first = await caller.call([CallerLine("Can I talk to a real person please?")],
                                      hang_up=False, until=dialing)
            [update] = twilio.call_updates
            dial = ET.fromstring(update.form["Twiml"]).find("Dial")
            action = dial.get("action")
            assert action.startswith(PUBLIC_URL + "/api/twilio/dial-result")
            assert [child.tag for child in ET.fromstring(update.form["Twiml"])] == ["Dial"]
            # The owner does not pick up: Twilio posts the outcome to the action.
            path = action[len(PUBLIC_URL):]
            answer = await caller.post_signed(path, dial_form(first.call_sid, "no-answer"))
            assert answer.status_code == 200
            second = await caller.rejoin(first.call_sid, answer.text, [CallerLine(message)])
            record = await zylin.recorder.wait_ended(first.call_sid, stream_sid=second.stream_sid)
            [sms] = await twilio.wait_messages(1)
            stored = await message_once_texted(zylin.storage)

    assert not first.timeouts and not second.timeouts and not second.protocol_errors
    assert second.parameters["transfer"] == "no-answer"
    assert check_stream_token(first.call_sid, second.parameters, AUTH_TOKEN) == \
        StreamClaim(first.call_sid, CALLER, "+15559870000", segment=1)
    texts = [t.text for t in zylin_turns(record)]
    back = next(t for t in texts if t.startswith("I'm sorry, I couldn't put you through"))
    assert "nobody answered" in back and "What would you like me to pass on?" in back
    assert texts[-1].startswith("Thank you, I've passed your message on.")
    assert tools_run(record) == ["transfer_to_human", "take_message"]
    outcome = [(e.kind, e.detail) for e in record.events if e.kind.startswith("transfer_")]
    assert outcome == [("transfer_failed", {"status": "no-answer", "why": "nobody answered"})]
    assert (stored.message, stored.phone, stored.sms_status) == (message, CALLER, "sent")
    assert sms.to == OWNER_SMS and message in sms.body
    assert record.call.outcome == "message" and record.call.status == "completed"
    # Both streams' turns are kept: none overwrote another's number.
    assert len({t.idx for t in record.turns}) == len(record.turns)


async def test_an_answered_transfer_hangs_up_when_the_person_does_and_logs_how_long(tmp_path: Path):
    async with FakeTwilioRest() as twilio:
        async with running_zylin(telephony=telephony_for(twilio), database=True, mock_tts_chars_per_s=BRISK,
                                 business_profile=str(profile_with_an_owner(tmp_path))) as zylin:
            caller = zylin.caller(speed=SPEED, from_number=CALLER)
            dialing = asyncio.ensure_future(twilio.wait_call_updates(1, timeout=20))
            first = await caller.call([CallerLine("Can I talk to a real person please?")],
                                      hang_up=False, until=dialing)
            action = ET.fromstring(twilio.call_updates[0].form["Twiml"]).find("Dial").get("action")
            answer = await caller.post_signed(action[len(PUBLIC_URL):],
                                              dial_form(first.call_sid, "completed", duration="42"))
            unsigned = await zylin.caller(speed=SPEED).post_signed("/api/twilio/dial-result", {})
            record = await zylin.recorder.wait_ended(first.call_sid)
            stored = await zylin.storage.calls.get_call(first.call_sid)

    assert answer.status_code == 200
    assert [child.tag for child in ET.fromstring(answer.text)] == ["Hangup"]
    assert unsigned.status_code == 400  # signed, but names no call
    assert record.call.end_reason == "transferred to a person"
    answered = [e.detail for e in stored.events if e.kind == "transfer_answered"]
    assert answered == [{"status": "completed", "duration_s": 42}]
    assert stored.call.outcome == "transferred"


async def test_a_dial_result_with_a_bad_signature_is_refused(zylin):
    caller = zylin.caller()
    caller.auth_token = "not-the-token"
    answer = await caller.post_signed("/api/twilio/dial-result?segment=1", dial_form(CALL, "no-answer"))
    assert answer.status_code == 403
