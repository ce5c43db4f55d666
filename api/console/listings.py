"""The lists the pages and the JSON both show: one request's filters, asked of storage."""

from __future__ import annotations

from starlette.requests import Request

from api.console.query import Query, booking_filter
from services.runtime import Runtime
from services.storage import BookingFilter, BookingRecord, CallSummary, MessageFilter, MessageRecord


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def calls(request: Request) -> tuple[Query, list[CallSummary], int]:
    """One page of calls and how many match in all."""
    server = runtime(request)
    query = Query.parse(request, server.profile.tz)
    found, total = await server.storage.calls.list_calls(query.calls, page=query.page, per_page=query.per_page)
    return query, found, total


async def messages(request: Request) -> tuple[Query, list[MessageRecord], int]:
    """One page of messages and how many match in all."""
    server = runtime(request)
    query = Query.parse(request, server.profile.tz)
    found, total = await server.storage.messages.list_messages(
        MessageFilter(query.since, query.until, query.caller), page=query.page, per_page=query.per_page)
    return query, found, total


async def bookings(request: Request) -> tuple[BookingFilter, list[BookingRecord]]:
    """The bookings the filters select; not paged."""
    server = runtime(request)
    filters = booking_filter(request, server.profile.tz)
    return filters, await server.storage.bookings.list_bookings(filters)
