"""The refusals more than one place gives, worded once: the tools give them, and so does the
reading of the tools' arguments (tool_args.py), so the caller hears the same words whether the
model sent an argument that cannot be read or one the tool cannot use.

A refusal's `reason` is said to the caller as it is; when the caller can put it right, `ask` says
what they must give and `note` what the brain should do (the conventions are in tools.py).
"""

from __future__ import annotations

from typing import Any

from services.receptionist.tool_types import ToolResult

NO_SERVICE = "we don't offer that service"
UNREADABLE_TIME = "I need the time as HH:MM, for example 15:30"
UNREADABLE_DATE = "I didn't catch the day"
NO_NAME = "I need the caller's name for the booking"
NO_PHONE = "I need a phone number for the booking"
SEVERAL = "there are several appointments for that number, so I need to know which one"
EMPTY_MESSAGE = "the message was empty"

# Refusals the caller can put right: what is missing, and what the brain should do about it.
# UNREADABLE_TIME and NO_NAME are worded for the brain rather than the caller; `ask` lets a
# brain say it in its own words.
FOLLOW_UP: dict[str, dict[str, str]] = {
    UNREADABLE_TIME: {"ask": "time", "note": "Send the time as HH:MM (24-hour); ask the caller if unsure."},
    UNREADABLE_DATE: {"ask": "date", "note": "Send the date as YYYY-MM-DD; ask the caller if unsure."},
    NO_NAME: {"ask": "name", "note": "Ask the caller for their name."},
    NO_PHONE: {"ask": "phone", "note": "Ask for a number to book under."},
    SEVERAL: {"ask": "which", "note": "Ask which one (find_bookings lists them), then send its code."},
    EMPTY_MESSAGE: {"ask": "message", "note": "Ask what the caller would like to pass on."},
}


def refuse(reason: str, **extra: Any) -> ToolResult:
    """A refusal, with what to ask for when the caller can put it right."""
    return ToolResult({"ok": False, "reason": reason, **FOLLOW_UP.get(reason, {}), **extra})


def no_such_service(services: list[str]) -> ToolResult:
    """A service the business does not offer, or none named: the ones it does, to choose from."""
    return refuse(NO_SERVICE, services=services)
