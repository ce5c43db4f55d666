"""The deployed shape: `python main.py` as its own process with a production environment (Twilio
credentials and REST base, Deepgram and OpenAI keys and base URLs, a real database, an admin
token, an https PUBLIC_URL), every provider a wire-level fake on 127.0.0.1. A signed call books
an appointment, and the booking is read back from the JSON API."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from services.receptionist.lines import PHRASES
from services.simulator.caller import CallerLine
from tests.conftest import DATABASES
from tests.deployed import deployed_zylin, free_port, fresh_database_url, production_env
from tests.factories import AUTH_TOKEN, CALLER, PROVIDER_KEY, local, open_weekday, said
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_legacy_calls import wav_bytes
from tests.test_receptionist_calls import ScriptedReceptionist

# Which keys the owner set: both (Aura streaming speaks, OpenAI Realtime stands by), Deepgram only
# (Aura streaming, the offline brain), OpenAI only (the mock recognizer, OpenAI's Realtime voice).
# Every database with both keys; the one-key shapes once each.
SHAPES = [(db, "both") for db in DATABASES] + [(DATABASES[-1], "deepgram"), (DATABASES[-1], "openai")]


async def wait_for_call_end(deployed, call_sid: str, timeout_s: float = 15.0) -> dict:
    """The call as the JSON API shows it, once the server has recorded its end."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await deployed.api(f"/api/calls/{call_sid}")
        if response.status_code == 200 and response.json()["status"] != "in-progress":
            return response.json()
        assert asyncio.get_running_loop().time() < deadline, f"call not ended:\n{deployed.log}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("database,keys", SHAPES)
async def test_a_signed_call_books_an_appointment_on_the_deployed_server(database, keys):
    day = open_weekday()
    if keys == "deepgram":   # the offline brain asks for the name, then reads back and asks
        lines = [f"I'd like a cleaning on {said(day)} at 10 am", "My name is Ann Lee", "Yes"]
    else:
        lines = [f"Hi, I'd like a cleaning on {said(day)} at 10 am. My name is Ann Lee.", "Yes please, book it."]
    model = ScriptedReceptionist(day)
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as twilio, \
            FakeDeepgram(api_key=PROVIDER_KEY, script=lines) as deepgram, \
            FakeOpenAI(api_key=PROVIDER_KEY) as openai, fresh_database_url(database) as database_url:
        openai.chat_handler = model
        # The simulated caller's voice is a buzz shaped for the energy detector, which Silero rightly
        # does not take for speech; the neural VAD (the default, loaded at start-up in
        # test_start_up_says_what_is_really_running...) is tested on espeak-ng speech in test_silero_vad.py.
        env = production_env(database_url, free_port(), VAD="energy",
                             TWILIO_API_BASE_URL=twilio.url, DEEPGRAM_BASE_URL=deepgram.url,
                             OPENAI_BASE_URL=openai.base_url)
        if keys == "deepgram":
            env["OPENAI_API_KEY"] = ""
        elif keys == "openai":
            env["DEEPGRAM_API_KEY"] = ""
        async with deployed_zylin(env) as zylin:
            result = await zylin.caller(from_number=CALLER).call([CallerLine(t) for t in lines],
                                                                 mock_script=keys == "openai")
            call = await wait_for_call_end(zylin, result.call_sid)
            bookings = (await zylin.api("/api/bookings")).json()["bookings"]

    assert result.webhook_status == 200 and not result.timeouts and not result.protocol_errors, zylin.log
    assert deepgram.heard == ([] if keys == "openai" else lines)
    tools = [e["detail"]["name"] for e in call["events"] if e["kind"] == "tool"]
    assert tools == ["check_availability", "book_appointment"], zylin.log
    [booking] = bookings
    assert (booking["customer_name"], booking["customer_phone"], booking["call_sid"]) == \
        ("Ann Lee", CALLER, result.call_sid)
    assert booking["start_utc"] == local(day, 10).astimezone(UTC).isoformat()
    assert call["outcome"] == "booked"
    zylin_turns = [t for t in call["turns"] if t["speaker"] == "zylin"]
    confirmation = zylin_turns[-1]["text"]
    if keys != "deepgram":
        assert booking["code"] == model.tool_results["book_appointment"]["code"]
        assert confirmation.startswith(model.confirmation)   # the model's words...
    # ...said by the voice the keys choose, over the call's own connection: no REST, no Speech API.
    assert not openai.speech_requests
    for phrase in PHRASES:   # said from the phrase cache (rendered at start-up), not by the call's connection
        confirmation = confirmation.replace(f" {phrase}", "")
    spoken_by_aura = " ".join(t for session in deepgram.speak_sessions for t in session.speaks)
    spoken_by_openai = " ".join(r.text for session in openai.realtime.sessions for r in session.responses)
    if keys == "openai":
        assert confirmation in spoken_by_openai and not deepgram.speak_sessions
    else:
        assert confirmation in spoken_by_aura and not spoken_by_openai
        # with both keys the Realtime session stood by from the call's start, unused
        assert len(openai.realtime.sessions) == (1 if keys == "both" else 0)
    assert not [e for e in call["events"] if e["kind"] in ("tts_fallback", "provider_error")], zylin.log
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
