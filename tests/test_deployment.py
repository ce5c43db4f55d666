"""The deployed shape: `python main.py` as its own process with a production environment (Twilio
credentials and REST base, Deepgram and OpenAI keys and base URLs, a real database, an admin
token, an https PUBLIC_URL), every provider a wire-level fake on 127.0.0.1. A signed call books
an appointment, and the booking is read back from the JSON API."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from services.simulator.caller import CallerLine
from tests.conftest import DATABASES
from tests.deployed import deployed_zylin, free_port, fresh_database_url, production_env
from tests.factories import AUTH_TOKEN, CALLER, PROVIDER_KEY, local, open_weekday, said
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_legacy_calls import wav_bytes
from tests.test_receptionist_calls import ScriptedReceptionist

# Every database with the automatic voice (Aura, as both keys are set); OpenAI's voice once.
SHAPES = [(db, "deepgram") for db in DATABASES] + [(DATABASES[-1], "openai")]


async def wait_for_call_end(deployed, call_sid: str, timeout_s: float = 15.0) -> dict:
    """The call as the JSON API shows it, once the server has recorded its end."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await deployed.api(f"/api/calls/{call_sid}")
        if response.status_code == 200 and response.json()["status"] != "in-progress":
            return response.json()
        assert asyncio.get_running_loop().time() < deadline, f"call not ended:\n{deployed.log}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("database,voice", SHAPES)
async def test_a_signed_call_books_an_appointment_on_the_deployed_server(database, voice):
    day = open_weekday()
    lines = [f"Hi, I'd like a cleaning on {said(day)} at 10 am. My name is Ann Lee.", "Yes please, book it."]
    model = ScriptedReceptionist(day)
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as twilio, \
            FakeDeepgram(api_key=PROVIDER_KEY, script=lines) as deepgram, \
            FakeOpenAI(api_key=PROVIDER_KEY) as openai, fresh_database_url(database) as database_url:
        openai.chat_handler = model
        # The simulated caller's voice is a buzz shaped for the energy detector, which Silero rightly
        # does not take for speech; the neural VAD (the default, loaded at start-up in
        # test_start_up_says_what_is_really_running...) is tested on espeak-ng speech in test_silero_vad.py.
        env = production_env(database_url, free_port(), TTS_PROVIDER=voice, VAD="energy",
                             TWILIO_API_BASE_URL=twilio.url, DEEPGRAM_BASE_URL=deepgram.url,
                             OPENAI_BASE_URL=openai.base_url)
        async with deployed_zylin(env) as zylin:
            result = await zylin.caller(from_number=CALLER).call([CallerLine(t) for t in lines],
                                                                 mock_script=False)
            call = await wait_for_call_end(zylin, result.call_sid)
            bookings = (await zylin.api("/api/bookings")).json()["bookings"]

    assert result.webhook_status == 200 and not result.timeouts and not result.protocol_errors, zylin.log
    assert deepgram.heard == lines
    tools = [e["detail"]["name"] for e in call["events"] if e["kind"] == "tool"]
    assert tools == ["check_availability", "book_appointment"], zylin.log
    [booking] = bookings
    assert booking["code"] == model.tool_results["book_appointment"]["code"]
    assert (booking["customer_name"], booking["customer_phone"], booking["call_sid"]) == \
        ("Ann Lee", CALLER, result.call_sid)
    assert booking["start_utc"] == local(day, 10).astimezone(UTC).isoformat()
    assert call["outcome"] == "booked"
    # The confirmation the caller heard came from the model, in the voice chosen.
    zylin_turns = [t for t in call["turns"] if t["speaker"] == "zylin"]
    assert zylin_turns[-1]["text"].startswith(model.confirmation)
    if voice == "deepgram":
        assert deepgram.speak_requests and not openai.speech_requests
    else:
        assert openai.speech_requests and not deepgram.speak_requests
    assert "RuntimeError" not in zylin.log and "Traceback" not in zylin.log, zylin.log


async def test_start_up_says_what_is_really_running_once_the_socket_is_bound():
    port = free_port()
    async with FakeOpenAI(api_key=PROVIDER_KEY) as openai, fresh_database_url("sqlite") as database_url:
        env = production_env(database_url, port, PUBLIC_URL="", DEEPGRAM_API_KEY="", TWILIO_ACCOUNT_SID="",
                             TWILIO_AUTH_TOKEN="", OPENAI_BASE_URL=openai.base_url)
        async with deployed_zylin(env) as zylin:
            health = await zylin.api("/health")
        log = zylin.log

    assert health.status_code == 200
    listening = [line for line in zylin.output if "Zylin listening on" in line]
    assert len(listening) == 1 and f"127.0.0.1:{port}" in listening[0]
    assert "asr=mock, llm=openai, tts=openai" in listening[0]
    # PUBLIC_URL left empty is this server on its real port, not a fixed 8000.
    assert f"http://localhost:{port}/api/twilio/voice" in log
    assert "Business profile: Bright Smile Dental" in log
    assert "ASR runs on the offline mock: set DEEPGRAM_API_KEY" in log
    assert "owner_phone is empty" in log and "owner_sms is empty" in log
    # A fresh database was migrated, but Alembic's own INFO lines stay out of the log.
    assert "alembic" not in log.lower()


async def test_a_record_mode_call_books_an_appointment_on_the_deployed_server():
    day = open_weekday()
    lines = [f"Hi, I'd like a cleaning on {said(day)} at 10 am. My name is Ann Lee.", "Yes please, book it."]
    model = ScriptedReceptionist(day)
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as twilio, FakeDeepgram(api_key=PROVIDER_KEY) as deepgram, \
            FakeOpenAI(api_key=PROVIDER_KEY) as openai, fresh_database_url(DATABASES[-1]) as database_url:
        openai.chat_handler = model
        deepgram.recorded_script.extend(lines)
        env = production_env(database_url, free_port(), LEGACY_TRANSCRIBER="deepgram",
                             TWILIO_API_BASE_URL=twilio.url, DEEPGRAM_BASE_URL=deepgram.url,
                             OPENAI_BASE_URL=openai.base_url)
        async with deployed_zylin(env) as zylin:
            caller = zylin.caller(from_number=CALLER)
            call_sid = "CA" + "e4" * 16
            form = {"CallSid": call_sid, "AccountSid": twilio.account_sid, "From": CALLER,
                    "To": "+15559870000", "CallStatus": "in-progress", "Direction": "inbound"}
            greeting = await caller.post_signed("/api/twilio/voice-legacy", form)
            answers = []
            for n, _ in enumerate(lines, start=1):
                sid = f"RE{n:032d}"
                twilio.recordings[sid] = wav_bytes()
                answers.append(await caller.post_signed("/api/twilio/voice-legacy/recording", {
                    **form, "RecordingUrl": twilio.recording_url(sid), "RecordingSid": sid,
                    "RecordingDuration": "3"}))
            call = (await zylin.api(f"/api/calls/{call_sid}")).json()
            bookings = (await zylin.api("/api/bookings")).json()["bookings"]

    assert greeting.status_code == 200 and "<Record" in greeting.text, zylin.log
    assert [a.status_code for a in answers] == [200, 200], zylin.log
    assert [sid for sid, status in twilio.recording_fetches if status == 200] == ["RE" + "1".zfill(32),
                                                                                  "RE" + "2".zfill(32)]
    assert len(deepgram.transcribe_requests) == 2
    tools = [e["detail"]["name"] for e in call["events"] if e["kind"] == "tool"]
    assert tools == ["check_availability", "book_appointment"], zylin.log
    [booking] = bookings
    assert booking["code"] == model.tool_results["book_appointment"]["code"]
    assert booking["call_sid"] == call_sid and booking["customer_phone"] == CALLER
    assert model.confirmation in answers[-1].text
