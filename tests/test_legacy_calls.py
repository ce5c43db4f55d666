"""Legacy record mode end to end: whole calls driven with signed form posts exactly as Twilio sends
them (the voice webhook, then one action callback per <Record>), against the real server, a fake
Twilio recording host on loopback (Basic auth checked, 404 until a recording is "ready") and the
mock transcriber (the Nth recording of a call says line N of MOCK_ASR_SCRIPT)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from services.legacy.conversation import DIAL_RESULT_PATH, RECORDING_PATH
from services.receptionist.lines import MESSAGE_OFFER, REPROMPT, TOO_SLOW
from services.simulator.server import serve_app
from services.telephony.rest import OfflineTelephony
from tests.conftest import running_zylin
from tests.factories import (
    AUTH_TOKEN,
    CALLER,
    OWNER_PHONE,
    PUBLIC_URL,
    example_profile,
    local,
    open_weekday,
    profile_with_an_owner,
    said,
)

ACCOUNT_SID = "AC" + "5" * 32
ADMIN = "owner-secret-token"
VOICE_PATH = "/api/twilio/voice-legacy"
BUSINESS = "+15550001000"


def wav_bytes(seconds: float = 0.5) -> bytes:
    """What Twilio serves at RecordingUrl + ".wav": 8 kHz 16-bit mono PCM in a RIFF container."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / 8000)))
                      for i in range(int(8000 * seconds)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return out.getvalue()


class FakeRecordings:
    """Twilio's recording host: GET /2010-04-01/Accounts/{AC}/Recordings/{RE}.wav with Basic auth;
    each recording answers 404 on its first fetch (not ready yet), then the WAV."""

    def __init__(self) -> None:
        self.url = ""
        self.fetches: list[tuple[str, int]] = []   # (recording sid, status answered)
        self.app = Starlette(routes=[Route("/2010-04-01/Accounts/{account}/Recordings/{sid}.wav", self._get)])

    async def _get(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        expected = httpx.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)._auth_header
        if request.path_params["account"] != ACCOUNT_SID or request.headers.get("authorization") != expected:
            status = 401
        elif not any(s == sid for s, _ in self.fetches):
            status = 404
        else:
            status = 200
        self.fetches.append((sid, status))
        if status != 200:
            return Response(status_code=status)
        return Response(wav_bytes(), media_type="audio/x-wav")

    @property
    def host(self) -> dict[str, str]:
        """The setting that makes this the account's Twilio API host: credentials go only there."""
        return {"twilio_api_base_url": self.url}

    def recording_url(self, sid: str) -> str:
        return f"{self.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid}"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeRecordings]:
        async with serve_app(self.app) as url:
            self.url = url
            yield self


@dataclass
class Answer:
    """One TwiML answer, read as Twilio would."""
    status: int
    xml: str
    seconds: float
    verbs: list[ET.Element] = field(default_factory=list)

    @property
    def said(self) -> str:
        return " ".join(v.text or "" for v in self.verbs if v.tag == "Say")

    @property
    def tags(self) -> list[str]:
        return [v.tag for v in self.verbs]

    def verb(self, tag: str) -> ET.Element:
        return next(v for v in self.verbs if v.tag == tag)


class LegacyCaller:
    """Twilio's side of one legacy call: signed webhook, then one signed action per recording."""

    def __init__(self, zylin, recordings: FakeRecordings, call_sid: str, from_number: str = CALLER) -> None:
        self.zylin = zylin
        self.recordings = recordings
        self.call_sid = call_sid
        self.from_number = from_number
        self.validator = RequestValidator(AUTH_TOKEN)
        self.recorded = 0

    def form(self, **extra: str) -> dict[str, str]:
        return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": self.call_sid,
                "CallStatus": "in-progress", "Called": BUSINESS, "Caller": self.from_number,
                "Direction": "inbound", "From": self.from_number, "To": BUSINESS, **extra}

    async def post(self, path: str, form: dict[str, str], signature: str | None = None) -> Answer:
        signature = signature or self.validator.compute_signature(PUBLIC_URL + path, form)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.zylin.base_url, timeout=30) as http:
            response = await http.post(path, data=form, headers={"X-Twilio-Signature": signature})
        answer = Answer(response.status_code, response.text, time.monotonic() - started)
        if response.status_code == 200:
            answer.verbs = list(ET.fromstring(response.text))
        return answer

    async def dial_in(self) -> Answer:
        return await self.post(VOICE_PATH, self.form())

    async def speak(self, duration_s: int = 3, digits: str = "") -> Answer:
        """The caller spoke (the mock transcriber supplies the words) and <Record> ended."""
        self.recorded += 1
        sid = f"RE{self.call_sid[2:12]}{self.recorded:022d}"
        return await self.post(RECORDING_PATH, self.form(
            RecordingUrl=self.recordings.recording_url(sid), RecordingSid=sid,
            RecordingDuration=str(duration_s), Digits=digits))

    async def silence(self) -> Answer:
        """Nothing recorded: Twilio skips the action and runs our <Redirect> (no recording fields)."""
        return await self.post(RECORDING_PATH, self.form())

    async def press_zero(self) -> Answer:
        return await self.post(RECORDING_PATH, self.form(RecordingUrl="", RecordingDuration="0", Digits="0"))


def settings_for(script: list[str], **overrides) -> dict:
    return dict(database=True, telephony=OfflineTelephony(), admin_token=ADMIN,
                twilio_account_sid=ACCOUNT_SID, mock_asr_script=json.dumps(script), **overrides)


async def call_log(zylin, call_sid: str) -> dict:
    async with httpx.AsyncClient(base_url=zylin.base_url, timeout=10,
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        response = await http.get(f"/api/calls/{call_sid}")
        assert response.status_code == 200, response.text
        page = await http.get(f"/calls/{call_sid}")
        listed = await http.get("/calls")
    assert page.status_code == 200 and listed.status_code == 200
    assert 'class="badge mode-legacy"' in page.text and 'class="badge mode-legacy"' in listed.text
    return response.json()


def assert_records_again(answer: Answer) -> None:
    assert answer.status == 200 and answer.tags == ["Say", "Record", "Redirect"], answer.xml
    record = answer.verb("Record")
    assert record.get("action") == PUBLIC_URL + RECORDING_PATH
    assert record.get("playBeep") == "false" and record.get("trim") == "trim-silence"
    assert record.get("timeout") == "2" and record.get("maxLength") == "30"
    assert answer.verb("Redirect").text == PUBLIC_URL + RECORDING_PATH
    assert answer.verb("Say").get("voice") == "Polly.Joanna-Neural"


# --- a booking, turn by turn ---------------------------------------------------------------------------

async def test_a_legacy_caller_books_a_cleaning_turn_by_turn_and_the_call_log_shows_it_as_legacy():
    day = open_weekday()
    script = [f"I'd like a cleaning on {said(day)} at 10 am", "My name is Ann Lee", "Yes", "That's all, bye!"]
    async with (FakeRecordings().serving() as recordings,
                running_zylin(**recordings.host, **settings_for(script)) as zylin):
        caller = LegacyCaller(zylin, recordings, "CA" + "b0" * 16)
        greeting = await caller.dial_in()
        asked = await caller.speak()
        read_back = await caller.speak()
        confirmed = await caller.speak()
        goodbye = await caller.speak()
        [booking] = await zylin.storage.bookings.list_bookings()
        log = await call_log(zylin, caller.call_sid)

    assert_records_again(greeting)
    assert greeting.said == example_profile().greeting
    for answer in (asked, read_back, confirmed):
        assert_records_again(answer)
    assert "Shall I book it?" in read_back.said
    assert confirmed.said.startswith("You're all set: a Cleaning on")
    assert f"Your confirmation code is {' '.join(booking.code)}." in confirmed.said
    assert goodbye.tags == ["Say", "Hangup"] and "Goodbye" in goodbye.said

    assert (booking.service, booking.customer_name, booking.customer_phone) == ("Cleaning", "Ann Lee", CALLER)
    assert booking.start_utc == local(day, 10).astimezone(UTC)
    assert booking.end_utc - booking.start_utc == timedelta(minutes=45)
    assert booking.call_sid == caller.call_sid

    # Every recording was fetched with the account's credentials; each 404'd once, then was served.
    assert [status for _, status in recordings.fetches] == [404, 200] * 4

    assert log["mode"] == "legacy" and log["status"] == "completed" and log["outcome"] == "booked"
    assert [b["code"] for b in log["bookings"]] == [booking.code]
    callers = [t for t in log["turns"] if t["speaker"] == "caller"]
    assert [t["text"] for t in callers] == script
    assert [t["idx"] for t in log["turns"]] == list(range(9))
    assert log["turns"][0]["text"] == greeting.said
    for turn in callers:
        assert turn["asr_ms"] is not None and turn["llm_ttft_ms"] is not None and turn["tool_ms"] is not None
        assert turn["first_audio_ms"] >= turn["asr_ms"]
    tools = [e["detail"]["name"] for e in log["events"] if e["kind"] == "tool"]
    assert tools == ["check_availability", "book_appointment", "end_call"]


# --- a transfer and a hang-up --------------------------------------------------------------------------

async def test_a_legacy_caller_who_asks_for_a_person_or_presses_zero_is_dialled_through(tmp_path):
    profile = str(profile_with_an_owner(tmp_path))
    script = ["Can I talk to a real person please?", "Please ask the dentist to call me back."]
    async with FakeRecordings().serving() as recordings, running_zylin(
            **recordings.host, **settings_for(script, business_profile=profile)) as zylin:
        asks = LegacyCaller(zylin, recordings, "CA" + "c1" * 16)
        await asks.dial_in()
        asked = await asks.speak()
        answered = await asks.post(DIAL_RESULT_PATH, asks.form(DialCallStatus="completed", DialCallDuration="42"))
        presses = LegacyCaller(zylin, recordings, "CA" + "c2" * 16)
        await presses.dial_in()
        pressed = await presses.press_zero()
        busy = await presses.post(DIAL_RESULT_PATH, presses.form(DialCallStatus="busy"))
        presses.recorded = 1   # the mock transcriber reads line 2 for this call's next recording
        thanks = await presses.speak()
        logs = [await call_log(zylin, c.call_sid) for c in (asks, presses)]

    for answer in (asked, pressed):
        # Nothing after </Dial>: the action decides what comes next, never Twilio's default voice.
        assert answer.tags == ["Say", "Dial"], answer.xml
        assert answer.said.startswith("Of course. I'm connecting you now")
        dial = answer.verb("Dial")
        assert dial.text == OWNER_PHONE and dial.get("action") == PUBLIC_URL + DIAL_RESULT_PATH
    assert [sid for sid, _ in recordings.fetches].count(f"RE{asks.call_sid[2:12]}{1:022d}") == 2
    assert not any(sid.startswith(f"RE{presses.call_sid[2:12]}{1:022d}") for sid, _ in recordings.fetches)
    # Answered: the call ends when the person hangs up, and the log says for how long they talked.
    assert answered.tags == [], answered.xml
    assert (logs[0]["status"], logs[0]["outcome"]) == ("completed", "transferred")
    assert {"status": "completed", "duration_s": 42} in [e["detail"] for e in logs[0]["events"]
                                                         if e["kind"] == "transfer_answered"]
    # Busy: Zylin takes the caller back in its own voice and offers a message.
    assert busy.tags == ["Say", "Record", "Redirect"], busy.xml
    assert busy.said.startswith("I'm sorry, I couldn't put you through: the line was busy.")
    assert thanks.said.startswith("Thank you, I've passed your message on.")
    assert any(e["kind"] == "transfer_failed" and e["detail"]["status"] == "busy" for e in logs[1]["events"])
    for log in logs:
        assert log["mode"] == "legacy"
        assert any(e["kind"] == "transfer" and e["detail"]["target"] == OWNER_PHONE for e in log["events"])
    assert any(e["kind"] == "dtmf" for e in logs[1]["events"])


async def test_a_legacy_caller_who_says_goodbye_is_hung_up_on():
    async with (FakeRecordings().serving() as recordings,
                running_zylin(**recordings.host, **settings_for(["That's all, bye!"])) as zylin):
        caller = LegacyCaller(zylin, recordings, "CA" + "d3" * 16)
        await caller.dial_in()
        goodbye = await caller.speak()
        log = await call_log(zylin, caller.call_sid)

    assert goodbye.tags == ["Say", "Hangup"], goodbye.xml
    assert goodbye.said == "Thanks for calling Bright Smile Dental. Goodbye!"
    assert (log["mode"], log["status"], log["outcome"]) == ("legacy", "completed", "none")
    assert [e["kind"] for e in log["events"]][-1] == "hang_up"


# --- a slow provider, silence, bad signatures ---------------------------------------------------------------

async def test_a_slow_brain_still_gets_an_answer_within_the_budget_and_the_caller_is_asked_again():
    async with FakeRecordings().serving() as recordings, running_zylin(
            **recordings.host, **settings_for(["What are your opening hours?"], mock_llm_delay_ms=5000,
                           legacy_response_budget_s=1.5)) as zylin:
        caller = LegacyCaller(zylin, recordings, "CA" + "e4" * 16)
        await caller.dial_in()
        slow = await caller.speak()
        log = await call_log(zylin, caller.call_sid)
        state = await zylin.storage.calls.legacy_state(caller.call_sid)

    assert slow.seconds < 1.5, f"answered after {slow.seconds:.2f} s"
    assert_records_again(slow)
    assert slow.said == TOO_SLOW
    [error] = [e for e in log["events"] if e["kind"] == "provider_error"]
    assert error["detail"]["provider"] == "llm"
    assert [t["text"] for t in log["turns"][1:]] == ["What are your opening hours?", TOO_SLOW]
    assert log["status"] == "in-progress"
    assert state["recordings"] == 1 and [m["role"] for m in state["history"]] == ["assistant"], \
        "the unanswered words are not in history: the caller says them again"


async def test_silence_is_asked_again_twice_then_a_message_is_offered_and_taken():
    message = "Please ask the dentist to call me back about my crown."
    async with (FakeRecordings().serving() as recordings,
                running_zylin(**recordings.host, **settings_for([message])) as zylin):
        caller = LegacyCaller(zylin, recordings, "CA" + "f5" * 16)
        await caller.dial_in()
        first = await caller.silence()
        second = await caller.speak(duration_s=0)
        offer = await caller.silence()
        taken = await caller.speak()
        [stored], _ = await zylin.storage.messages.list_messages()
        log = await call_log(zylin, caller.call_sid)

    for answer in (first, second):
        assert_records_again(answer)
        assert answer.said == REPROMPT
    assert_records_again(offer)
    assert offer.said == MESSAGE_OFFER
    assert_records_again(taken)
    assert taken.said.startswith("Thank you, I've passed your message on.")
    assert (stored.message, stored.phone, stored.call_sid) == (message, CALLER, caller.call_sid)
    assert [status for _, status in recordings.fetches] == [404, 200], "empty recordings are not fetched"
    assert [e["detail"]["misses"] for e in log["events"] if e["kind"] == "not_heard"] == [1, 2, 3]
    assert log["mode"] == "legacy" and [m["id"] for m in log["messages"]] == [stored.id]


async def test_legacy_webhooks_with_a_bad_signature_are_refused():
    async with (FakeRecordings().serving() as recordings,
                running_zylin(**recordings.host, **settings_for(["Hello"])) as zylin):
        caller = LegacyCaller(zylin, recordings, "CA" + "a6" * 16)
        forged = await caller.post(VOICE_PATH, caller.form(), signature="bm90IGEgc2lnbmF0dXJl")
        sid = "RE" + "0" * 32
        form = caller.form(RecordingUrl=recordings.recording_url(sid), RecordingDuration="3")
        signed_for_other = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + VOICE_PATH, form)
        replayed = await caller.post(RECORDING_PATH, form, signature=signed_for_other)
        calls, total = await zylin.storage.calls.list_calls()

    assert forged.status == 403 and replayed.status == 403
    assert total == 0 and not recordings.fetches


def test_a_real_transcriber_without_its_key_stops_start_up_and_the_keys_choose_one():
    import pytest

    from services.legacy.transcriber import MockTranscriber, OpenAITranscriber, build_transcriber
    from services.settings import ConfigError
    from tests.factories import make_settings

    with pytest.raises(ConfigError, match="LEGACY_TRANSCRIBER=deepgram needs DEEPGRAM_API_KEY"):
        build_transcriber(make_settings(use_mock_streaming=False, legacy_transcriber="deepgram"))
    assert isinstance(build_transcriber(make_settings()), MockTranscriber)
    chosen = build_transcriber(make_settings(use_mock_streaming=False, openai_api_key="sk-test"))
    assert isinstance(chosen, OpenAITranscriber) and chosen.model == "gpt-transcribe"


async def test_each_callback_may_reach_another_instance_the_history_is_in_the_shared_database(tmp_path):
    day = open_weekday()
    script = [f"I'd like a cleaning on {said(day)} at 10 am", "My name is Ann Lee", "Yes"]
    shared = dict(settings_for(script), database_url=f"sqlite+aiosqlite:///{tmp_path}/shared.db")
    async with FakeRecordings().serving() as recordings, running_zylin(**recordings.host, **shared) as one, \
            running_zylin(**recordings.host, **shared) as two:
        caller = LegacyCaller(one, recordings, "CA" + "97" * 16)
        answers = []
        for zylin, step in ((one, caller.dial_in), (two, caller.speak), (one, caller.speak), (two, caller.speak)):
            caller.zylin = zylin
            answers.append(await step())
        [booking] = await one.storage.bookings.list_bookings()

    assert "Shall I book it?" in answers[2].said
    assert answers[3].said.startswith("You're all set") and booking.customer_name == "Ann Lee"
    assert booking.call_sid == caller.call_sid
