"""The booking tools: check availability, book, find, move and cancel appointments.

Every promise made on the phone must be true in the database: the business rules are checked
here (availability.py), and the database makes the final call on a contested slot (SlotTaken).
Arguments and results use the business's local time as ISO strings without an offset. A
refusal's `reason` is said to the caller; what the brain should do about it is in `note` and
`ask` (see services/receptionist/tools.py). A tool gets its arguments read and typed
(tool_args.py), and runs only on a call with storage (the Toolbox offers it only there).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from services.privacy import mask_code, mask_phone
from services.receptionist.availability import (
    Interval,
    Slot,
    free_slots,
    local_datetime,
    nearest_free,
    refusal,
    search_days,
)
from services.receptionist.profile import Service
from services.receptionist.refusals import (
    NO_PHONE,
    SEVERAL,
    UNREADABLE_DATE,
    UNREADABLE_TIME,
    no_such_service,
    refuse,
)
from services.receptionist.spoken import spoken_datetime, spoken_day, spoken_time
from services.receptionist.tool_args import (
    BookAppointment,
    CancelAppointment,
    CheckAvailability,
    FindBookings,
    RescheduleAppointment,
)
from services.receptionist.tool_types import CallContext, ToolResult
from services.storage.bookings import BookingNotFound, SlotTaken

if TYPE_CHECKING:
    from services.storage.records import BookingRecord

log = logging.getLogger("zylin.booking")

PARTS_OF_DAY = {"morning": (0, 12), "afternoon": (12, 17), "evening": (17, 24)}
SEARCH_DAYS = 14
MAX_SLOTS = 6


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M")


def _service(ctx: CallContext, name: str) -> Service | None:
    wanted = name.strip().lower()
    return next((s for s in ctx.profile.services if s.name.lower() == wanted), None) or \
        ctx.profile.find_service(name)


_LOCAL = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})[T ](\d{1,2}):(\d{2})(?::\d{2})?\s*$")
NO_SUCH_TIME = "that time doesn't exist on that day (the clocks change)"


def _local(ctx: CallContext, text: str) -> datetime | str:
    """'2026-11-24T15:00' (business local time) -> aware datetime, or why it can't be one."""
    match = _LOCAL.match(text)
    if match is None:
        return UNREADABLE_TIME
    try:
        day = date.fromisoformat(match[1])
        hour, minute = int(match[2]), int(match[3])
        datetime(day.year, day.month, day.day, hour, minute)
    except ValueError:
        return UNREADABLE_TIME
    return local_datetime(ctx.profile, day, hour, minute) or NO_SUCH_TIME


async def _busy(ctx: CallContext, start: date, days: int, ignore_code: str = "") -> list[Interval]:
    tz = ctx.profile.tz
    since = datetime(start.year, start.month, start.day, tzinfo=tz).astimezone(UTC)
    until = since + timedelta(days=days + 1)
    bookings = await ctx.bookings().bookings_overlapping(since, until)
    return [(b.start_utc, b.end_utc) for b in bookings if b.code != ignore_code]


def _spoken_list(slots: list[Slot]) -> str:
    if not slots:
        return ""
    days = {s.start.date() for s in slots}
    if len(days) == 1:
        times = [spoken_time(s.start) for s in slots]
        head = spoken_day(slots[0].start)
        return f"{head}: " + (", ".join(times[:-1]) + " or " + times[-1] if len(times) > 1 else times[0])
    return "; ".join(spoken_datetime(s.start) for s in slots)


async def _alternatives(ctx: CallContext, service: Service, wanted: datetime,
                        ignore_code: str = "") -> list[Slot]:
    now = ctx.now()
    days = search_days(ctx.profile, wanted.astimezone(ctx.profile.tz).date(), now)[:SEARCH_DAYS]
    if not days:
        return []
    first, last = min(days), max(days)  # load exactly the days the search will look at
    busy = await _busy(ctx, first, (last - first).days + 1, ignore_code)
    return nearest_free(ctx.profile, service, wanted, busy, now, count=3, max_days=SEARCH_DAYS)


def _no_such_service(ctx: CallContext) -> ToolResult:
    return no_such_service([s.name for s in ctx.profile.services])


async def check_availability(ctx: CallContext, args: CheckAvailability) -> ToolResult:
    service = _service(ctx, args.service)
    if service is None:
        return _no_such_service(ctx)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        return refuse(UNREADABLE_DATE)
    now = ctx.now()
    busy = await _busy(ctx, day, 1)
    requested: datetime | None = None
    requested_free = None
    if args.time:
        at = _local(ctx, f"{day.isoformat()}T{args.time}")
        if isinstance(at, str):
            return refuse(at)
        requested = at
        requested_free = refusal(ctx.profile, service, requested, busy, now) is None
    slots = free_slots(ctx.profile, service, day, busy, now)
    if args.part_of_day is not None:
        first, last = PARTS_OF_DAY[args.part_of_day]
        slots = [s for s in slots if first <= s.start.hour < last]
    alternatives: list[Slot] = []
    if requested is not None and not requested_free:
        alternatives = await _alternatives(ctx, service, requested)
    elif not slots:
        opening = ctx.profile.open_span(day)
        anchor = local_datetime(ctx.profile, day, (opening.opens.hour if opening else 9), 0) or \
            datetime(day.year, day.month, day.day, 9, tzinfo=ctx.profile.tz)
        alternatives = await _alternatives(ctx, service, anchor)
    shown = _spread(slots, MAX_SLOTS)
    if requested is not None and requested_free:
        spoken = f"{spoken_datetime(requested)} is free for a {service.name.lower()}."
    elif requested is not None:
        why = refusal(ctx.profile, service, requested, busy, now)
        spoken = f"{spoken_datetime(requested)} isn't possible: {why}."
    elif shown:
        spoken = f"Free for a {service.name.lower()} on {_spoken_list(shown)}."
    else:
        spoken = f"Nothing is free for a {service.name.lower()} on {spoken_day(day)}."
    if alternatives:
        spoken += f" The nearest free times are {_spoken_list(alternatives)}."
    return ToolResult({
        "ok": True, "service": service.name, "duration_min": service.duration_min,
        "date": day.isoformat(), "requested": _iso(requested) if requested else None,
        "requested_free": requested_free, "slots": [_iso(s.start) for s in shown],
        "alternatives": [_iso(s.start) for s in alternatives], "spoken": spoken,
    })


def _spread(slots: list[Slot], count: int) -> list[Slot]:
    """A few slots across the day rather than the first few minutes of it."""
    if len(slots) <= count:
        return slots
    step = (len(slots) - 1) / (count - 1)
    return [slots[round(i * step)] for i in range(count)]


def _booking_json(booking: BookingRecord, ctx: CallContext) -> dict[str, Any]:
    start = booking.start_utc.astimezone(ctx.profile.tz)
    return {"code": booking.code, "service": booking.service, "start": _iso(start),
            "spoken_start": spoken_datetime(start), "customer_name": booking.customer_name}


async def _confirm_by_sms(ctx: CallContext, phone: str, text: str) -> None:
    telephony = ctx.telephony
    if not ctx.sms_confirmations or telephony is None or not phone:
        return

    async def send() -> None:
        if not await telephony.send_sms(phone, text):
            log.warning("confirmation SMS to %s was not sent", mask_phone(phone))

    ctx.background(send())


async def book_appointment(ctx: CallContext, args: BookAppointment) -> ToolResult:
    service = _service(ctx, args.service)
    if service is None:
        return _no_such_service(ctx)
    start = _local(ctx, args.start)
    if isinstance(start, str):
        return refuse(start)
    phone = (args.customer_phone or ctx.caller_phone).strip()
    if not phone:
        return refuse(NO_PHONE)
    busy = await _busy(ctx, start.date(), 1)
    why = refusal(ctx.profile, service, start, busy, ctx.now())
    if why is not None:
        alternatives = await _alternatives(ctx, service, start)
        return refuse(why, alternatives=[_iso(s.start) for s in alternatives])
    end = start.astimezone(UTC) + timedelta(minutes=service.duration_min)
    try:
        booking = await ctx.bookings().create_booking(
            service=service.name, start_utc=start.astimezone(UTC), end_utc=end, customer_name=args.customer_name,
            customer_phone=phone, step_minutes=ctx.profile.booking.slot_step_min,
            lanes=ctx.profile.booking.capacity, call_sid=ctx.call_sid)
    except SlotTaken:
        alternatives = await _alternatives(ctx, service, start)
        return refuse("that time was just taken", alternatives=[_iso(s.start) for s in alternatives])
    data = _booking_json(booking, ctx)
    log.info("booked %s %s on %s for %s on %s", mask_code(booking.code), service.name, data["start"],
             mask_phone(phone), ctx.call_sid)
    await _confirm_by_sms(ctx, phone, f"{ctx.profile.name}: your {service.name.lower()} is booked for "
                                      f"{data['spoken_start']}. Confirmation code {booking.code}.")
    return ToolResult({"ok": True, **data})


async def find_bookings(ctx: CallContext, args: FindBookings) -> ToolResult:
    phone = args.customer_phone or ctx.caller_phone
    bookings = await ctx.bookings().find_bookings(phone, since=ctx.now().astimezone(UTC))
    return ToolResult({"ok": True, "bookings": [_booking_json(b, ctx) for b in bookings]})


async def _one_booking(ctx: CallContext, code: str, customer_phone: str) -> BookingRecord | str:
    """The booking a move or cancel is about: by code, else the caller's only upcoming one."""
    if code:
        booking = await ctx.bookings().get_booking(code)
        if booking is None or not booking.active:
            return "I couldn't find an appointment with that code"
        return booking
    phone = customer_phone or ctx.caller_phone
    bookings = await ctx.bookings().find_bookings(phone, since=ctx.now().astimezone(UTC))
    if not bookings:
        return "I couldn't find an upcoming appointment for that number"
    if len(bookings) > 1:
        return SEVERAL
    return bookings[0]


async def reschedule_appointment(ctx: CallContext, args: RescheduleAppointment) -> ToolResult:
    found = await _one_booking(ctx, args.code, args.customer_phone)
    if isinstance(found, str):
        return refuse(found)
    service = _service(ctx, found.service)
    start = _local(ctx, args.new_start)
    if service is None:
        return refuse("that appointment's service is no longer offered")
    if isinstance(start, str):
        return refuse(start)
    busy = await _busy(ctx, start.date(), 1, ignore_code=found.code)
    why = refusal(ctx.profile, service, start, busy, ctx.now())
    if why is not None:
        alternatives = await _alternatives(ctx, service, start, ignore_code=found.code)
        return refuse(why, alternatives=[_iso(s.start) for s in alternatives])
    end = start.astimezone(UTC) + timedelta(minutes=service.duration_min)
    try:
        moved = await ctx.bookings().move_booking(
            found.code, start_utc=start.astimezone(UTC), end_utc=end,
            step_minutes=ctx.profile.booking.slot_step_min, lanes=ctx.profile.booking.capacity)
    except SlotTaken:
        alternatives = await _alternatives(ctx, service, start, ignore_code=found.code)
        return refuse("that time was just taken", alternatives=[_iso(s.start) for s in alternatives])
    except BookingNotFound:
        return refuse("that appointment no longer exists")
    data = _booking_json(moved, ctx)
    await _confirm_by_sms(ctx, moved.customer_phone, f"{ctx.profile.name}: your {moved.service.lower()} "
                          f"is moved to {data['spoken_start']}. Code {moved.code}.")
    return ToolResult({"ok": True, **data})


async def cancel_appointment(ctx: CallContext, args: CancelAppointment) -> ToolResult:
    found = await _one_booking(ctx, args.code, args.customer_phone)
    if isinstance(found, str):
        return refuse(found)
    try:
        cancelled = await ctx.bookings().cancel_booking(found.code)
    except BookingNotFound:
        return refuse("that appointment is already cancelled")
    data = _booking_json(cancelled, ctx)
    await _confirm_by_sms(ctx, cancelled.customer_phone, f"{ctx.profile.name}: your {cancelled.service.lower()} "
                          f"on {data['spoken_start']} (code {cancelled.code}) is cancelled.")
    return ToolResult({"ok": True, **data})
