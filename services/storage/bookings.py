"""Bookings, with the database as the only judge of whether a slot is free.

The time is cut into cells of gcd(slot step, 15) minutes on a grid anchored at 00:00 UTC (every
time zone's offset is a whole number of quarter hours, so slots on the business's local grid
start on a cell boundary wherever the business is); a business with capacity N has N lanes
(chairs, staff) in each cell. A booking holds one lane in every cell it covers: one
`booking_claims` row per cell, written in the same transaction as the booking.
UNIQUE(start_utc, lane) on those rows means no step can ever hold more bookings than there are
lanes, whatever the number of concurrent calls or server instances: a second insert of the
same (cell, lane) fails, we try the next lane, and when a cell has no lane left the slot is
taken (`SlotTaken`) and nothing is written. Capacity is counted per slot step, as
`services/receptionist/availability.has_capacity` counts it, so what availability offers the
database accepts (bar a race with another caller).

The business rules (hours, notice, how far ahead, which slots to offer) are the receptionist's;
this module only guarantees the capacity.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.database import Database
from services.storage.models import Booking, BookingClaim, Call, utcnow
from services.storage.records import BookingRecord, booking_record
from services.storage.sql import dialect_name
from services.storage.vocabulary import ACTIVE_BOOKING, BookingStatus

log = logging.getLogger("zylin.storage.bookings")

CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"   # nothing a caller can mishear or misread (0/O, 1/I, 5/S...)
CODE_LENGTH = 6
T = TypeVar("T")


class SlotTaken(Exception):
    """Some slot step of the requested time holds as many bookings as there are lanes."""


class BookingNotFound(LookupError):
    """No active booking has that confirmation code."""


@dataclass(frozen=True, slots=True)
class BookingFilter:
    since: datetime | None = None      # ends after (UTC)
    until: datetime | None = None      # starts before (UTC)
    phone: str | None = None           # digits anywhere in the customer's number
    include_cancelled: bool = False


def slot_cells(start_utc: datetime, end_utc: datetime, step_minutes: int) -> list[datetime]:
    """The cells that [start, end) touches: gcd(step, 15) minutes each, anchored at 00:00 UTC.
    Two bookings share a cell exactly when they overlap in time, provided both start on the
    business's slot grid (in any time zone); an off-grid booking claims every cell it touches."""
    _check_range(start_utc, end_utc)
    if step_minutes < 1:
        raise ValueError(f"step_minutes must be at least 1, not {step_minutes}")
    step = math.gcd(step_minutes, 15) * 60
    t = int(start_utc.timestamp()) // step * step
    end = end_utc.timestamp()
    cells = []
    while t < end:
        cells.append(datetime.fromtimestamp(t, UTC))
        t += step
    return cells


def phone_digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def normal_phone(phone: str) -> str:
    """'+1 (555) 010-0100' -> '+15550100100': how numbers are stored, so searches match."""
    digits = phone_digits(phone)
    return "+" + digits if phone.strip().startswith("+") and digits else digits


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class Bookings:
    def __init__(self, db: Database) -> None:
        self.db = db

    # writes ------------------------------------------------------------------------------------

    async def create_booking(self, *, service: str, start_utc: datetime, end_utc: datetime,
                             customer_name: str, customer_phone: str, step_minutes: int,
                             lanes: int = 1, call_sid: str | None = None) -> BookingRecord:
        """Book [start_utc, end_utc) if every slot step in it has fewer than `lanes` bookings
        (the business's capacity); raises SlotTaken otherwise, and stores nothing."""
        cells = slot_cells(start_utc, end_utc, step_minutes)
        _check_lanes(lanes)

        async def work(session: AsyncSession) -> BookingRecord:
            now = utcnow()
            booking = Booking(service=service, start_utc=start_utc, end_utc=end_utc,
                              customer_name=customer_name, customer_phone=normal_phone(customer_phone),
                              status=BookingStatus.BOOKED, call_id=await _call_id(session, call_sid),
                              created_at=now, updated_at=now)
            await _insert_with_code(session, booking)
            await _claim(session, booking, cells, lanes)
            return booking_record(booking, call_sid)

        return await self._transaction(work)

    async def move_booking(self, code: str, *, start_utc: datetime, end_utc: datetime,
                           step_minutes: int, lanes: int = 1) -> BookingRecord:
        """Move an active booking (same code); on SlotTaken it stays where it was."""
        cells = slot_cells(start_utc, end_utc, step_minutes)
        _check_lanes(lanes)

        async def work(session: AsyncSession) -> BookingRecord:
            booking = await _active(session, code)
            await session.execute(delete(BookingClaim).where(BookingClaim.booking_id == booking.id))
            await _claim(session, booking, cells, lanes)
            booking.start_utc, booking.end_utc = start_utc, end_utc
            booking.status, booking.updated_at = BookingStatus.MOVED, utcnow()
            return booking_record(booking, await _call_sid(session, booking.call_id))

        return await self._transaction(work)

    async def cancel_booking(self, code: str) -> BookingRecord:
        """Cancel an active booking and free its slot; raises BookingNotFound."""
        async def work(session: AsyncSession) -> BookingRecord:
            booking = await _active(session, code)
            await session.execute(delete(BookingClaim).where(BookingClaim.booking_id == booking.id))
            booking.status, booking.updated_at = BookingStatus.CANCELLED, utcnow()
            return booking_record(booking, await _call_sid(session, booking.call_id))

        return await self._transaction(work)

    async def _transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in one write transaction, again on a deadlock or a busy database."""
        for attempt in range(5):
            try:
                async with self.db.write() as session:
                    return await work(session)
            except DBAPIError as exc:
                if attempt == 4 or not _transient(exc):
                    raise
                log.info("booking transaction retried after %s", type(exc.orig).__name__)
                await asyncio.sleep(0.02 * 2 ** attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    # reads ---------------------------------------------------------------------------------------

    async def get_booking(self, code: str) -> BookingRecord | None:
        async with self.db.read() as session:
            row = (await session.execute(select(Booking, Call.call_sid).outerjoin(Call, Booking.call_id == Call.id)
                                         .where(Booking.code == _normal_code(code)))).one_or_none()
        return booking_record(*row) if row else None

    async def bookings_overlapping(self, start_utc: datetime, end_utc: datetime, *,
                                   include_cancelled: bool = False) -> list[BookingRecord]:
        """Bookings that share any instant with [start_utc, end_utc), by start time."""
        _check_range(start_utc, end_utc)
        return await self.list_bookings(BookingFilter(since=start_utc, until=end_utc,
                                                      include_cancelled=include_cancelled))

    async def find_bookings(self, phone: str, *, since: datetime | None = None,
                            include_cancelled: bool = False) -> list[BookingRecord]:
        """A caller's bookings by phone number (matched on its last digits, so '+1 555-0100'
        finds '+15550100'); upcoming only when `since` is given."""
        digits = phone_digits(phone)
        if len(digits) < 7:
            return []
        return await self.list_bookings(BookingFilter(since=since, phone=digits[-10:],
                                                      include_cancelled=include_cancelled))

    async def list_bookings(self, filters: BookingFilter = BookingFilter(), *,
                            limit: int = 500) -> list[BookingRecord]:
        query = select(Booking, Call.call_sid).outerjoin(Call, Booking.call_id == Call.id)
        if not filters.include_cancelled:
            query = query.where(Booking.status.in_(ACTIVE_BOOKING))
        if filters.since is not None:
            query = query.where(Booking.end_utc > filters.since)
        if filters.until is not None:
            query = query.where(Booking.start_utc < filters.until)
        if filters.phone:
            query = query.where(Booking.customer_phone.contains(phone_digits(filters.phone), autoescape=True))
        async with self.db.read() as session:
            rows = (await session.execute(query.order_by(Booking.start_utc, Booking.id).limit(limit))).all()
        return [booking_record(booking, call_sid) for booking, call_sid in rows]


# --- inside a transaction ---------------------------------------------------------------------------

async def _claim(session: AsyncSession, booking: Booking, cells: list[datetime], lanes: int) -> None:
    """Hold a lane in every one of `cells`, in time order and lane order (concurrent bookings
    then wait on each other in one direction only); the UNIQUE constraint decides races."""
    busy = await _busy_lanes(session, cells)
    for cell in cells:
        for lane in range(lanes):
            if lane in busy.get(cell, ()):
                continue
            try:
                async with session.begin_nested():
                    session.add(BookingClaim(booking_id=booking.id, start_utc=cell, lane=lane))
            except IntegrityError:
                continue  # another transaction took this lane a moment ago
            break
        else:
            raise SlotTaken(f"all {lanes} lane(s) are taken at {cell.isoformat()}")


async def _busy_lanes(session: AsyncSession, cells: list[datetime]) -> dict[datetime, set[int]]:
    """Lanes seen taken per step: a shortcut only, possibly stale under concurrency."""
    busy: dict[datetime, set[int]] = {}
    rows = await session.execute(select(BookingClaim.start_utc, BookingClaim.lane)
                                 .where(BookingClaim.start_utc.in_(cells)))
    for cell, lane in rows:
        busy.setdefault(cell, set()).add(lane)
    return busy


async def _insert_with_code(session: AsyncSession, booking: Booking) -> None:
    for _ in range(10):
        booking.code = new_code()
        try:
            async with session.begin_nested():
                session.add(booking)
            return
        except IntegrityError:
            continue  # that code is taken (rolled back with the savepoint): draw another
    raise RuntimeError("could not find an unused confirmation code")


async def _active(session: AsyncSession, code: str) -> Booking:
    query = select(Booking).where(Booking.code == _normal_code(code), Booking.status.in_(ACTIVE_BOOKING))
    if dialect_name(session) == "postgresql":
        query = query.with_for_update()
    booking = (await session.scalars(query)).one_or_none()
    if booking is None:
        raise BookingNotFound(f"no active booking with code {code!r}")
    return booking


async def _call_id(session: AsyncSession, call_sid: str | None) -> int | None:
    if not call_sid:
        return None
    return await session.scalar(select(Call.id).where(Call.call_sid == call_sid))


async def _call_sid(session: AsyncSession, call_id: int | None) -> str | None:
    if call_id is None:
        return None
    return await session.scalar(select(Call.call_sid).where(Call.id == call_id))


def _normal_code(code: str) -> str:
    return "".join(code.split()).upper()


def _transient(exc: DBAPIError) -> bool:
    """Deadlock / serialization failure (PostgreSQL) or a busy file (SQLite): try again."""
    if isinstance(exc, IntegrityError):
        return False
    state = getattr(exc.orig, "sqlstate", None)
    return state in ("40P01", "40001") or "database is locked" in str(exc.orig) or exc.connection_invalidated


def _check_range(start_utc: datetime, end_utc: datetime) -> None:
    if start_utc.tzinfo is None or end_utc.tzinfo is None:
        raise ValueError("booking times must be timezone-aware (UTC)")
    if end_utc <= start_utc:
        raise ValueError(f"a booking must end after it starts ({start_utc} .. {end_utc})")


def _check_lanes(lanes: int) -> None:
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}")
