"""The console's data as JSON: the pages' lists and one call's record, times in UTC (ISO 8601)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import admin_only
from api.console import listings
from api.console.query import Query
from services.storage import BookingFilter


def query_json(query: Query) -> dict[str, Any]:
    """The filters as applied (UTC moments, digits of the caller), so a client sees what it asked."""
    return {"from": query.since.isoformat() if query.since else None,
            "to": query.until.isoformat() if query.until else None,
            "outcome": query.outcome, "caller": query.caller}


def booking_filter_json(filters: BookingFilter) -> dict[str, Any]:
    return {"from": filters.since.isoformat() if filters.since else None,
            "to": filters.until.isoformat() if filters.until else None,
            "caller": filters.phone, "include_cancelled": filters.include_cancelled}


@admin_only
async def api_calls(request: Request) -> Response:
    query, calls, total = await listings.calls(request)
    return JSONResponse({"calls": [c.as_json() for c in calls], "total": total, "page": query.page,
                         "per_page": query.per_page, "filters": query_json(query)})


@admin_only
async def api_call(request: Request) -> Response:
    detail = await listings.runtime(request).storage.calls.get_call(request.path_params["call_sid"])
    if detail is None:
        return JSONResponse({"error": "no call with that CallSid"}, status_code=404)
    return JSONResponse(detail.as_json())


@admin_only
async def api_bookings(request: Request) -> Response:
    filters, bookings = await listings.bookings(request)
    return JSONResponse({"bookings": [b.as_json() for b in bookings], "filters": booking_filter_json(filters)})


@admin_only
async def api_messages(request: Request) -> Response:
    query, messages, total = await listings.messages(request)
    return JSONResponse({"messages": [m.as_json() for m in messages], "total": total, "page": query.page,
                         "per_page": query.per_page, "filters": query_json(query)})
