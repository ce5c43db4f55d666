"""The call log end to end: simulated calls through the real server land in the database and
read back through the JSON API, the HTML pages and the terminal view."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from twilio.request_validator import RequestValidator

from api.auth import access_banner
from main import startup_banner
from services.cli import show_calls
from services.receptionist.profile import load_profile
from services.simulator.caller import CallerLine
from services.storage.calls import TurnRow
from services.storage.models import utcnow
from tests.conftest import running_zylin
from tests.factories import AUTH_TOKEN, PUBLIC_URL

ADMIN = "owner-secret-token"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
LATENCY = ("asr_ms", "llm_ttft_ms", "tool_ms", "tts_ttfb_ms", "first_audio_ms", "heard_ms", "overhead_ms")


def local_today(days: int = 0) -> str:
    """A date in the business's time zone (the example profile's), as the filters read it."""
    return (datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=days)).isoformat()


def review(zylin, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=zylin.base_url, timeout=10, **kwargs)


async def test_calls_placed_through_the_server_read_back_through_the_json_api_and_the_pages():
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        questions = zylin.caller(from_number="+15550100001").call(
            [CallerLine("What are your opening hours?"), CallerLine("How much is a cleaning?")])
        message = zylin.caller(from_number="+15550100002").call(
            [CallerLine("Can I speak to a person?"),
             CallerLine("Please ask them to call me back about my crown.")])
        goodbye = zylin.caller(from_number="+15550100003").call([CallerLine("That's all, bye!")], hang_up=False)
        barge_in = zylin.caller(from_number="+15550100004", speed=1.0).call(
            [CallerLine("What are your opening hours?", pause_before_ms=100),
             CallerLine("Sorry, how much is a cleaning?", barge_in_after_ms=1500)])
        results = await asyncio.gather(questions, message, goodbye, barge_in)
        for result in results:
            await zylin.recorder.wait_ended(result.call_sid)
        questions, message, goodbye, barge_in = (r.call_sid for r in results)

        async with review(zylin, headers=BEARER) as http:
            listed = (await http.get("/api/calls")).json()
            only_messages = (await http.get("/api/calls", params={"outcome": "message"})).json()
            by_number = (await http.get("/api/calls", params={"caller": "(555) 010-0003"})).json()
            today = (await http.get("/api/calls", params={"from": local_today()})).json()
            tomorrow = (await http.get("/api/calls", params={"from": local_today(1)})).json()
            detail = (await http.get(f"/api/calls/{questions}")).json()
            cut = (await http.get(f"/api/calls/{barge_in}")).json()
            missing = await http.get("/api/calls/CA0000")
        async with review(zylin, auth=("owner", ADMIN)) as http:
            page = await http.get("/calls")
            call_page = await http.get(f"/calls/{questions}")
            cut_page = await http.get(f"/calls/{barge_in}")
            filtered_page = await http.get("/calls", params={"outcome": "none"})

    outcomes = {c["call_sid"]: c["outcome"] for c in listed["calls"]}
    assert listed["total"] == 4
    assert outcomes == {questions: "hung_up", message: "message", goodbye: "none", barge_in: "hung_up"}
    started = [c["started_at"] for c in listed["calls"]]
    assert started == sorted(started, reverse=True), "newest first"
    assert [c["call_sid"] for c in only_messages["calls"]] == [message]
    assert [c["call_sid"] for c in by_number["calls"]] == [goodbye]
    assert today["total"] == 4 and tomorrow["total"] == 0

    assert detail["from_number"] == "+15550100001" and detail["status"] == "completed"
    assert detail["end_reason"] == "stop event" and detail["greeting_ms"] is not None
    assert [t["text"] for t in detail["turns"] if t["speaker"] == "caller"] == [
        "What are your opening hours?", "How much is a cleaning?"]
    replies = [t["text"] for t in detail["turns"] if t["speaker"] == "zylin"]
    assert replies[0].startswith("Thanks for calling") and "$120" in replies[2]
    for turn in (t for t in detail["turns"] if t["speaker"] == "caller"):
        assert all(turn[field] is not None for field in LATENCY), turn
        assert turn["heard_ms"] > turn["first_audio_ms"] >= turn["asr_ms"]
    totals = detail["totals"]
    assert totals["turns"] == 5 and totals["caller_turns"] == 2
    assert totals["worst_first_audio_ms"] >= totals["median_first_audio_ms"] > 0
    assert missing.status_code == 404

    interrupted = [t for t in cut["turns"] if t["interrupted"]]
    assert interrupted and interrupted[0]["heard_text"].startswith("We're open")
    assert len(interrupted[0]["heard_text"]) < len(interrupted[0]["text"])
    assert any(e["kind"] == "barge_in" for e in cut["events"])

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for number in ("+15550100001", "+15550100002", "+15550100003"):
        assert number in page.text, "full numbers on the authenticated pages"
    assert "message" in page.text and "no action" in page.text
    html = call_page.text
    assert "What are your opening hours?" in html and "$120" in html
    assert html.count("<svg") == 2, "one latency bar per answered caller turn"
    assert "Median to first audio" in html and "Worst to first audio" in html
    assert 'class="unheard"' in cut_page.text and "interrupted by the caller; heard" in cut_page.text
    assert goodbye in filtered_page.text and questions not in filtered_page.text


async def test_review_needs_the_admin_token_as_basic_password_or_bearer():
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        async with review(zylin) as http:
            bare = [await http.get(path) for path in ("/calls", "/api/calls", "/bookings", "/api/messages")]
            wrong = await http.get("/api/calls", headers={"Authorization": "Bearer nope"})
            wrong_basic = await http.get("/calls", auth=("owner", "nope"))
            bearer = await http.get("/api/calls", headers=BEARER)
            basic = await http.get("/bookings", auth=("anyone", ADMIN))
    assert [r.status_code for r in bare] == [401, 401, 401, 401]
    assert bare[0].headers["www-authenticate"].startswith("Basic realm=")
    assert wrong.status_code == 401 and wrong_basic.status_code == 401
    assert bearer.status_code == 200 and basic.status_code == 200


async def test_without_a_token_review_is_served_only_to_this_machine_and_start_up_says_so():
    async with running_zylin(database=True, admin_token="") as zylin:
        async with review(zylin) as http:
            local = await http.get("/api/calls")
            proxied = await http.get("/calls", headers={"X-Forwarded-For": "203.0.113.7"})
        banner = "\n".join(startup_banner(zylin.settings, load_profile(zylin.settings.business_profile)))
    assert local.status_code == 200
    assert proxied.status_code == 403 and "ADMIN_TOKEN" in proxied.text
    assert access_banner("") in banner and "only to this machine" in banner


async def test_the_status_callback_is_signed_and_records_twilios_duration():
    async with running_zylin(database=True) as zylin:
        result = await zylin.caller().call([CallerLine("Hello")])
        await zylin.recorder.wait_ended(result.call_sid)
        form = {"CallSid": result.call_sid, "CallStatus": "completed", "CallDuration": "7",
                "From": "+15551230001", "To": "+15559870000"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/api/twilio/status", form)
        async with review(zylin) as http:
            forged = await http.post("/api/twilio/status", data=form, headers={"X-Twilio-Signature": "bad"})
            no_sid = await http.post("/api/twilio/status", content=b"", headers={  # an empty form
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
                    PUBLIC_URL + "/api/twilio/status", {})})
            signed = await http.post("/api/twilio/status", data=form, headers={"X-Twilio-Signature": signature})
            never_streamed = {**form, "CallSid": "CA" + "e" * 32, "CallDuration": "2"}
            await http.post("/api/twilio/status", data=never_streamed, headers={
                "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
                    PUBLIC_URL + "/api/twilio/status", never_streamed)})
            stored = (await http.get(f"/api/calls/{result.call_sid}")).json()
            short = (await http.get(f"/api/calls/{'CA' + 'e' * 32}")).json()
    assert forged.status_code == 403 and no_sid.status_code == 400 and signed.status_code == 204
    assert stored["duration_s"] == 7 and stored["twilio_status"] == "completed"
    assert stored["end_reason"] == "stop event", "the session's own ending is kept"
    assert (short["status"], short["outcome"], short["duration_s"]) == ("completed", "hung_up", 2)


async def test_bookings_and_messages_of_a_call_show_on_their_pages_and_on_the_call():
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        result = await zylin.caller(from_number="+15550100009").call([CallerLine("Hello")])
        await zylin.recorder.wait_ended(result.call_sid)
        runtime_storage = zylin.storage
        start = (utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        booked = await runtime_storage.bookings.create_booking(
            service="Cleaning", start_utc=start, end_utc=start + timedelta(minutes=30),
            customer_name="Ann Lee", customer_phone="+15550100009", step_minutes=15, call_sid=result.call_sid)
        past = await runtime_storage.bookings.create_booking(
            service="Checkup", start_utc=start - timedelta(days=5), end_utc=start - timedelta(days=5, minutes=-30),
            customer_name="Old", customer_phone="+15550100009", step_minutes=15)
        await runtime_storage.messages.save_message(message="Call me about my crown", name="Ann Lee",
                                                    phone="+15550100009", urgency="urgent", call_sid=result.call_sid)
        async with review(zylin, headers=BEARER) as http:
            bookings = (await http.get("/api/bookings")).json()
            by_phone = (await http.get("/api/bookings", params={"caller": "5550100009", "from": "2000-01-01"})).json()
            messages = (await http.get("/api/messages", params={"caller": "0100009"})).json()
            bookings_page = (await http.get("/bookings")).text
            messages_page = (await http.get("/messages")).text
            call_page = (await http.get(f"/calls/{result.call_sid}")).text
    assert [b["code"] for b in bookings["bookings"]] == [booked.code], "upcoming only"
    assert {b["code"] for b in by_phone["bookings"]} == {booked.code, past.code}
    assert bookings["bookings"][0]["call_sid"] == result.call_sid
    assert messages["total"] == 1 and messages["messages"][0]["urgency"] == "urgent"
    assert booked.code in bookings_page and "Ann Lee" in bookings_page and "+15550100009" in bookings_page
    assert "Call me about my crown" in messages_page
    assert booked.code in call_page and "Call me about my crown" in call_page


async def test_bad_filters_get_a_clear_400():
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        async with review(zylin, headers=BEARER) as http:
            bad_date = await http.get("/api/calls", params={"from": "yesterday"})
            bad_outcome = await http.get("/api/calls", params={"outcome": "maybe"})
            bad_page = await http.get("/calls", params={"page": "two"})
    assert bad_date.status_code == 400 and "from='yesterday'" in bad_date.json()["error"]
    assert bad_outcome.status_code == 400 and "booked" in bad_outcome.json()["error"]
    assert bad_page.status_code == 400 and "page=" in bad_page.text


async def test_the_terminal_view_lists_calls_and_prints_a_transcript_with_latency(capsys):
    async with running_zylin(database=True) as zylin:
        result = await zylin.caller(from_number="+15550100077").call([CallerLine("What are your opening hours?")])
        await zylin.recorder.wait_ended(result.call_sid)
        assert await show_calls(zylin.settings, None) == 0
        table = capsys.readouterr().out
        assert await show_calls(zylin.settings, result.call_sid, full_numbers=True) == 0
        transcript = capsys.readouterr().out
        assert await show_calls(zylin.settings, "CA404") == 1
    assert result.call_sid in table and "hung_up" in table
    assert "+15550100077" not in table and "+1*******077" in table, "masked unless asked"
    assert "+15550100077" in transcript
    assert "Caller: What are your opening hours?" in transcript and "Zylin : We're open" in transcript
    assert "latency ms: asr" in transcript and "first_audio" in transcript


@pytest.mark.parametrize("path", ["/calls", "/api/calls"])
async def test_a_fresh_database_shows_an_empty_call_log(path):
    async with running_zylin(database=True) as zylin:
        async with review(zylin) as http:
            response = await http.get(path)
    assert response.status_code == 200
    assert ("No calls yet" in response.text) if path == "/calls" else response.json()["total"] == 0


async def test_what_a_caller_said_is_shown_as_text_never_as_markup():
    async with running_zylin(database=True) as zylin:
        sid = "CA" + "d" * 32
        await zylin.storage.calls.open_call(sid, caller="+15550100055")
        await zylin.storage.calls.add_turn(sid, TurnRow(0, "caller", "<script>alert('hi')</script>", utcnow()))
        await zylin.storage.calls.add_event(sid, "interruption_ignored", {
            "why": "backchannel", "words": "<b>mm-hm</b>", "speech_ms": 420}, utcnow())
        await zylin.storage.calls.add_event(sid, "barge_in", {"why": "interrupting word", "heard": "We're"},
                                            utcnow())
        async with review(zylin) as http:
            page = (await http.get(f"/calls/{sid}")).text
            listing = (await http.get("/calls")).text
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<script>alert" not in listing
    assert "Zylin talked on (backchannel, 420 ms): “&lt;b&gt;mm-hm&lt;/b&gt;”" in page
    assert "Zylin stopped for the caller (interrupting word)" in page


UNREADABLE = [  # (parameter, value, what the 400 says): each was an HTTP 500
    ("page", "²", "whole number"),                        # str.isdigit() is true, int() fails
    ("per_page", "1" * 5000, None),                       # more digits than int() will read: clamped
    ("to", "9999-12-31", "out of range"),                 # the end of that day is after year 9999
    ("from", "0001-01-01T00:00+14:00", "out of range"),   # before year 1 in UTC
    ("to", "9999-12-31T23:00-05:00", "out of range"),
]


@pytest.mark.parametrize("path", ["/calls", "/api/calls", "/messages", "/api/messages",
                                  "/bookings", "/api/bookings"])
async def test_filters_out_of_range_get_a_400_that_says_why_never_a_500(path):
    paged = "bookings" not in path  # bookings are not paged: page and per_page do not apply
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        async with review(zylin, headers=BEARER) as http:
            responses = [(name, value, reason, await http.get(path, params={name: value}))
                         for name, value, reason in UNREADABLE if paged or "page" not in name]
    for name, value, reason, response in responses:
        if reason is None:
            assert response.status_code == 200, (name, response.text)
            continue
        assert response.status_code == 400, (name, value, response.status_code)
        said = response.json()["error"] if path.startswith("/api/") else response.text
        assert f"{name}=" in said and reason in said, said


async def test_out_of_order_status_callbacks_through_the_server_never_undo_the_final_status():
    def signed(form: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
            PUBLIC_URL + "/api/twilio/status", form)}

    async with running_zylin(database=True) as zylin:
        result = await zylin.caller().call([CallerLine("Hello")])
        await zylin.recorder.wait_ended(result.call_sid)
        base = {"CallSid": result.call_sid, "From": "+15551230001", "To": "+15559870000"}
        arrivals = [{**base, "CallStatus": "completed", "CallDuration": "7"},
                    {**base, "CallStatus": "ringing"}, {**base, "CallStatus": "in-progress"},
                    {**base, "CallStatus": "canceled", "CallDuration": "1"}]
        async with review(zylin) as http:
            answers = [(await http.post("/api/twilio/status", data=form, headers=signed(form))).status_code
                       for form in arrivals]
            stored = (await http.get(f"/api/calls/{result.call_sid}")).json()
    assert answers == [204] * len(arrivals), "Twilio is told every callback was received"
    assert (stored["twilio_status"], stored["duration_s"]) == ("completed", 7)
    assert (stored["status"], stored["end_reason"]) == ("completed", "stop event")
