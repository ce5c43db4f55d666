"""The business profile: one TOML (or JSON) file the owner edits, validated at start-up."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from services.receptionist.spoken import spoken_day, spoken_time

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                "Saturday", "Sunday"), strict=True))


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
        return f"{spoken_time(self.opens)} to {spoken_time(self.closes)}"


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

    def exceptions_sentence(self, today: date, days: int = 14) -> str:
        """Holidays and special hours from `today` for `days` days, in words; "" when none."""
        upcoming = sorted((d, span) for d, span in self.exceptions.items() if 0 <= (d - today).days < days)
        if not upcoming:
            return ""
        parts = [f"{spoken_day(d)}: " + (f"open {span.spoken()} only" if span else "closed")
                 for d, span in upcoming]
        return "Exceptions to the usual hours: " + "; ".join(parts) + "."

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
        """Someone can take a call: within the transfer hours and, on an exception day, within
        that day's special hours too (nobody is in on a holiday)."""
        at = (at or self.now()).astimezone(self.tz)
        if not _within(self.transfer_hours.get(WEEKDAYS[at.weekday()]), at.time()):
            return False
        return at.date() not in self.exceptions or _within(self.exceptions[at.date()], at.time())

    def summary(self) -> str:
        """One line for `main.py check-profile`: what the file was understood to say."""
        days = " ".join(d for d in WEEKDAYS if d in self.hours) or "none"
        listed = [f"{d.isoformat()} {_span_text(s)}" for d, s in sorted(self.exceptions.items())]
        if len(listed) > 4:
            listed = listed[:4] + [f"and {len(listed) - 4} more"]
        count = len(self.services)
        return (f"{self.name} ({self.timezone}), {count} service{'s' * (count != 1)}, hours {days}, "
                f"exceptions {', '.join(listed) if listed else 'none'}")


def _within(span: OpenSpan | None, at: time) -> bool:
    return span is not None and span.opens <= at < span.closes


def _span_text(span: OpenSpan | None) -> str:
    return "closed" if span is None else f"{span.opens:%H:%M}-{span.closes:%H:%M}"


# --- what the file may say ----------------------------------------------------------------------

TOP_KEYS = ("name", "timezone", "greeting", "address", "owner_phone", "owner_sms", "hours",
            "transfer_hours", "exceptions", "booking", "services", "faq")
BOOKING_KEYS = ("slot_step_min", "max_days_ahead", "min_notice_min", "capacity")
SERVICE_KEYS = ("name", "duration_min", "price", "description")
# Words owners reach for that difflib cannot connect to the key they mean.
_ALIASES = {"holidays": "exceptions", "closures": "exceptions", "closed": "exceptions",
            "tz": "timezone", "phone": "owner_phone", "sms": "owner_sms"}
# Keys that were once shown in the example but belong elsewhere.
_MOVED = {"booking.sms_confirmations": "SMS confirmations are the SMS_CONFIRMATIONS setting, not a profile key"}


def _unknown_keys(table: dict, known: tuple[str, ...], where: str, errors: list[str]) -> None:
    """Name every key the code would never read: a misspelt `[hours]` must not quietly become
    "closed all week", nor a misspelt `capacity` the default."""
    for key in table:
        if key not in known:
            path = f"{where}.{key}" if where else str(key)
            errors.append(f"{path}: unknown key; {_key_hint(path, str(key), known)}")


def _key_hint(path: str, key: str, known: tuple[str, ...]) -> str:
    if path in _MOVED:
        return _MOVED[path]
    return f"did you mean {guess!r}?" if (guess := _closest(key.lower(), known)) \
        else "known keys: " + ", ".join(known)


def _closest(key: str, known: tuple[str, ...]) -> str | None:
    """A typo (difflib), a synonym, or a known key inside a longer one ('opening_hours')."""
    if _ALIASES.get(key) in known:
        return _ALIASES[key]
    if close := difflib.get_close_matches(key, known, n=1, cutoff=0.6):
        return close[0]
    inside = [k for k in known if len(k) >= 4 and (k in key or key in k)]
    return max(inside, key=len) if inside else None


def _weekday_hint(day: str) -> str:
    guess = day.lower()[:3] if day.lower()[:3] in WEEKDAYS else None
    guess = guess or next(iter(difflib.get_close_matches(day.lower(), WEEKDAYS, n=1, cutoff=0.5)), None)
    return f"did you mean {guess!r}?" if guess else f"use {', '.join(WEEKDAYS)}"


# --- time zones: a place, not an abbreviation ------------------------------------------------------

_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe",
          "Indian", "Pacific")
_AREA_CITY = re.compile(rf"^(?:{'|'.join(_AREAS)})/[A-Z][A-Za-z_-]*(?:/[A-Z][A-Za-z_-]*)?$")
_OFFSET = re.compile(r"^(?:etc/)?(?:gmt|utc)\s*[+-]\s*\d{1,2}(?::?\d{2})?$", re.IGNORECASE)
_NEW_YORK = "America/New_York (or America/Toronto, America/Panama for no daylight saving)"
_CHICAGO = ("America/Chicago (or America/Mexico_City, America/Regina for no daylight saving; "
            "Asia/Shanghai for China)")
_DENVER = "America/Denver (or America/Edmonton, America/Phoenix for no daylight saving)"
_LOS_ANGELES = "America/Los_Angeles (or America/Vancouver, America/Tijuana)"
_CENTRAL_EUROPE = "the capital of your country, e.g. Europe/Paris, Europe/Berlin or Europe/Madrid"
_EASTERN_EUROPE = "the capital of your country, e.g. Europe/Athens, Europe/Helsinki or Europe/Bucharest"
# Abbreviations and legacy names, upper-cased, with the IANA places they usually mean.
_LEGACY = {
    "EST": _NEW_YORK, "EDT": _NEW_YORK, "EST5EDT": "America/New_York", "US/EASTERN": "America/New_York",
    "US/MICHIGAN": "America/Detroit", "US/EAST-INDIANA": "America/Indiana/Indianapolis",
    "CANADA/EASTERN": "America/Toronto",
    "CST": _CHICAGO, "CDT": _CHICAGO, "CST6CDT": "America/Chicago", "US/CENTRAL": "America/Chicago",
    "CANADA/CENTRAL": "America/Winnipeg", "CANADA/SASKATCHEWAN": "America/Regina",
    "MEXICO/GENERAL": "America/Mexico_City",
    "MST": _DENVER, "MDT": _DENVER, "MST7MDT": "America/Denver", "US/MOUNTAIN": "America/Denver",
    "NAVAJO": "America/Denver", "US/ARIZONA": "America/Phoenix", "CANADA/MOUNTAIN": "America/Edmonton",
    "PST": _LOS_ANGELES, "PDT": _LOS_ANGELES, "PST8PDT": "America/Los_Angeles",
    "US/PACIFIC": "America/Los_Angeles", "CANADA/PACIFIC": "America/Vancouver",
    "AKST": "America/Anchorage", "AKDT": "America/Anchorage", "US/ALASKA": "America/Anchorage",
    "HST": "Pacific/Honolulu", "US/HAWAII": "Pacific/Honolulu", "US/ALEUTIAN": "America/Adak",
    "AST": "America/Halifax (or America/Puerto_Rico for no daylight saving)",
    "CANADA/ATLANTIC": "America/Halifax", "NST": "America/St_Johns",
    "CANADA/NEWFOUNDLAND": "America/St_Johns", "BRAZIL/EAST": "America/Sao_Paulo",
    "CHILE/CONTINENTAL": "America/Santiago", "CUBA": "America/Havana", "JAMAICA": "America/Jamaica",
    "GMT": "Europe/London (or UTC)", "BST": "Europe/London", "GB": "Europe/London",
    "GB-EIRE": "Europe/London", "EIRE": "Europe/Dublin", "WET": "Europe/Lisbon",
    "PORTUGAL": "Europe/Lisbon", "CET": _CENTRAL_EUROPE, "CEST": _CENTRAL_EUROPE, "MET": _CENTRAL_EUROPE,
    "EET": _EASTERN_EUROPE, "EEST": _EASTERN_EUROPE, "POLAND": "Europe/Warsaw",
    "TURKEY": "Europe/Istanbul", "W-SU": "Europe/Moscow", "MSK": "Europe/Moscow",
    "IST": "Asia/Kolkata (India), Europe/Dublin (Ireland) or Asia/Jerusalem (Israel)",
    "ISRAEL": "Asia/Jerusalem", "IRAN": "Asia/Tehran", "EGYPT": "Africa/Cairo", "LIBYA": "Africa/Tripoli",
    "JST": "Asia/Tokyo", "JAPAN": "Asia/Tokyo", "KST": "Asia/Seoul", "ROK": "Asia/Seoul",
    "PRC": "Asia/Shanghai", "ROC": "Asia/Taipei", "HONGKONG": "Asia/Hong_Kong",
    "SINGAPORE": "Asia/Singapore", "ICELAND": "Atlantic/Reykjavik",
    "AEST": "Australia/Sydney (or Australia/Brisbane for no daylight saving)",
    "AEDT": "Australia/Sydney", "ACST": "Australia/Adelaide (or Australia/Darwin for no daylight saving)",
    "AWST": "Australia/Perth", "NZ": "Pacific/Auckland", "NZST": "Pacific/Auckland",
    "NZDT": "Pacific/Auckland",
    **dict.fromkeys(["UCT", "UNIVERSAL", "ZULU", "Z", "GMT0", "GMT+0", "GMT-0", "GREENWICH", "ETC/GMT",
                     "ETC/UCT", "ETC/UNIVERSAL", "ETC/ZULU", "ETC/GREENWICH", "ETC/GMT0"], "UTC"),
}
# Area/City names that tzdata keeps only as links to a renamed or merged zone.
_RENAMED = {
    "Asia/Calcutta": "Asia/Kolkata", "Asia/Saigon": "Asia/Ho_Chi_Minh", "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon", "Asia/Dacca": "Asia/Dhaka", "Asia/Chongqing": "Asia/Shanghai",
    "Asia/Chungking": "Asia/Shanghai", "Asia/Harbin": "Asia/Shanghai", "Asia/Tel_Aviv": "Asia/Jerusalem",
    "Asia/Istanbul": "Europe/Istanbul", "Asia/Ulan_Bator": "Asia/Ulaanbaatar", "Asia/Macao": "Asia/Macau",
    "Asia/Thimbu": "Asia/Thimphu", "Asia/Ujung_Pandang": "Asia/Makassar", "Asia/Ashkhabad": "Asia/Ashgabat",
    "Europe/Kiev": "Europe/Kyiv", "Europe/Uzhgorod": "Europe/Kyiv", "Europe/Zaporozhye": "Europe/Kyiv",
    "Europe/Belfast": "Europe/London", "Europe/Tiraspol": "Europe/Chisinau",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "America/Indianapolis": "America/Indiana/Indianapolis",
    "America/Fort_Wayne": "America/Indiana/Indianapolis", "America/Knox_IN": "America/Indiana/Knox",
    "America/Louisville": "America/Kentucky/Louisville", "America/Godthab": "America/Nuuk",
    "America/Montreal": "America/Toronto", "America/Shiprock": "America/Denver",
    "America/Atka": "America/Adak", "America/Ensenada": "America/Tijuana",
    "America/Santa_Isabel": "America/Tijuana", "America/Porto_Acre": "America/Rio_Branco",
    "America/Virgin": "America/St_Thomas", "America/Catamarca": "America/Argentina/Catamarca",
    "America/Cordoba": "America/Argentina/Cordoba", "America/Rosario": "America/Argentina/Cordoba",
    "America/Jujuy": "America/Argentina/Jujuy", "America/Mendoza": "America/Argentina/Mendoza",
    "America/Argentina/ComodRivadavia": "America/Argentina/Catamarca",
    "America/Coral_Harbour": "America/Atikokan", "America/Nipigon": "America/Toronto",
    "America/Thunder_Bay": "America/Toronto", "America/Rainy_River": "America/Winnipeg",
    "America/Pangnirtung": "America/Iqaluit", "America/Yellowknife": "America/Edmonton",
    "Africa/Asmera": "Africa/Asmara", "Africa/Timbuktu": "Africa/Bamako", "Asia/Kashgar": "Asia/Urumqi",
    "Asia/Choibalsan": "Asia/Ulaanbaatar", "Europe/Nicosia": "Asia/Nicosia",
    "Australia/Currie": "Australia/Hobart", "Australia/ACT": "Australia/Sydney",
    "Australia/Canberra": "Australia/Sydney", "Australia/NSW": "Australia/Sydney",
    "Australia/North": "Australia/Darwin", "Australia/Queensland": "Australia/Brisbane",
    "Australia/South": "Australia/Adelaide", "Australia/Tasmania": "Australia/Hobart",
    "Australia/Victoria": "Australia/Melbourne", "Australia/West": "Australia/Perth",
    "Australia/LHI": "Australia/Lord_Howe", "Australia/Yancowinna": "Australia/Broken_Hill",
    "Pacific/Samoa": "Pacific/Pago_Pago", "Pacific/Truk": "Pacific/Chuuk", "Pacific/Yap": "Pacific/Chuuk",
    "Pacific/Ponape": "Pacific/Pohnpei", "Pacific/Enderbury": "Pacific/Kanton",
    "Pacific/Johnston": "Pacific/Honolulu", "Atlantic/Faeroe": "Atlantic/Faroe",
    "Atlantic/Jan_Mayen": "Arctic/Longyearbyen", "Antarctica/South_Pole": "Pacific/Auckland",
}


def timezone_problem(name: str) -> str | None:
    """Why `name` will not do as the business's time zone, with the names to use; None if fine.

    Only UTC and canonical Area/City names pass: an abbreviation like EST is ambiguous (and, as a
    tz name, has no daylight saving), and legacy names hide which place's rules are meant."""
    if name in ("UTC", "Etc/UTC"):
        return None
    if _OFFSET.match(name):
        return (f"{name!r} is a fixed offset that ignores daylight saving (and Etc/GMT+5 means "
                f"UTC-5); use the Area/City zone where the business is, like 'Europe/London'")
    if (hint := _LEGACY.get(name.upper())) is not None:
        kind = "an abbreviation, not a place" if re.fullmatch(r"[A-Z]{1,5}(\d[A-Z]{3})?", name.upper()) \
            else "a legacy name"
        return f"{name!r} is {kind}; use {hint}"
    if name in _RENAMED:
        return f"{name!r} is an old name; use {_RENAMED[name]!r}"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone like 'Europe/London'{_zone_guess(name)}"
    if not _AREA_CITY.match(name):
        return (f"{name!r} is a legacy name; use the Area/City zone where the business is, "
                f"like 'America/New_York' or 'Europe/London'")
    return None


def _zone_guess(name: str) -> str:
    zones = [z for z in available_timezones() if _AREA_CITY.match(z) and z not in _RENAMED]
    close = difflib.get_close_matches(name, zones, n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- parsing ---------------------------------------------------------------------------------------

def _spans(raw: object, where: str, errors: list[str]) -> dict[str, OpenSpan]:
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a table of weekday = \"HH:MM-HH:MM\"")
        return {}
    spans = {}
    for day, value in raw.items():
        if day not in WEEKDAYS:
            errors.append(f"{where}.{day}: unknown weekday; {_weekday_hint(str(day))}")
            continue
        span = _span(value, f"{where}.{day}", errors)
        if span is not None:
            spans[day] = span
    return spans


def _span(value: object, where: str, errors: list[str]) -> OpenSpan | None:
    try:
        opens, closes = (time.fromisoformat(p.strip()) for p in str(value).split("-"))
    except ValueError:
        errors.append(f"{where}: {value!r} is not \"HH:MM-HH:MM\"")
        return None
    if closes <= opens:
        errors.append(f"{where}: closes before it opens ({value})")
        return None
    return OpenSpan(opens, closes)


def _services(raw: object, errors: list[str]) -> list[Service]:
    if not isinstance(raw, list):
        errors.append("services: expected a list of [[services]] tables")
        return []
    services = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            _unknown_keys(item, SERVICE_KEYS, f"services[{i}]", errors)
        try:
            duration = int(item.get("duration_min", 0))
        except (TypeError, ValueError, AttributeError):
            duration = 0
        if not isinstance(item, dict) or not item.get("name") or duration <= 0:
            errors.append(f"services[{i}]: needs a name and a positive duration_min")
            continue
        services.append(Service(str(item["name"]), duration, str(item.get("price", "")),
                                str(item.get("description", ""))))
    return services


def _exceptions(raw: object, errors: list[str]) -> dict[date, OpenSpan | None]:
    if not isinstance(raw, dict):
        errors.append('exceptions: expected a table of "YYYY-MM-DD" = "closed" or "HH:MM-HH:MM"')
        return {}
    exceptions: dict[date, OpenSpan | None] = {}
    for key, value in raw.items():
        try:
            day = date.fromisoformat(str(key))
        except ValueError:
            errors.append(f"exceptions.{key}: not a date like 2026-12-25")
            continue
        if str(value).strip().lower() == "closed":
            exceptions[day] = None
        elif (span := _span(value, f"exceptions.{key}", errors)) is not None:
            exceptions[day] = span
    return exceptions


def _booking(raw: object, services: list[Service], errors: list[str]) -> BookingRules:
    if not isinstance(raw, dict):
        errors.append("booking: expected a table")
        return BookingRules()
    _unknown_keys(raw, BOOKING_KEYS, "booking", errors)
    values = {}
    for rule, default in (("slot_step_min", 15), ("max_days_ahead", 60), ("min_notice_min", 60),
                          ("capacity", 1)):
        try:
            values[rule] = int(raw.get(rule, default))
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
    return booking


def parse_profile(data: dict) -> BusinessProfile:
    """The profile from its parsed file; every mistake is collected into one ProfileError."""
    errors: list[str] = []
    _unknown_keys(data, TOP_KEYS, "", errors)
    name = str(data.get("name", "")).strip()
    if not name:
        errors.append("name: the business needs a name")
    timezone = str(data.get("timezone", "UTC"))
    if (problem := timezone_problem(timezone)) is not None:
        errors.append(f"timezone: {problem}")
    hours = _spans(data.get("hours", {}), "hours", errors)
    transfer = _spans(data["transfer_hours"], "transfer_hours", errors) if "transfer_hours" in data else hours
    services = _services(data.get("services", []), errors)
    if not services:
        errors.append("services: list at least one service")
    for key in ("owner_phone", "owner_sms"):
        value = str(data.get(key, ""))
        if value and not (value.startswith("+") and value[1:].isdigit()):
            errors.append(f"{key}: {value!r} is not an E.164 number like +15551230000")
    exceptions = _exceptions(data.get("exceptions", {}), errors)
    booking = _booking(data.get("booking", {}), services, errors)
    faq = data.get("faq", {})
    if not isinstance(faq, dict):
        errors.append('faq: expected a table of topic = "answer"')
        faq = {}
    if errors:
        raise ProfileError("business profile has mistakes:\n  - " + "\n  - ".join(errors))
    greeting = str(data.get("greeting") or f"Thanks for calling {name}. How can I help you today?")
    return BusinessProfile(
        name=name, timezone=timezone, greeting=greeting, hours=hours, transfer_hours=transfer,
        services=tuple(services), faq={str(k): str(v) for k, v in faq.items()},
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
