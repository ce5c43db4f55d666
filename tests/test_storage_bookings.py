"""Bookings in the database: the slot claims make double booking impossible, also under
concurrent attempts from several engines (server instances). SQLite always, PostgreSQL when
TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select

import services.storage.bookings as bookings_module
from services.storage import BookingNotFound, Bookings, Database, SlotTaken, Storage, slot_cells
from services.storage.models import Booking, BookingClaim

MON_9 = datetime(2030, 1, 7, 14, 0, tzinfo=UTC)   # 09:00 in New York
STEP = 15


def mins(n: int) -> timedelta:
    return timedelta(minutes=n)


async def book(bookings: Bookings, start: datetime, minutes: int = 30, *, lanes: int = 1,
               phone: str = "+15550001111", name: str = "Ann") -> object:
    return await bookings.create_booking(service="Cleaning", start_utc=start, end_utc=start + mins(minutes),
                                         customer_name=name, customer_phone=phone, step_minutes=STEP,
                                         lanes=lanes)


async def warm_up(database: Database, connections: int = 10) -> None:
    """Open pooled connections first, so the attempts below really run side by side."""
    async def ping() -> None:
        async with database.read() as session:
            await session.execute(select(1))
            await asyncio.sleep(0.05)
    await asyncio.gather(*(ping() for _ in range(connections)))


async def claims(database: Database) -> int:
    async with database.read() as session:
        return await session.scalar(select(func.count()).select_from(BookingClaim))


def test_a_booking_on_the_grid_claims_duration_over_step_cells():
    assert slot_cells(MON_9, MON_9 + mins(45), 15) == [MON_9, MON_9 + mins(15), MON_9 + mins(30)]
    assert len(slot_cells(MON_9, MON_9 + mins(60), 10)) == 12  # gcd(10, 15) = 5-minute cells
    # Off the grid: every cell it touches, so overlapping bookings always share one.
    assert slot_cells(MON_9 + mins(10), MON_9 + mins(20), 15) == [MON_9, MON_9 + mins(15)]
    with pytest.raises(ValueError):
        slot_cells(MON_9, MON_9, 15)
    with pytest.raises(ValueError):
        slot_cells(datetime(2030, 1, 7, 9), datetime(2030, 1, 7, 10), 15)


async def test_a_booking_gets_a_readable_confirmation_code_and_holds_its_cells(database: Database):
    bookings = Storage(database).bookings
    booked = await book(bookings, MON_9, 45, phone="+1 (555) 000-1111")
    assert len(booked.code) == 6 and booked.code.isalnum() and booked.code.upper() == booked.code
    assert not set(booked.code) & set("01OISB")
    assert booked.status == "booked" and booked.customer_phone == "+15550001111"
    assert await claims(database) == 3
    assert (await bookings.get_booking(booked.code.lower())).code == booked.code


async def test_an_overlapping_booking_in_the_only_lane_is_refused(database: Database):
    bookings = Storage(database).bookings
    await book(bookings, MON_9, 30)
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9 + mins(15), 30)
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9 - mins(15), 30)
    await book(bookings, MON_9 + mins(30), 30)  # back to back is fine
    await book(bookings, MON_9 - mins(30), 30)
    assert len(await bookings.bookings_overlapping(MON_9 - mins(60), MON_9 + mins(120))) == 3


async def test_parallel_capacity_takes_as_many_overlapping_bookings_as_there_are_lanes(database: Database):
    bookings = Storage(database).bookings
    await book(bookings, MON_9, 60, lanes=2)
    await book(bookings, MON_9 + mins(30), 30, lanes=2)
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9 + mins(45), 30, lanes=2)
    await book(bookings, MON_9 + mins(60), 30, lanes=2)
    assert await claims(database) == 4 + 2 + 2


async def test_capacity_is_counted_per_slot_step_as_availability_counts_it(database: Database):
    """09:00-10:00 and 10:00-11:00 end up in different lanes; 09:30-10:30 still fits, because at
    no step do more than two bookings run, though no single lane is free for the whole hour."""
    bookings = Storage(database).bookings
    await book(bookings, MON_9, 60, lanes=2)                                   # lane 0 at 9:00-9:45
    blocker = await book(bookings, MON_9 + mins(105), 15, lanes=2)             # lane 0 at 10:45
    await book(bookings, MON_9 + mins(60), 60, lanes=2)                        # lane 1 at 10:45
    await bookings.cancel_booking(blocker.code)
    await book(bookings, MON_9 + mins(30), 60, lanes=2)
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9 + mins(30), 15, lanes=2)
    assert len(await bookings.bookings_overlapping(MON_9 + mins(45), MON_9 + mins(60))) == 2


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York"])
async def test_back_to_back_hourly_slots_fit_in_any_time_zone(database: Database, zone: str):
    """Hour-long slots on the hour in Kolkata (UTC+5:30) or Kathmandu (UTC+5:45) are not on the
    hour in UTC: the claims must still let them sit back to back and refuse an overlap."""
    bookings = Storage(database).bookings
    nine = datetime(2030, 1, 7, 9, 0, tzinfo=ZoneInfo(zone)).astimezone(UTC)

    async def hourly(start: datetime, minutes: int = 60):
        return await bookings.create_booking(service="Consultation", start_utc=start,
                                             end_utc=start + mins(minutes), customer_name="Ann",
                                             customer_phone="+15550001111", step_minutes=60)
    await hourly(nine)
    await hourly(nine + mins(60))
    await hourly(nine - mins(120), 120)
    with pytest.raises(SlotTaken):
        await hourly(nine + mins(119), 2)


async def test_cancelling_frees_the_slot(database: Database):
    bookings = Storage(database).bookings
    booked = await book(bookings, MON_9)
    cancelled = await bookings.cancel_booking(booked.code)
    assert cancelled.status == "cancelled" and not cancelled.active
    assert await claims(database) == 0
    await book(bookings, MON_9)
    with pytest.raises(BookingNotFound):
        await bookings.cancel_booking(booked.code)
    with pytest.raises(BookingNotFound):
        await bookings.cancel_booking("NOPE42")


async def test_moving_keeps_the_code_frees_the_old_slot_and_may_overlap_its_own_old_time(database: Database):
    bookings = Storage(database).bookings
    booked = await book(bookings, MON_9, 30)
    moved = await bookings.move_booking(booked.code, start_utc=MON_9 + mins(15), end_utc=MON_9 + mins(45),
                                        step_minutes=STEP)
    assert (moved.code, moved.status, moved.start_utc) == (booked.code, "moved", MON_9 + mins(15))
    assert await claims(database) == 2
    await book(bookings, MON_9 - mins(45), 60)  # 08:15-09:15 local is free again
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9 + mins(30), 15)


async def test_a_move_onto_a_taken_slot_leaves_the_booking_where_it_was(database: Database):
    bookings = Storage(database).bookings
    mine = await book(bookings, MON_9, 30)
    await book(bookings, MON_9 + mins(60), 30, name="Bo", phone="+15550002222")
    with pytest.raises(SlotTaken):
        await bookings.move_booking(mine.code, start_utc=MON_9 + mins(75), end_utc=MON_9 + mins(105),
                                    step_minutes=STEP)
    still = await bookings.get_booking(mine.code)
    assert (still.start_utc, still.status) == (MON_9, "booked")
    assert await claims(database) == 4
    with pytest.raises(SlotTaken):
        await book(bookings, MON_9, 15)


async def test_a_callers_bookings_are_found_by_their_number_however_it_is_written(database: Database):
    bookings = Storage(database).bookings
    mine = await book(bookings, MON_9, phone="+15550001111")
    await book(bookings, MON_9 + mins(60), phone="+15550002222")
    gone = await book(bookings, MON_9 + mins(120), phone="+15550001111")
    await bookings.cancel_booking(gone.code)
    for spelled in ("+15550001111", "555-000-1111", "(555) 000 1111", "15550001111"):
        assert [b.code for b in await bookings.find_bookings(spelled)] == [mine.code], spelled
    assert len(await bookings.find_bookings("555 000 1111", include_cancelled=True)) == 2
    assert await bookings.find_bookings("1111") == [], "too few digits to be a number"
    assert await bookings.find_bookings("+15550001111", since=MON_9 + mins(30)) == []


async def test_deleting_a_booking_deletes_its_claims(database: Database):
    bookings = Storage(database).bookings
    booked = await book(bookings, MON_9, 60)
    async with database.write() as session:
        await session.execute(delete(Booking).where(Booking.code == booked.code))
    assert await claims(database) == 0


async def test_a_booking_made_on_a_call_links_to_it(database: Database):
    storage = Storage(database)
    await storage.calls.open_call("CA" + "9" * 32, caller="+15550001111")
    booked = await storage.bookings.create_booking(
        service="Cleaning", start_utc=MON_9, end_utc=MON_9 + mins(30), customer_name="Ann",
        customer_phone="+15550001111", step_minutes=STEP, call_sid="CA" + "9" * 32)
    assert booked.call_sid == "CA" + "9" * 32
    detail = await storage.calls.get_call("CA" + "9" * 32)
    assert [b.code for b in detail.bookings] == [booked.code]
    await storage.calls.end_call("CA" + "9" * 32, reason="stop event")
    assert (await storage.calls.get_call("CA" + "9" * 32)).call.outcome == "booked"


@pytest.mark.parametrize("stale_reads", [False, True], ids=["as-is", "every-read-stale"])
async def test_fifty_concurrent_attempts_at_the_last_free_slot_make_exactly_one_booking(
        database: Database, stale_reads: bool, monkeypatch):
    """Capacity two; one place is taken. Fifty callers on two server instances (engines) want
    the same half hour, some of them a quarter later: exactly one gets it. With stale reads,
    every attempt believes every lane is free, so only the UNIQUE constraint stands between
    them and a double booking."""
    other_instance = Database(database.url, schema=database.schema)
    try:
        instances = [Bookings(database), Bookings(other_instance)]
        await book(instances[0], MON_9, 30, lanes=2)
        await asyncio.gather(*(warm_up(db) for db in (database, other_instance)))
        if stale_reads:
            async def nothing_seen(session, cells):
                return {}
            monkeypatch.setattr(bookings_module, "_busy_lanes", nothing_seen)

        async def attempt(n: int) -> str | None:
            start = MON_9 + (mins(15) if n % 5 == 4 else mins(0))
            try:
                booked = await book(instances[n % 2], start, 30, lanes=2, phone=f"+1555100{n:04d}", name=f"C{n}")
            except SlotTaken:
                return None
            return booked.code

        results = await asyncio.gather(*(attempt(n) for n in range(50)))
    finally:
        await other_instance.close()

    winners = [code for code in results if code]
    assert len(winners) == 1, results
    overlapping = await instances[0].bookings_overlapping(MON_9, MON_9 + mins(45))
    assert len(overlapping) == 2
    async with database.read() as session:
        per_step = (await session.execute(select(BookingClaim.start_utc, func.count())
                                          .group_by(BookingClaim.start_utc))).all()
    assert max(count for _, count in per_step) == 2, "no slot step holds more than the capacity"
    async with database.read() as session:
        assert await session.scalar(select(func.count()).select_from(Booking)) == 2, \
            "refused attempts leave no booking row behind"
