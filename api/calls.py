"""The call log for the owner: server-rendered pages and the same data as JSON.

    /calls             recent calls, newest first; filters: from, to (dates), outcome, caller
    /calls/{CallSid}   one call: the conversation, latency per turn, what was booked or escalated
    /bookings          upcoming bookings            /messages   messages taken for the owner
    /api/calls  /api/calls/{CallSid}  /api/bookings  /api/messages   the same, as JSON

Every route here needs ADMIN_TOKEN (api/auth.py). Dates in filters are the business's local
dates; JSON times are UTC (ISO 8601).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from api.auth import admin_only
from services.runtime import Runtime
from services.storage import BookingFilter, CallFilter, MessageFilter
from services.storage.calls import TurnRow
from services.storage.models import OUTCOMES, utcnow

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
PER_PAGE = 25
MAX_PER_PAGE = 200
OUTCOME_LABELS = {"booked": "booked", "message": "message", "transferred": "transferred",
                  "hung_up": "hung up", "error": "error", "none": "no action"}
BAR_PARTS = (("asr_ms", "speech recognition", "#4e79a7"), ("llm_ttft_ms", "LLM first token", "#af7aa1"),
             ("tool_ms", "tools", "#f28e2b"), ("tts_ttfb_ms", "speech synthesis", "#59a14f"),
             ("overhead_ms", "Zylin overhead", "#9c9c9c"))
BAR_WIDTH = 300


class BadFilter(ValueError):
    """A query parameter that cannot be read; the message names it."""


# --- filters ----------------------------------------------------------------------------------------

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


def _int(params, name: str, default: int, low: int, high: int) -> int:
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
        if outcome and outcome not in OUTCOMES:
            raise BadFilter(f"outcome={outcome!r}: one of {', '.join(OUTCOMES)}")
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

    def as_json(self) -> dict[str, Any]:
        return {"from": self.since.isoformat() if self.since else None,
                "to": self.until.isoformat() if self.until else None,
                "outcome": self.outcome, "caller": self.caller}


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _bad(request: Request, error: BadFilter) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(error)}, status_code=400)
    return _page(request, "error.html", {"title": "Bad filter", "message": str(error)}, status_code=400)


# --- presentation -------------------------------------------------------------------------------------

def latency_bar(turn: TurnRow, scale_ms: float) -> list[dict[str, Any]]:
    """The stacked parts of a reply's first-audio latency, as SVG rectangles."""
    x = 0.0
    parts = []
    for field, label, colour in BAR_PARTS:
        value = max(getattr(turn, field) or 0.0, 0.0)
        width = BAR_WIDTH * value / scale_ms if scale_ms else 0.0
        if value:
            parts.append({"x": round(x, 1), "width": round(width, 1), "colour": colour, "label": label,
                          "ms": value})
        x += width
    return parts


def split_heard(text: str, heard: str | None) -> tuple[str, str]:
    """An interrupted line as (what the caller heard, what they did not)."""
    heard = (heard or "").removesuffix("...").strip()
    if heard and text.startswith(heard):
        return heard, text[len(heard):].strip()
    return (heard, text) if heard else ("", text)


def _filters(tz: ZoneInfo) -> dict[str, Any]:
    def local(moment: datetime | None, fmt: str = "%a %d %b %Y, %H:%M:%S") -> str:
        return moment.astimezone(tz).strftime(fmt) if moment else ""

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:,.0f} ms"

    def duration(seconds: float | None) -> str:
        if seconds is None:
            return "–"
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes}:{secs:02d}"

    return {"local": local, "ms": ms, "duration": duration, "split_heard": split_heard,
            "outcome_label": lambda o: OUTCOME_LABELS.get(o or "", o or "open")}


def _page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    runtime = _runtime(request)
    tz = runtime.profile.tz
    context = {"business": runtime.profile.name, "tz": runtime.profile.timezone, "outcomes": OUTCOMES,
               "outcome_labels": OUTCOME_LABELS, **_filters(tz), **context}
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


# --- pages ------------------------------------------------------------------------------------------

@admin_only
async def calls_page(request: Request) -> Response:
    try:
        query, calls, total = await _calls(request)
    except BadFilter as error:
        return _bad(request, error)
    pages = max(1, -(-total // query.per_page))
    return _page(request, "calls.html", {"title": "Calls", "calls": calls, "total": total, "query": query,
                                         "pages": pages})


@admin_only
async def call_page(request: Request) -> Response:
    runtime = _runtime(request)
    detail = await runtime.storage.calls.get_call(request.path_params["call_sid"])
    if detail is None:
        return _page(request, "error.html", {"title": "No such call",
                                             "message": "No call with that CallSid is stored."}, 404)
    target = runtime.settings.latency_target_ms
    scale = max([target, *detail.reply_latencies_ms]) * 1.05
    bars = {t.idx: latency_bar(t, scale) for t in detail.turns if t.first_audio_ms is not None}
    return _page(request, "call.html", {
        "title": f"Call {detail.call.call_sid}", "detail": detail, "bars": bars, "bar_width": BAR_WIDTH,
        "target_x": round(BAR_WIDTH * target / scale, 1), "target_ms": target, "bar_parts": BAR_PARTS,
        "started": detail.call.started_at})


@admin_only
async def bookings_page(request: Request) -> Response:
    try:
        filters, bookings = await _bookings(request)
    except BadFilter as error:
        return _bad(request, error)
    return _page(request, "bookings.html", {"title": "Bookings", "bookings": bookings,
                                            "raw": dict(request.query_params)})


@admin_only
async def messages_page(request: Request) -> Response:
    try:
        query, messages, total = await _messages(request)
    except BadFilter as error:
        return _bad(request, error)
    return _page(request, "messages.html", {"title": "Messages", "messages": messages, "total": total,
                                            "query": query, "pages": max(1, -(-total // query.per_page))})


async def _calls(request: Request) -> tuple[Query, list, int]:
    runtime = _runtime(request)
    query = Query.parse(request, runtime.profile.tz)
    calls, total = await runtime.storage.calls.list_calls(query.calls, page=query.page, per_page=query.per_page)
    return query, calls, total


async def _messages(request: Request) -> tuple[Query, list, int]:
    runtime = _runtime(request)
    query = Query.parse(request, runtime.profile.tz)
    messages, total = await runtime.storage.messages.list_messages(
        MessageFilter(query.since, query.until, query.caller), page=query.page, per_page=query.per_page)
    return query, messages, total


async def _bookings(request: Request) -> tuple[BookingFilter, list]:
    runtime = _runtime(request)
    filters = _booking_filter(request, runtime.profile.tz)
    return filters, await runtime.storage.bookings.list_bookings(filters)


def _booking_filter(request: Request, tz: ZoneInfo) -> BookingFilter:
    """Upcoming by default: from now on, unless `from` says otherwise."""
    params = request.query_params
    since = _moment(params.get("from", ""), "from", tz, end_of_day=False) or utcnow()
    until = _moment(params.get("to", ""), "to", tz, end_of_day=True)
    phone = "".join(ch for ch in (params.get("caller") or params.get("phone") or "") if ch.isdigit()) or None
    cancelled = params.get("include_cancelled", "").lower() in ("1", "true", "yes", "on")
    return BookingFilter(since=since, until=until, phone=phone, include_cancelled=cancelled)


# --- JSON ---------------------------------------------------------------------------------------------

@admin_only
async def api_calls(request: Request) -> Response:
    try:
        query, calls, total = await _calls(request)
    except BadFilter as error:
        return _bad(request, error)
    return JSONResponse({"calls": [c.as_json() for c in calls], "total": total, "page": query.page,
                         "per_page": query.per_page, "filters": query.as_json()})


@admin_only
async def api_call(request: Request) -> Response:
    detail = await _runtime(request).storage.calls.get_call(request.path_params["call_sid"])
    if detail is None:
        return JSONResponse({"error": "no call with that CallSid"}, status_code=404)
    return JSONResponse(detail.as_json())


@admin_only
async def api_bookings(request: Request) -> Response:
    try:
        filters, bookings = await _bookings(request)
    except BadFilter as error:
        return _bad(request, error)
    return JSONResponse({"bookings": [b.as_json() for b in bookings],
                         "filters": {"from": filters.since.isoformat() if filters.since else None,
                                     "to": filters.until.isoformat() if filters.until else None,
                                     "caller": filters.phone, "include_cancelled": filters.include_cancelled}})


@admin_only
async def api_messages(request: Request) -> Response:
    try:
        query, messages, total = await _messages(request)
    except BadFilter as error:
        return _bad(request, error)
    return JSONResponse({"messages": [m.as_json() for m in messages], "total": total, "page": query.page,
                         "per_page": query.per_page, "filters": query.as_json()})


REVIEW_ROUTES = [
    Route("/calls", calls_page),
    Route("/calls/{call_sid}", call_page),
    Route("/bookings", bookings_page),
    Route("/messages", messages_page),
    Route("/api/calls", api_calls),
    Route("/api/calls/{call_sid}", api_call),
    Route("/api/bookings", api_bookings),
    Route("/api/messages", api_messages),
]
