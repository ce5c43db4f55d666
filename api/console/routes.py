"""The console's URLs; their errors are answered by api/console/errors.py (wired in main.py)."""

from __future__ import annotations

from starlette.routing import Route

from api.console.json_api import api_bookings, api_call, api_calls, api_messages
from api.console.pages import bookings_page, call_page, calls_page, messages_page

CONSOLE_ROUTES = [
    Route("/calls", calls_page),
    Route("/calls/{call_sid}", call_page),
    Route("/bookings", bookings_page),
    Route("/messages", messages_page),
    Route("/api/calls", api_calls),
    Route("/api/calls/{call_sid}", api_call),
    Route("/api/bookings", api_bookings),
    Route("/api/messages", api_messages),
]
