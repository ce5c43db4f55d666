"""Availability: hours, exceptions, durations, grid, notice, horizon, capacity and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.llm.base import ToolCall
from services.receptionist.availability import (
    candidate_starts,
    free_slots,
    local_datetime,
    nearest_free,
    refusal,
    spoken_datetime,
)
from services.receptionist.profile import parse_profile
from services.receptionist.tool_types import CallContext
from services.receptionist.tools import Toolbox
from services.storage import Storage
from tests.factories import example_profile

NY = ZoneInfo("America/New_York")


@pytest.fixture
def profile():
    return example_profile()


def at(y, m, d, h, mi=0):
    return datetime(y, m, d, h, mi, tzinfo=NY)


def busy(*spans):
    return [(at(*a), at(*b)) for a, b in spans]


def test_a_service_fits_inside_opening_hours_on_the_slot_grid(profile):
    cleaning = profile.find_service("cleaning")  # 45 min, Monday 9-17, 15 min grid
    slots = candidate_starts(profile, cleaning, date(2026, 11, 30))
    assert slots[0].start == at(2026, 11, 30, 9) and slots[-1].start == at(2026, 11, 30, 16, 15)
    assert all(s.end - s.start == timedelta(minutes=45) for s in slots)
    assert len(slots) == 30


def test_closed_days_and_exceptions_have_no_slots(profile):
    cleaning = profile.find_service("cleaning")
    assert candidate_starts(profile, cleaning, date(2026, 11, 28)) == []       # a Saturday
    assert candidate_starts(profile, cleaning, date(2026, 12, 25)) == []       # closed exception
    christmas_eve = candidate_starts(profile, cleaning, date(2026, 12, 24))    # 09:00-12:00
    assert christmas_eve[-1].end == at(2026, 12, 24, 12)


def test_refusals_say_why(profile):
    cleaning = profile.find_service("cleaning")
    now = at(2026, 11, 30, 9, 30)
    assert refusal(profile, cleaning, at(2026, 11, 30, 9), [], now) == "that time is in the past"
    assert "notice" in refusal(profile, cleaning, at(2026, 11, 30, 10), [], now)
    assert refusal(profile, cleaning, at(2026, 11, 30, 10, 30), [], now) is None
    assert "closed" in refusal(profile, cleaning, at(2026, 12, 5, 10), [], now)
    assert "opening hours" in refusal(profile, cleaning, at(2026, 12, 1, 16, 30), [], now)
    assert "days ahead" in refusal(profile, cleaning, at(2027, 3, 1, 10), [], now)
    assert "every 15 minutes" in refusal(profile, cleaning, at(2026, 12, 1, 10, 5), [], now)  # off-grid


def test_parallel_capacity_counts_overlapping_bookings(profile):
    cleaning = profile.find_service("cleaning")  # capacity 2
    now = at(2026, 11, 30, 8)
    one = busy(((2026, 12, 1, 10), (2026, 12, 1, 10, 45)))
    two = one + busy(((2026, 12, 1, 10, 30), (2026, 12, 1, 11, 30)))
    assert refusal(profile, cleaning, at(2026, 12, 1, 10), one, now) is None
    assert refusal(profile, cleaning, at(2026, 12, 1, 10), two, now) == "that time is already taken"
    assert refusal(profile, cleaning, at(2026, 12, 1, 9, 15), two, now) is None  # ends 10:00
    assert refusal(profile, cleaning, at(2026, 12, 1, 11, 30), two, now) is None


def test_nearest_free_offers_the_closest_times_same_day_first(profile):
    cleaning = profile.find_service("cleaning")
    now = at(2026, 11, 30, 8)
    full = busy(((2026, 12, 1, 14), (2026, 12, 1, 15)), ((2026, 12, 1, 14), (2026, 12, 1, 15)))
    slots = nearest_free(profile, cleaning, at(2026, 12, 1, 14), full, now)
    # 13:15 ends as the busy hour starts (45 min away); 13:00 and 15:00 are both an hour away.
    assert [s.start for s in slots] == [at(2026, 12, 1, 13, 15), at(2026, 12, 1, 13), at(2026, 12, 1, 15)]


def test_a_booking_across_the_autumn_dst_switch_keeps_local_time_and_real_duration(profile):
    # Booked on Friday 30 October 2026 (EDT, UTC-4) for Monday 2 November (EST, UTC-5).
    whitening = profile.find_service("whitening")
    now = at(2026, 10, 30, 12)
    slot = free_slots(profile, whitening, date(2026, 11, 2), [], now)[0]
    assert slot.start.hour == 9 and slot.start.astimezone(UTC).hour == 14
    assert (slot.end.astimezone(UTC) - slot.start.astimezone(UTC)) == timedelta(minutes=60)
    assert spoken_datetime(slot.start) == "Monday, November 2 at 9 am"
    assert at(2026, 10, 30, 9).astimezone(UTC).hour == 13  # the same 9 am was 13:00 UTC before


def test_times_that_do_not_exist_in_the_spring_dst_gap_are_skipped():
    night = parse_profile({
        "name": "Night Clinic", "timezone": "America/New_York",
        "hours": {"sun": "00:00-06:00"}, "services": [{"name": "Check", "duration_min": 30}],
        "booking": {"slot_step_min": 30, "capacity": 1},
    })
    assert local_datetime(night, date(2026, 3, 8), 2, 30) is None  # clocks jump 2:00 -> 3:00
    starts = [s.start.strftime("%H:%M") for s in candidate_starts(night, night.services[0], date(2026, 3, 8))]
    assert "02:00" not in starts and "02:30" not in starts
    assert starts[:4] == ["00:00", "00:30", "01:00", "01:30"] and "03:00" in starts


# --- holidays: booking on 24 and 25 December 2026 through the tool, by the call's clock ----------

SUNDAY_BEFORE_CHRISTMAS = datetime(2026, 12, 20, 9, 0, tzinfo=NY)


async def book(database, profile, start: str) -> dict:
    """book_appointment as a brain calls it, on a real database, with the clock on 20 December."""
    tools = Toolbox(CallContext(call_sid="CA" + "e" * 32, caller_phone="+15559876543", profile=profile,
                                can_transfer=False, storage=Storage(database),
                                clock=lambda: SUNDAY_BEFORE_CHRISTMAS))
    result = await tools.run(ToolCall("call_1", "book_appointment",
                                      {"service": "Cleaning", "start": start, "customer_name": "Ann Lee"}))
    return result.data


async def test_christmas_eve_books_inside_its_short_hours_only(database, profile):
    morning = await book(database, profile, "2026-12-24T10:00")
    assert morning["ok"] is True and morning["spoken_start"] == "Thursday, December 24 at 10 am"
    afternoon = await book(database, profile, "2026-12-24T14:00")   # a normal Thursday runs to 19:00
    assert afternoon["ok"] is False and "doesn't fit our opening hours" in afternoon["reason"]
    assert all(a < "2026-12-24T12:00" or a >= "2026-12-25" for a in afternoon["alternatives"])


@pytest.mark.parametrize("start", ["2026-12-25T09:00", "2026-12-25T10:30", "2026-12-25T14:00"])
async def test_christmas_day_refuses_every_time_as_closed(database, profile, start):
    data = await book(database, profile, start)
    assert data["ok"] is False and data["reason"] == "we're closed on Friday, December 25"
    assert not any(a.startswith("2026-12-25") for a in data["alternatives"])
