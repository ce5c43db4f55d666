"""Twilio retries webhooks: the same callback delivered twice at once, to two instances on one
database, acts once (one booking, one message) and both deliveries get the same TwiML."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import DATABASES, running_zylin
from tests.deployed import fresh_database_url
from tests.factories import open_weekday, said
from tests.test_legacy_calls import FakeRecordings, LegacyCaller, settings_for


@contextlib.asynccontextmanager
async def two_instances(kind: str, script: list[str]) -> AsyncIterator[tuple]:
    async with fresh_database_url(kind) as url, FakeRecordings().serving() as recordings:
        shared = dict(settings_for(script), database_url=url, **recordings.host)
        async with running_zylin(**shared) as one, running_zylin(**shared) as two:
            yield one, two, recordings


async def both_at_once(caller: LegacyCaller, one, two):
    """The next recording's callback, delivered to both instances at the same moment."""
    caller.recorded += 1
    sid = f"RE{caller.call_sid[2:12]}{caller.recorded:022d}"
    form = caller.form(RecordingUrl=caller.recordings.recording_url(sid), RecordingSid=sid,
                       RecordingDuration="3", Digits="")
    first, second = LegacyCaller(one, caller.recordings, caller.call_sid), LegacyCaller(two, caller.recordings,
                                                                                         caller.call_sid)
    return await asyncio.gather(first.post("/api/twilio/voice-legacy/recording", form),
                                second.post("/api/twilio/voice-legacy/recording", form))


@pytest.mark.parametrize("kind", DATABASES)
async def test_a_booking_callback_delivered_twice_at_once_books_once(kind):
    day = open_weekday()
    script = [f"I'd like a cleaning on {said(day)} at 10 am", "My name is Ann Lee", "Yes"]
    async with two_instances(kind, script) as (one, two, recordings):
        caller = LegacyCaller(one, recordings, "CA" + "a1" * 16)
        await caller.dial_in()
        await caller.speak()
        await caller.speak()
        answers = await both_at_once(caller, one, two)
        bookings = await one.storage.bookings.list_bookings()
        detail = await one.storage.calls.get_call(caller.call_sid)

    assert len(bookings) == 1, bookings
    assert answers[0].xml == answers[1].xml and answers[0].said.startswith("You're all set")
    tools = [e.detail["name"] for e in detail.events if e.kind == "tool"]
    assert tools.count("book_appointment") == 1
    assert [t.text for t in detail.turns].count("Yes") == 1


@pytest.mark.parametrize("kind", DATABASES)
async def test_a_message_callback_delivered_twice_at_once_leaves_one_message(kind):
    message = "Please ask the dentist to call me back about my crown."
    async with two_instances(kind, ["Can I leave a message please?", message]) as (one, two, recordings):
        caller = LegacyCaller(one, recordings, "CA" + "b2" * 16)
        await caller.dial_in()
        await caller.speak()
        answers = await both_at_once(caller, one, two)
        messages, total = await one.storage.messages.list_messages()

    assert total == 1 and messages[0].message == message
    assert answers[0].xml == answers[1].xml and answers[0].said.startswith("Thank you, I've passed your message on.")


@pytest.mark.parametrize("kind", DATABASES)
async def test_a_dial_outcome_delivered_twice_is_logged_once(kind, tmp_path):
    async with two_instances(kind, []) as (one, two, recordings):
        caller = LegacyCaller(one, recordings, "CA" + "c3" * 16)
        await caller.dial_in()
        form = caller.form(DialCallStatus="busy")
        first, second = await asyncio.gather(
            LegacyCaller(one, recordings, caller.call_sid).post("/api/twilio/voice-legacy/dial-result", form),
            LegacyCaller(two, recordings, caller.call_sid).post("/api/twilio/voice-legacy/dial-result", form))
        detail = await one.storage.calls.get_call(caller.call_sid)

    assert first.xml == second.xml and first.said.startswith("I'm sorry, I couldn't put you through")
    assert [e.kind for e in detail.events].count("transfer_failed") == 1
