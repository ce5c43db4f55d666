"""The booking tools as the brains call them, on a real database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set): what the caller is offered, what is refused and why, what lands in
the database, and that every side effect (a booking, an SMS) happens once.

The business is the shipped example profile (New York, Monday-Friday, two chairs, a 15-minute
grid, an hour's notice, 60 days ahead). The call's clock reads Monday 23 November 2026 at
8:30 am, before the day's first bookable slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.llm.base import ToolCall
from services.receptionist.profile import BusinessProfile, parse_profile
from services.receptionist.tool_types import CallContext
from services.receptionist.tools import Toolbox
from services.storage import BookingRecord, Database, Storage
from services.storage.bookings import CODE_ALPHABET, CODE_LENGTH
from services.telephony.rest import TwilioTelephony
from tests.conftest import ROOT
from tests.fakes.twilio_rest import FakeTwilioRest

NEW_YORK = ZoneInfo("America/New_York")
EXAMPLE = tomllib.loads((ROOT / "business.example.toml").read_text())
CALLER = "+15559876543"
OWNER_SMS = "+15551230000"
SMS_FROM = "+15550009999"
MONDAY_0830 = datetime(2026, 11, 23, 8, 30, tzinfo=NEW_YORK)
TUESDAY = "2026-11-24"                      # open 9-5, nothing booked yet
CLEANING = {"service": "Cleaning", "start": f"{TUESDAY}T10:00", "customer_name": "Ann Lee"}


def example_profile(**changes) -> BusinessProfile:
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return parse_profile(data)


PROFILE = example_profile()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def storage(database: Database) -> Storage:
    return Storage(database)


def toolbox(storage: Storage | None, *, phone: str = CALLER, profile: BusinessProfile = PROFILE,
            now: datetime = MONDAY_0830, telephony: TwilioTelephony | None = None,
            sms_confirmations: bool = False) -> Toolbox:
    """The tools of one call from `phone`, with the call's clock stopped at `now`."""
    return Toolbox(CallContext(call_sid="CA" + secrets.token_hex(16), caller_phone=phone, profile=profile,
                               can_transfer=False, storage=storage, telephony=telephony,
                               sms_confirmations=sms_confirmations, clock=lambda: now))


async def run(tools: Toolbox, name: str, /, **arguments) -> dict:
    """One tool call as a brain makes it (each with a fresh call id)."""
    result = await tools.run(ToolCall(f"call_{secrets.token_hex(6)}", name, arguments))
    return result.data


async def side_work_done(tools: Toolbox) -> None:
    """Wait for the SMS the tools sent off in the background, so the call can be checked."""
    while tools.ctx._side_work:
        await asyncio.gather(*list(tools.ctx._side_work))


async def existing_booking(storage: Storage, start: str, *, phone: str = "+15550001111",
                           name: str = "Earlier Caller", minutes: int = 45) -> BookingRecord:
    """A booking made before this call, at local time `start` ("YYYY-MM-DDTHH:MM")."""
    at = datetime.fromisoformat(start).replace(tzinfo=NEW_YORK).astimezone(UTC)
    return await storage.bookings.create_booking(
        service="Cleaning", start_utc=at, end_utc=at + timedelta(minutes=minutes), customer_name=name,
        customer_phone=phone, step_minutes=15, lanes=PROFILE.booking.capacity)


async def active_bookings(storage: Storage) -> list[BookingRecord]:
    return await storage.bookings.list_bookings()


# --- check_availability --------------------------------------------------------------------------

async def test_free_times_are_listed_in_the_business_s_local_time(storage):
    data = await run(toolbox(storage), "check_availability", service="cleaning", date=TUESDAY)

    assert data["ok"] is True and data["service"] == "Cleaning" and data["duration_min"] == 45
    slots = data["slots"]
    assert 1 < len(slots) <= 6 and all(s.startswith(TUESDAY + "T") for s in slots)
    # 9 am opening and the last 45 minutes before 5 pm, as the clock on the wall reads them
    assert slots[0] == f"{TUESDAY}T09:00" and slots[-1] == f"{TUESDAY}T16:15"
    assert data["spoken"].startswith("Free for a cleaning on Tuesday, November 24: 9 am, ")
    assert data["spoken"].endswith(" or 4:15 pm.")
    assert data["alternatives"] == [] and data["requested"] is None


@pytest.mark.parametrize("part, first, last", [("morning", "09:00", "11:45"),
                                               ("afternoon", "12:00", "16:15"),
                                               ("evening", None, None)])
async def test_a_part_of_the_day_narrows_the_free_times(storage, part, first, last):
    data = await run(toolbox(storage), "check_availability", service="Cleaning", date=TUESDAY,
                     part_of_day=part)

    assert data["ok"] is True
    if first is None:  # closed by 5 pm: nothing in the evening, so the nearest times instead
        assert data["slots"] == [] and data["alternatives"]
        return
    assert data["slots"][0] == f"{TUESDAY}T{first}" and data["slots"][-1] == f"{TUESDAY}T{last}"
    hours = {"morning": range(0, 12), "afternoon": range(12, 17)}[part]
    assert all(int(s[11:13]) in hours for s in data["slots"])


async def test_a_free_requested_time_is_confirmed_as_free(storage):
    data = await run(toolbox(storage), "check_availability", service="Cleaning", date=TUESDAY, time="10:30")

    assert data["requested"] == f"{TUESDAY}T10:30" and data["requested_free"] is True
    assert data["spoken"] == "Tuesday, November 24 at 10:30 am is free for a cleaning."
    assert data["alternatives"] == []


async def test_a_taken_requested_time_comes_with_the_nearest_free_alternatives(storage):
    for name in ("First Chair", "Second Chair"):  # both chairs from 10:00 to 10:45
        await existing_booking(storage, f"{TUESDAY}T10:00", name=name)

    data = await run(toolbox(storage), "check_availability", service="Cleaning", date=TUESDAY, time="10:00")

    assert data["ok"] is True and data["requested_free"] is False
    assert "isn't possible: that time is already taken" in data["spoken"]
    alternatives = data["alternatives"]
    assert {f"{TUESDAY}T09:15", f"{TUESDAY}T10:45"} <= set(alternatives) and len(alternatives) == 3
    for start in alternatives:  # a cleaning there does not overlap 10:00-10:45
        at = datetime.fromisoformat(start)
        assert start[:10] == TUESDAY and abs(at - datetime.fromisoformat(f"{TUESDAY}T10:00")) >= timedelta(minutes=45)
    assert "The nearest free times are Tuesday, November 24: " in data["spoken"]
    assert f"{TUESDAY}T10:00" not in data["slots"] and f"{TUESDAY}T09:30" not in data["slots"]


@pytest.mark.parametrize("closed_day, spoken_day", [("2026-11-28", "Saturday, November 28"),
                                                    ("2026-12-25", "Friday, December 25")],
                         ids=["weekend", "holiday"])
async def test_a_closed_day_offers_alternatives_on_open_days(storage, closed_day, spoken_day):
    data = await run(toolbox(storage), "check_availability", service="Cleaning", date=closed_day)

    assert data["ok"] is True and data["slots"] == []
    assert data["spoken"].startswith(f"Nothing is free for a cleaning on {spoken_day}.")
    assert data["alternatives"], "a closed day still gets something to offer"
    for start in data["alternatives"]:
        day = date.fromisoformat(start[:10])
        assert day.isoformat() != closed_day and PROFILE.open_span(day) is not None


async def test_an_unknown_service_is_refused_with_the_services_offered(storage):
    data = await run(toolbox(storage), "check_availability", service="Root canal", date=TUESDAY)

    assert data == {"ok": False, "reason": "we don't offer that service",
                    "services": ["Cleaning", "Whitening", "Consultation"]}


# --- book_appointment ------------------------------------------------------------------------------

async def test_a_booking_is_stored_in_utc_with_the_caller_s_number_and_a_confirmation_code(storage):
    data = await run(toolbox(storage), "book_appointment", **CLEANING)

    assert data["ok"] is True
    code = data["code"]
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
    assert data["start"] == f"{TUESDAY}T10:00" and data["spoken_start"] == "Tuesday, November 24 at 10 am"
    [stored] = await active_bookings(storage)
    assert stored.code == code and stored.status == "booked"
    assert (stored.service, stored.customer_name, stored.customer_phone) == ("Cleaning", "Ann Lee", CALLER)
    assert stored.start_utc == utc(2026, 11, 24, 15, 0) and stored.end_utc == utc(2026, 11, 24, 15, 45)


async def test_a_number_the_caller_gives_is_used_instead_of_the_one_calling(storage):
    data = await run(toolbox(storage), "book_appointment", **CLEANING, customer_phone="+1 (555) 010-2020")

    assert data["ok"] is True
    assert (await storage.bookings.get_booking(data["code"])).customer_phone == "+15550102020"


@pytest.mark.parametrize("change, reason", [
    ({"start": "2026-11-20T10:00"}, "that time is in the past"),
    ({"start": "2026-11-23T09:00"}, "we need at least 60 minutes' notice for a booking"),
    ({"start": "2027-01-25T10:00"}, "we only take bookings up to 60 days ahead"),
    ({"start": f"{TUESDAY}T08:00"}, "a cleaning at 8 am doesn't fit our opening hours that day"),
    ({"start": f"{TUESDAY}T16:30"}, "a cleaning at 4:30 pm doesn't fit our opening hours that day"),
    ({"start": f"{TUESDAY}T10:10"}, "appointments start every 15 minutes"),   # off the grid
    ({"start": "2026-11-28T10:00"}, "we're closed on Saturday, November 28"),
    ({"start": "2026-12-25T10:00"}, "we're closed on Friday, December 25"),
], ids=["past", "too-soon", "too-far-ahead", "before-opening", "runs-past-closing", "off-grid",
        "weekend", "holiday"])
async def test_a_time_that_cannot_be_booked_is_refused_with_a_reason_and_alternatives(storage, change, reason):
    data = await run(toolbox(storage), "book_appointment", **{**CLEANING, **change})

    assert data["ok"] is False and reason in data["reason"]
    assert data["alternatives"], "the caller is offered times that can be booked"
    for start in data["alternatives"]:
        at = datetime.fromisoformat(start).replace(tzinfo=NEW_YORK)
        assert at >= MONDAY_0830 + timedelta(minutes=60) and PROFILE.open_span(at.date()) is not None
    assert await active_bookings(storage) == []



@pytest.mark.parametrize("wanted, full_day", [("2027-03-01T10:00", "2027-01-22"), ("2026-10-01T10:00", "2026-11-23")],
                         ids=["beyond-the-horizon", "long-past"])
async def test_the_alternatives_to_a_time_far_outside_the_bookable_days_are_really_free(storage, wanted, full_day):
    opening = PROFILE.open_span(date.fromisoformat(full_day))
    all_day = (opening.closes.hour - opening.opens.hour) * 60
    for name in ("First Chair", "Second Chair"):   # the bookable day nearest the wish is full
        await existing_booking(storage, f"{full_day}T{opening.opens:%H:%M}", name=name, minutes=all_day)
    tools = toolbox(storage)

    data = await run(tools, "book_appointment", **{**CLEANING, "start": wanted})

    assert data["ok"] is False and data["alternatives"]
    for start in data["alternatives"]:
        check = await run(tools, "check_availability", service="Cleaning", date=start[:10], time=start[11:])
        assert check["requested_free"] is True, f"{start} was offered as free: {check['spoken']}"


@pytest.mark.parametrize("time", ["9:00", "3pm"])
async def test_a_time_the_tool_cannot_read_is_not_blamed_on_the_clocks_changing(storage, time):
    data = await run(toolbox(storage), "check_availability", service="Cleaning", date=TUESDAY, time=time)

    assert "clocks change" not in data.get("reason", ""), data


@pytest.mark.parametrize("change, reason", [
    ({"customer_name": "  "}, "I need the caller's name for the booking"),
    ({"service": "Root canal"}, "we don't offer that service"),
    ({"start": "next Tuesday at ten"}, "I need the time as HH:MM, for example 15:30"),
], ids=["no-name", "unknown-service", "unreadable-start"])
async def test_a_booking_missing_what_it_needs_is_refused_with_what_to_ask(storage, change, reason):
    data = await run(toolbox(storage), "book_appointment", **{**CLEANING, **change})

    assert data["ok"] is False and data["reason"] == reason
    assert await active_bookings(storage) == []


async def test_the_notice_and_the_horizon_are_bookable_right_up_to_their_limits(storage):
    tools = toolbox(storage)
    an_hour_from_now = await run(tools, "book_appointment", **{**CLEANING, "start": "2026-11-23T09:30"})
    sixty_days_ahead = await run(tools, "book_appointment", **{**CLEANING, "start": "2027-01-22T10:00"})

    assert an_hour_from_now["ok"] is True and sixty_days_ahead["ok"] is True
    assert len(await active_bookings(storage)) == 2


async def test_a_taken_time_is_refused_with_alternatives_and_nothing_more_is_stored(storage):
    for name in ("First Chair", "Second Chair"):
        await existing_booking(storage, f"{TUESDAY}T10:00", name=name)

    data = await run(toolbox(storage), "book_appointment", **CLEANING)

    assert data["ok"] is False and "taken" in data["reason"]
    assert data["alternatives"] and f"{TUESDAY}T10:00" not in data["alternatives"]
    assert len(await active_bookings(storage)) == 2


async def test_the_two_chairs_take_two_overlapping_bookings(storage):
    tools = toolbox(storage)
    first = await run(tools, "book_appointment", **CLEANING)
    second = await run(tools, "book_appointment", **{**CLEANING, "customer_name": "Bob Lee",
                                                     "start": f"{TUESDAY}T10:15"})
    third = await run(tools, "book_appointment", **{**CLEANING, "customer_name": "Cy Lee",
                                                    "start": f"{TUESDAY}T10:30"})

    assert first["ok"] and second["ok"] and first["code"] != second["code"]
    assert third["ok"] is False and "taken" in third["reason"]


# --- a side effect happens once ---------------------------------------------------------------------

async def test_the_same_booking_asked_for_twice_is_made_once_with_the_same_code(storage):
    tools = toolbox(storage)
    first = await run(tools, "book_appointment", **CLEANING)
    again = await run(tools, "book_appointment", **CLEANING)   # the brain retries with a new call id

    assert first["ok"] is True and again == first
    assert [b.code for b in await active_bookings(storage)] == [first["code"]]


async def test_a_booking_repeated_after_a_barge_in_mid_confirmation_is_made_once(storage):
    """The caller talks over "you're all set"; the brain, seeing the same wish, books again."""
    tools = toolbox(storage)
    booked = await run(tools, "book_appointment", **CLEANING)
    await run(tools, "check_availability", service="Cleaning", date=TUESDAY)   # reads are not cached
    same_wish_reordered = dict(reversed(list(CLEANING.items())))   # a model may order arguments anew
    repeated = await run(tools, "book_appointment", **same_wish_reordered)

    assert repeated == booked
    assert len(await active_bookings(storage)) == 1


async def test_a_booking_cut_off_by_a_barge_in_after_it_was_stored_is_not_made_twice(storage, monkeypatch):
    tools = toolbox(storage)
    stored, pool_returned = asyncio.Event(), asyncio.Event()
    create = storage.bookings.create_booking

    async def stored_then_still_closing_the_session(**kwargs) -> BookingRecord:
        booking = await create(**kwargs)   # committed
        stored.set()
        await pool_returned.wait()         # ...while the connection goes back to the pool
        return booking

    monkeypatch.setattr(storage.bookings, "create_booking", stored_then_still_closing_the_session)
    first = asyncio.create_task(run(tools, "book_appointment", **CLEANING))
    await asyncio.wait_for(stored.wait(), 10)
    first.cancel()                          # the caller barged in: the reply task is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await first
    monkeypatch.undo()
    pool_returned.set()

    repeated = await run(tools, "book_appointment", **CLEANING)

    bookings = await active_bookings(storage)
    assert len(bookings) == 1, f"booked {len(bookings)} times for one caller's one wish"
    assert repeated["ok"] is True and repeated["code"] == bookings[0].code


# --- find, move, cancel ------------------------------------------------------------------------------

async def test_a_caller_s_upcoming_bookings_are_found_by_their_number_in_local_time(storage):
    mine = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER, name="Ann Lee")
    await existing_booking(storage, f"{TUESDAY}T11:00", phone="+15550001111")
    past = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    await storage.bookings.create_booking(service="Cleaning", start_utc=past, end_utc=past + timedelta(minutes=45),
                                          customer_name="Ann Lee", customer_phone=CALLER, step_minutes=15, lanes=2)

    data = await run(toolbox(storage), "find_bookings")

    assert data == {"ok": True, "bookings": [{
        "code": mine.code, "service": "Cleaning", "start": f"{TUESDAY}T10:00",
        "spoken_start": "Tuesday, November 24 at 10 am", "customer_name": "Ann Lee"}]}
    other = await run(toolbox(storage), "find_bookings", customer_phone="555 000 1111")
    assert [b["start"] for b in other["bookings"]] == [f"{TUESDAY}T11:00"]


async def test_an_appointment_is_moved_by_its_code(storage):
    booking = await existing_booking(storage, f"{TUESDAY}T10:00", phone="+15550002222")

    data = await run(toolbox(storage), "reschedule_appointment", code=booking.code.lower(),
                     new_start="2026-11-25T14:00")

    assert data["ok"] is True and data["code"] == booking.code
    assert data["spoken_start"] == "Wednesday, November 25 at 2 pm"
    moved = await storage.bookings.get_booking(booking.code)
    assert moved.status == "moved" and moved.start_utc == utc(2026, 11, 25, 19, 0)
    assert moved.end_utc == utc(2026, 11, 25, 19, 45)


async def test_an_appointment_is_moved_by_the_caller_s_number_and_may_overlap_its_old_time(storage):
    booking = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)
    await existing_booking(storage, f"{TUESDAY}T10:15")   # the other chair, from 10:15

    data = await run(toolbox(storage), "reschedule_appointment", new_start=f"{TUESDAY}T10:30")

    assert data["ok"] is True and data["code"] == booking.code and data["start"] == f"{TUESDAY}T10:30"
    assert (await storage.bookings.get_booking(booking.code)).start_utc == utc(2026, 11, 24, 15, 30)


async def test_a_move_onto_a_full_slot_is_refused_with_alternatives_and_the_booking_stays(storage):
    booking = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)
    for name in ("First Chair", "Second Chair"):
        await existing_booking(storage, f"{TUESDAY}T14:00", name=name)

    data = await run(toolbox(storage), "reschedule_appointment", code=booking.code,
                     new_start=f"{TUESDAY}T14:00")

    assert data["ok"] is False and "taken" in data["reason"]
    assert data["alternatives"] and f"{TUESDAY}T14:00" not in data["alternatives"]
    kept = await storage.bookings.get_booking(booking.code)
    assert kept.status == "booked" and kept.start_utc == booking.start_utc


async def test_a_move_to_a_time_that_cannot_be_booked_is_refused_and_the_booking_stays(storage):
    booking = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)

    data = await run(toolbox(storage), "reschedule_appointment", new_start="2026-11-28T10:00")

    assert data["ok"] is False and data["reason"] == "we're closed on Saturday, November 28"
    assert (await storage.bookings.get_booking(booking.code)).start_utc == booking.start_utc


async def test_cancelling_by_code_frees_the_slot(storage):
    mine = await existing_booking(storage, f"{TUESDAY}T10:00", phone="+15550002222")
    await existing_booking(storage, f"{TUESDAY}T10:00")
    tools = toolbox(storage)
    assert (await run(tools, "check_availability", service="Cleaning", date=TUESDAY,
                      time="10:00"))["requested_free"] is False

    data = await run(tools, "cancel_appointment", code=mine.code)

    assert data["ok"] is True and data["code"] == mine.code
    assert data["spoken_start"] == "Tuesday, November 24 at 10 am"
    assert (await storage.bookings.get_booking(mine.code)).status == "cancelled"
    assert (await run(tools, "check_availability", service="Cleaning", date=TUESDAY,
                      time="10:00"))["requested_free"] is True
    assert (await run(tools, "book_appointment", **CLEANING))["ok"] is True


async def test_cancelling_by_the_caller_s_number_cancels_their_only_booking(storage):
    mine = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)

    data = await run(toolbox(storage), "cancel_appointment")

    assert data["ok"] is True and data["code"] == mine.code
    assert await active_bookings(storage) == []


async def test_a_caller_with_several_bookings_is_asked_which_one(storage):
    await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)
    await existing_booking(storage, f"{TUESDAY}T15:00", phone=CALLER)

    moved = await run(toolbox(storage), "reschedule_appointment", new_start="2026-11-25T10:00")
    cancelled = await run(toolbox(storage), "cancel_appointment")

    for data in (moved, cancelled):
        assert data["ok"] is False and "which one" in data["reason"]
    assert len(await active_bookings(storage)) == 2


@pytest.mark.parametrize("tool, extra", [("reschedule_appointment", {"new_start": f"{TUESDAY}T11:00"}),
                                         ("cancel_appointment", {})])
async def test_an_unknown_or_cancelled_code_is_refused(storage, tool, extra):
    gone = await existing_booking(storage, f"{TUESDAY}T10:00", phone=CALLER)
    await storage.bookings.cancel_booking(gone.code)

    for code in ("XXXXXX", gone.code):
        data = await run(toolbox(storage), tool, code=code, **extra)
        assert data == {"ok": False, "reason": "I couldn't find an appointment with that code"}
    nothing = await run(toolbox(storage), tool, **extra)
    assert nothing == {"ok": False, "reason": "I couldn't find an upcoming appointment for that number"}


# --- the last free slot, fifty callers at once ----------------------------------------------------------

async def test_fifty_callers_at_the_last_free_slot_one_books_and_the_others_hear_alternatives(database):
    """Two chairs, one already taken at 10:00. Fifty calls on two server instances (engines)
    ask for a cleaning at 10:00 at the same moment: exactly one gets the chair."""
    other_instance = Database(database.url, schema=database.schema)
    try:
        instances = [Storage(database), Storage(other_instance)]
        await existing_booking(instances[0], f"{TUESDAY}T10:00")
        calls = [toolbox(instances[n % 2], phone=f"+1555200{n:04d}") for n in range(50)]

        results = await asyncio.gather(*(run(tools, "book_appointment", **{**CLEANING, "customer_name": f"Caller {n}"})
                                         for n, tools in enumerate(calls)))
    finally:
        await other_instance.close()

    booked = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(booked) == 1, results
    assert len(refused) == 49
    for data in refused:
        assert "taken" in data["reason"], data
        assert data["alternatives"] and f"{TUESDAY}T10:00" not in data["alternatives"], data
    stored = await Storage(database).bookings.list_bookings()
    assert len(stored) == 2
    assert booked[0]["code"] in {b.code for b in stored}


# --- daylight saving time -------------------------------------------------------------------------------

async def test_a_booking_across_the_dst_switch_keeps_its_wall_clock_time(storage):
    """Booked on Friday 30 October (EDT, UTC-4) for Monday 2 November (EST, UTC-5)."""
    tools = toolbox(storage, now=datetime(2026, 10, 30, 8, 30, tzinfo=NEW_YORK))

    offered = await run(tools, "check_availability", service="Cleaning", date="2026-11-02")
    before = await run(tools, "book_appointment", **{**CLEANING, "start": "2026-10-30T13:00"})
    after = await run(tools, "book_appointment", **{**CLEANING, "start": "2026-11-02T09:00"})

    assert offered["slots"][0] == "2026-11-02T09:00" and offered["slots"][-1] == "2026-11-02T16:15"
    assert after["ok"] is True and after["spoken_start"] == "Monday, November 2 at 9 am"
    stored = await storage.bookings.get_booking(after["code"])
    assert stored.start_utc == utc(2026, 11, 2, 14, 0) and stored.end_utc == utc(2026, 11, 2, 14, 45)
    assert (await storage.bookings.get_booking(before["code"])).start_utc == utc(2026, 10, 30, 17, 0)
    found = await run(tools, "find_bookings")
    assert [b["start"] for b in found["bookings"]] == ["2026-10-30T13:00", "2026-11-02T09:00"]


async def test_a_time_skipped_by_the_spring_dst_switch_is_refused_as_not_existing(storage):
    """Sunday 14 March 2027, New York: 2:00 am jumps to 3:00 am (a business open at night)."""
    night_owls = example_profile(hours={"sun": "00:00-06:00"})
    tools = toolbox(storage, profile=night_owls, now=datetime(2027, 3, 10, 12, 0, tzinfo=NEW_YORK))

    gap = await run(tools, "check_availability", service="Cleaning", date="2027-03-14", time="02:30")
    day = await run(tools, "check_availability", service="Cleaning", date="2027-03-14", part_of_day="morning")
    booked = await run(tools, "book_appointment", **{**CLEANING, "start": "2027-03-14T01:30"})

    assert gap == {"ok": False, "reason": "that time doesn't exist on that day (the clocks change)"}
    assert not any("T02:" in s for s in day["slots"])
    stored = await storage.bookings.get_booking(booked["code"])
    assert stored.start_utc == utc(2027, 3, 14, 6, 30) and stored.end_utc == utc(2027, 3, 14, 7, 15), \
        "45 real minutes: 1:30 am EST to 3:15 am EDT"


# --- SMS ---------------------------------------------------------------------------------------------

@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest() as fake:
        yield fake


@pytest.fixture
async def telephony(twilio: FakeTwilioRest) -> AsyncIterator[TwilioTelephony]:
    rest = TwilioTelephony(twilio.account_sid, twilio.auth_token, api_base_url=twilio.url, sms_from=SMS_FROM)
    yield rest
    await rest.close()


async def test_booking_moving_and_cancelling_each_text_the_caller_once(storage, twilio, telephony):
    tools = toolbox(storage, telephony=telephony, sms_confirmations=True)

    booked = await run(tools, "book_appointment", **CLEANING)
    await run(tools, "book_appointment", **CLEANING)          # a repeat sends nothing more
    await side_work_done(tools)
    moved = await run(tools, "reschedule_appointment", code=booked["code"], new_start="2026-11-25T14:00")
    await side_work_done(tools)
    cancelled = await run(tools, "cancel_appointment", code=booked["code"])
    await side_work_done(tools)

    assert booked["ok"] and moved["ok"] and cancelled["ok"]
    assert [(m.to, m.from_) for m in twilio.messages] == [(CALLER, SMS_FROM)] * 3
    booking_sms, move_sms, cancel_sms = (m.body for m in twilio.messages)
    assert booked["code"] in booking_sms and "Tuesday, November 24 at 10 am" in booking_sms
    assert booked["code"] in move_sms and "Wednesday, November 25 at 2 pm" in move_sms
    assert "Wednesday, November 25 at 2 pm" in cancel_sms and "cancelled" in cancel_sms
    assert all(m.body.startswith("Bright Smile Dental: ") for m in twilio.messages)
    assert twilio.unauthorized == 0


async def test_without_sms_confirmations_nobody_is_texted(storage, twilio, telephony):
    tools = toolbox(storage, telephony=telephony, sms_confirmations=False)

    booked = await run(tools, "book_appointment", **CLEANING)
    await run(tools, "cancel_appointment", code=booked["code"])
    await side_work_done(tools)

    assert booked["ok"] is True and twilio.messages == []


async def test_a_failed_confirmation_sms_does_not_undo_the_booking(storage, twilio, telephony):
    twilio.fail_messages(500)
    tools = toolbox(storage, telephony=telephony, sms_confirmations=True)

    booked = await run(tools, "book_appointment", **CLEANING)
    await side_work_done(tools)

    assert booked["ok"] is True and len(twilio.messages) == 1
    assert [b.code for b in await active_bookings(storage)] == [booked["code"]]


async def test_a_message_is_stored_and_texted_to_the_owner(storage, twilio, telephony):
    tools = toolbox(storage, profile=example_profile(owner_sms=OWNER_SMS), telephony=telephony)
    message = {"name": "Ann Lee", "message": "Please call me back about my crown.", "urgency": "urgent"}

    data = await run(tools, "take_message", **message)
    await run(tools, "take_message", **message)               # said twice, passed on once
    await side_work_done(tools)

    assert data["ok"] is True
    [stored], total = await storage.messages.list_messages()
    assert total == 1
    assert (stored.name, stored.phone, stored.message, stored.urgency) == \
        ("Ann Lee", CALLER, "Please call me back about my crown.", "urgent")
    assert stored.sms_status == "sent"
    [sms] = twilio.messages
    assert (sms.to, sms.from_) == (OWNER_SMS, SMS_FROM)
    assert sms.body == (f"URGENT Message for Bright Smile Dental from Ann Lee ({CALLER}): "
                        "Please call me back about my crown.")


async def test_a_message_whose_sms_fails_is_stored_as_failed(storage, twilio, telephony):
    twilio.fail_messages(500)
    tools = toolbox(storage, profile=example_profile(owner_sms=OWNER_SMS), telephony=telephony)

    data = await run(tools, "take_message", message="The tap in the waiting room is leaking.")
    await side_work_done(tools)

    assert data["ok"] is True and len(twilio.messages) == 1
    [stored], _ = await storage.messages.list_messages()
    assert stored.message == "The tap in the waiting room is leaking." and stored.sms_status == "failed"


async def test_a_message_without_an_owner_number_is_stored_and_not_texted(storage, twilio, telephony):
    tools = toolbox(storage, telephony=telephony)

    await run(tools, "take_message", message="Do you do Saturday appointments?")
    await side_work_done(tools)

    [stored], _ = await storage.messages.list_messages()
    assert stored.sms_status == "off" and twilio.messages == []
