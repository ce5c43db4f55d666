"""The business profile: one TOML (or JSON) file the owner edits, validated at start-up."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                "Saturday", "Sunday")))


class ProfileError(ValueError):
    """The profile file has mistakes; the message lists each one."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    duration_min: int
    price: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class OpenSpan:
    opens: time
    closes: time

    def spoken(self) -> str:
        return f"{_spoken_time(self.opens)} to {_spoken_time(self.closes)}"


@dataclass(frozen=True, slots=True)
class BookingRules:
    slot_step_min: int = 15
    max_days_ahead: int = 60
    min_notice_min: int = 60
    capacity: int = 1


@dataclass(frozen=True)
class BusinessProfile:
    name: str
    timezone: str
    greeting: str
    hours: dict[str, OpenSpan]
    transfer_hours: dict[str, OpenSpan]
    services: tuple[Service, ...]
    faq: dict[str, str] = field(default_factory=dict)
    address: str = ""
    owner_phone: str = ""
    owner_sms: str = ""
    exceptions: dict[date, OpenSpan | None] = field(default_factory=dict)  # None = closed
    booking: BookingRules = field(default_factory=BookingRules)

    def open_span(self, day: date) -> OpenSpan | None:
        """Opening hours on a calendar date (local), exceptions first."""
        if day in self.exceptions:
            return self.exceptions[day]
        return self.hours.get(WEEKDAYS[day.weekday()])

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def hours_sentence(self) -> str:
        parts = [f"{DAY_NAMES[d]} {self.hours[d].spoken()}" for d in WEEKDAYS if d in self.hours]
        if not parts:
            return "We don't have regular opening hours at the moment."
        closed = [DAY_NAMES[d] for d in WEEKDAYS if d not in self.hours]
        text = "We're open " + ", ".join(parts) + "."
        if closed:
            text += " We're closed on " + " and ".join(closed) + "."
        return text

    def services_sentence(self) -> str:
        items = [f"{s.name} ({s.price})" if s.price else s.name for s in self.services]
        return "We offer " + ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] + "."

    def find_service(self, text: str) -> Service | None:
        lowered = text.lower()
        for service in self.services:
            if service.name.lower() in lowered:
                return service
        return None

    def transfer_open(self, at: datetime | None = None) -> bool:
        at = (at or self.now()).astimezone(self.tz)
        span = self.transfer_hours.get(WEEKDAYS[at.weekday()])
        return span is not None and span.opens <= at.time() < span.closes


def _spoken_time(t: time) -> str:
    hour = t.hour % 12 or 12
    suffix = "am" if t.hour < 12 else "pm"
    return f"{hour}{':%02d' % t.minute if t.minute else ''} {suffix}"


def _spans(raw: object, where: str, errors: list[str]) -> dict[str, OpenSpan]:
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a table of weekday = \"HH:MM-HH:MM\"")
        return {}
    spans = {}
    for day, value in raw.items():
        if day not in WEEKDAYS:
            errors.append(f"{where}.{day}: unknown weekday (use {', '.join(WEEKDAYS)})")
            continue
        try:
            opens, closes = (time.fromisoformat(p.strip()) for p in str(value).split("-"))
        except ValueError:
            errors.append(f"{where}.{day}: {value!r} is not \"HH:MM-HH:MM\"")
            continue
        if closes <= opens:
            errors.append(f"{where}.{day}: closes before it opens ({value})")
            continue
        spans[day] = OpenSpan(opens, closes)
    return spans


def parse_profile(data: dict) -> BusinessProfile:
    errors: list[str] = []
    name = str(data.get("name", "")).strip()
    if not name:
        errors.append("name: the business needs a name")
    timezone = str(data.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"timezone: {timezone!r} is not an IANA time zone like 'Europe/London'")
    hours = _spans(data.get("hours", {}), "hours", errors)
    transfer = _spans(data["transfer_hours"], "transfer_hours", errors) if "transfer_hours" in data else hours
    services = []
    for i, raw in enumerate(data.get("services", [])):
        try:
            duration = int(raw.get("duration_min", 0))
        except (TypeError, ValueError, AttributeError):
            duration = 0
        if not isinstance(raw, dict) or not raw.get("name") or duration <= 0:
            errors.append(f"services[{i}]: needs a name and a positive duration_min")
            continue
        services.append(Service(str(raw["name"]), duration, str(raw.get("price", "")),
                                str(raw.get("description", ""))))
    if not services:
        errors.append("services: list at least one service")
    for key in ("owner_phone", "owner_sms"):
        value = str(data.get(key, ""))
        if value and not (value.startswith("+") and value[1:].isdigit()):
            errors.append(f"{key}: {value!r} is not an E.164 number like +15551230000")
    exceptions: dict[date, OpenSpan | None] = {}
    raw_exceptions = data.get("exceptions", {})
    if not isinstance(raw_exceptions, dict):
        errors.append('exceptions: expected a table of "YYYY-MM-DD" = "closed" or "HH:MM-HH:MM"')
        raw_exceptions = {}
    for key, value in raw_exceptions.items():
        try:
            day = date.fromisoformat(str(key))
        except ValueError:
            errors.append(f"exceptions.{key}: not a date like 2026-12-25")
            continue
        if str(value).strip().lower() == "closed":
            exceptions[day] = None
        else:
            spans = _spans({"mon": value}, f"exceptions.{key}", errors)
            if spans:
                exceptions[day] = spans["mon"]
    booking = BookingRules()
    raw_booking = data.get("booking", {})
    if isinstance(raw_booking, dict):
        values = {}
        for rule, default in (("slot_step_min", 15), ("max_days_ahead", 60), ("min_notice_min", 60),
                              ("capacity", 1)):
            try:
                values[rule] = int(raw_booking.get(rule, default))
            except (TypeError, ValueError):
                errors.append(f"booking.{rule}: must be a whole number")
                values[rule] = default
        if values["slot_step_min"] <= 0 or 60 % values["slot_step_min"] and values["slot_step_min"] % 60:
            errors.append("booking.slot_step_min: must divide an hour (5, 10, 15, 20, 30) or be whole hours")
            values["slot_step_min"] = 15
        if values["capacity"] < 1:
            errors.append("booking.capacity: at least 1")
        if values["max_days_ahead"] < 1 or values["min_notice_min"] < 0:
            errors.append("booking: max_days_ahead must be >= 1 and min_notice_min >= 0")
        booking = BookingRules(**values)
        for service in services:
            if service.duration_min % booking.slot_step_min:
                errors.append(f"services: {service.name} lasts {service.duration_min} min, "
                              f"not a multiple of booking.slot_step_min ({booking.slot_step_min})")
    else:
        errors.append("booking: expected a table")
    if errors:
        raise ProfileError("business profile has mistakes:\n  - " + "\n  - ".join(errors))
    greeting = str(data.get("greeting") or f"Thanks for calling {name}. How can I help you today?")
    return BusinessProfile(
        name=name, timezone=timezone, greeting=greeting, hours=hours, transfer_hours=transfer,
        services=tuple(services), faq={str(k): str(v) for k, v in data.get("faq", {}).items()},
        address=str(data.get("address", "")), owner_phone=str(data.get("owner_phone", "")),
        owner_sms=str(data.get("owner_sms", "")), exceptions=exceptions, booking=booking,
    )


def load_profile(path: str | Path) -> BusinessProfile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"BUSINESS_PROFILE: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"BUSINESS_PROFILE: {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"BUSINESS_PROFILE: {path} must hold a table/object at the top level")
    return parse_profile(data)
