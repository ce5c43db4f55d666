"""When a service can be booked: opening hours and exceptions, durations, the slot grid, notice,
horizon and parallel capacity. Pure functions over the profile and the busy intervals.

Times are aware datetimes. Slots are generated in the business's local time (so 9 am stays 9 am
across a daylight-saving switch) and compared in UTC (so durations are real minutes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.receptionist.profile import BusinessProfile, Service
from services.receptionist.spoken import spoken_datetime, spoken_day, spoken_time

Interval = tuple[datetime, datetime]  # busy: [start, end) of an existing booking, aware


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime  # aware, business time zone
    end: datetime

    def spoken(self) -> str:
        return spoken_datetime(self.start)


def local_datetime(profile: BusinessProfile, day: date, hour: int, minute: int) -> datetime | None:
    """A wall-clock time on `day` in the business zone; None when it does not exist (DST gap)."""
    tz = profile.tz
    naive = datetime(day.year, day.month, day.day, hour, minute)
    at = naive.replace(tzinfo=tz)
    if at.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        return None
    return at


def candidate_starts(profile: BusinessProfile, service: Service, day: date) -> list[Slot]:
    """Every start on the slot grid where the service fits inside that day's opening hours."""
    span = profile.open_span(day)
    if span is None:
        return []
    step = profile.booking.slot_step_min
    opens = span.opens.hour * 60 + span.opens.minute
    closes = span.closes.hour * 60 + span.closes.minute
    first = -(-opens // step) * step  # round opening time up onto the grid
    slots = []
    for minute in range(first, closes - service.duration_min + 1, step):
        start = local_datetime(profile, day, minute // 60, minute % 60)
        if start is None:
            continue
        end = (start.astimezone(UTC) + timedelta(minutes=service.duration_min)).astimezone(profile.tz)
        closing = local_datetime(profile, day, span.closes.hour, span.closes.minute)
        if closing is not None and end > closing:  # a shortened DST day
            continue
        slots.append(Slot(start, end))
    return slots


def _overlaps(slot: Slot, busy: list[Interval]) -> list[Interval]:
    return [b for b in busy if b[0] < slot.end and slot.start < b[1]]


def has_capacity(profile: BusinessProfile, slot: Slot, busy: list[Interval]) -> bool:
    """True when at every grid step inside the slot fewer bookings run than the capacity."""
    overlapping = _overlaps(slot, busy)
    if len(overlapping) < profile.booking.capacity:
        return True
    step = timedelta(minutes=profile.booking.slot_step_min)
    at = slot.start.astimezone(UTC)
    end = slot.end.astimezone(UTC)
    while at < end:
        running = sum(1 for b in overlapping if b[0] <= at < b[1])
        if running >= profile.booking.capacity:
            return False
        at += step
    return True


def refusal(profile: BusinessProfile, service: Service, start: datetime, busy: list[Interval],
            now: datetime) -> str | None:
    """Why `start` cannot be booked, in words the receptionist can say; None when it can."""
    start = start.astimezone(profile.tz)
    if start <= now:
        return "that time is in the past"
    rules = profile.booking
    if start < now + timedelta(minutes=rules.min_notice_min):
        return f"we need at least {rules.min_notice_min} minutes' notice for a booking"
    if start.date() > (now.astimezone(profile.tz) + timedelta(days=rules.max_days_ahead)).date():
        return f"we only take bookings up to {rules.max_days_ahead} days ahead"
    slot = next((s for s in candidate_starts(profile, service, start.date()) if s.start == start), None)
    if slot is None:
        if profile.open_span(start.date()) is None:
            return f"we're closed on {spoken_day(start)}"
        if (start.hour * 60 + start.minute) % profile.booking.slot_step_min:
            return f"appointments start every {profile.booking.slot_step_min} minutes, on the quarter hour" \
                if profile.booking.slot_step_min == 15 else \
                f"appointments start every {profile.booking.slot_step_min} minutes"
        return f"a {service.name.lower()} at {spoken_time(start)} doesn't fit our opening hours that day"
    if not has_capacity(profile, slot, busy):
        return "that time is already taken"
    return None


def free_slots(profile: BusinessProfile, service: Service, day: date, busy: list[Interval],
               now: datetime) -> list[Slot]:
    return [s for s in candidate_starts(profile, service, day)
            if refusal(profile, service, s.start, busy, now) is None]


def search_days(profile: BusinessProfile, around: date, now: datetime) -> list[date]:
    """The bookable days to search for alternatives, nearest to `around` first."""
    today = now.astimezone(profile.tz).date()
    last = today + timedelta(days=profile.booking.max_days_ahead)
    days = [today + timedelta(days=i) for i in range((last - today).days + 1)]
    return sorted(days, key=lambda d: (abs((d - around).days), d))


def nearest_free(profile: BusinessProfile, service: Service, wanted: datetime,
                 busy: list[Interval], now: datetime, count: int = 3, max_days: int = 14) -> list[Slot]:
    """Free slots closest to `wanted`: same day first, then the nearest days."""
    found: list[Slot] = []
    for day in search_days(profile, wanted.astimezone(profile.tz).date(), now)[:max_days]:
        slots = free_slots(profile, service, day, busy, now)
        found.extend(sorted(slots, key=lambda s: abs((s.start - wanted).total_seconds())))
        if len(found) >= count:
            break
    found.sort(key=lambda s: (abs((s.start.date() - wanted.date()).days),
                              abs((s.start - wanted).total_seconds())))
    return found[:count]
