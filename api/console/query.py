"""Reading a request's filters: once, for the page and the JSON alike.

Anything unreadable raises BadFilter, which api/console/errors.py answers with a 400 that names
the parameter; the endpoints never catch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.datastructures import QueryParams
from starlette.requests import Request

from services.storage import BookingFilter, CallFilter
from services.storage.models import utcnow
from services.storage.vocabulary import Outcome

PER_PAGE = 25
MAX_PER_PAGE = 200


class BadFilter(ValueError):
    """A query parameter that cannot be read; the message names it."""


def _moment(value: str, name: str, tz: ZoneInfo, *, end_of_day: bool) -> datetime | None:
    """'2026-11-23' (a local date; `to` includes the whole day) or an ISO datetime, in UTC.

    Converted here rather than when the query binds it: a moment with no UTC time (before
    year 1, after 9999) is the caller's 400, not the server's 500.
    """
    value = value.strip()
    if not value:
        return None
    try:
        return _local_moment(value, tz, end_of_day=end_of_day).astimezone(UTC)
    except OverflowError:
        raise BadFilter(f"{name}={value!r}: out of range (years 1 to 9999, in UTC)") from None
    except ValueError:
        raise BadFilter(f"{name}={value!r}: use a date like 2026-11-23 or an ISO 8601 time") from None


def _local_moment(value: str, tz: ZoneInfo, *, end_of_day: bool) -> datetime:
    """The moment as written: in the business's zone unless it names its own."""
    if len(value) != 10:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=tz)
    day = date.fromisoformat(value)
    return datetime.combine(day + timedelta(days=1) if end_of_day else day, time(), tz)


def _int(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    """A whole number in ASCII digits, clamped to [low, high] (str.isdigit() also takes '²')."""
    raw = params.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise BadFilter(f"{name}={raw!r}: a whole number, please")
    if len(raw) > len(str(high)):  # int() refuses over 4,300 digits; any such number is too high
        return high
    return max(low, min(high, int(raw)))


@dataclass(frozen=True)
class Query:
    """The filters of one request, parsed once for the page and the JSON alike."""
    since: datetime | None
    until: datetime | None
    outcome: str | None
    caller: str | None
    page: int
    per_page: int
    raw: dict[str, str]

    @classmethod
    def parse(cls, request: Request, tz: ZoneInfo) -> Query:
        params = request.query_params
        outcome = params.get("outcome", "").strip() or None
        if outcome and outcome not in tuple(Outcome):
            raise BadFilter(f"outcome={outcome!r}: one of {', '.join(Outcome)}")
        caller = "".join(ch for ch in params.get("caller", "") if ch.isdigit()) or None
        raw = {k: params.get(k, "") for k in ("from", "to", "outcome", "caller", "per_page")}
        return cls(since=_moment(params.get("from", ""), "from", tz, end_of_day=False),
                   until=_moment(params.get("to", ""), "to", tz, end_of_day=True),
                   outcome=outcome, caller=caller, page=_int(params, "page", 1, 1, 1_000_000),
                   per_page=_int(params, "per_page", PER_PAGE, 1, MAX_PER_PAGE), raw=raw)

    @property
    def calls(self) -> CallFilter:
        return CallFilter(since=self.since, until=self.until, outcome=self.outcome, caller=self.caller)

    def link(self, **changes: Any) -> str:
        """The query string of this view with some parameters changed (paging links)."""
        values = {**{k: v for k, v in self.raw.items() if v}, "page": self.page, **changes}
        if values.get("page") == 1:
            values.pop("page")
        return "?" + urlencode(values) if values else "?"


def booking_filter(request: Request, tz: ZoneInfo) -> BookingFilter:
    """Upcoming by default: from now on, unless `from` says otherwise."""
    params = request.query_params
    since = _moment(params.get("from", ""), "from", tz, end_of_day=False) or utcnow()
    until = _moment(params.get("to", ""), "to", tz, end_of_day=True)
    phone = "".join(ch for ch in (params.get("caller") or params.get("phone") or "") if ch.isdigit()) or None
    cancelled = params.get("include_cancelled", "").lower() in ("1", "true", "yes", "on")
    return BookingFilter(since=since, until=until, phone=phone, include_cancelled=cancelled)
