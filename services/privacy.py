"""What may reach the logs at INFO and above: masked phone numbers, call SIDs, kinds, counts,
statuses, durations, and the services and times of bookings. Never what a caller said or was
told (names, messages, transcripts, Zylin's lines), nor a booking code; DEBUG may carry more.

Log lines that print caller data go through these functions; a call event's detail, which holds
whatever a tool was given and returned, goes through `log_safe` as a whole (docs/security.md).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

# Seven digits or more, with the separators people write between them ("+1 (555) 010-7777",
# "555.010.7777"); not inside a word (a call SID), and not an ISO date (2026-11-24).
_PHONE_LIKE = re.compile(r"(?<![\w+])(?!\d{4}-\d{2}-\d{2}(?!\d))\+?\(?\d(?:[\s().-]{0,2}\d){6,}(?!\w)")

# The paths in an event's detail whose values are logged as they are (numbers in them masked).
# A list's items have the list's path. Anything else is caller content, or may be: what the
# brain passed a tool, and the brain's own reasons, are written from what the caller said.
LOG_SAFE_PATHS = frozenset({
    "name", "provider", "spoken_by", "error", "status", "why", "duration_s", "interrupted", "speech_ms",
    "arguments.service", "arguments.date", "arguments.time", "arguments.part_of_day",
    "arguments.start", "arguments.new_start", "arguments.urgency",
    "result.ok", "result.retryable", "result.reason", "result.ask", "result.service",
    "result.services", "result.date", "result.duration_min", "result.requested",
    "result.requested_free", "result.slots", "result.alternatives", "result.start",
    "result.bookings.service", "result.bookings.start",
})
# Keys masked wherever they are: numbers (a transfer's target, a booking's phone), and booking
# codes, which are enough to move or cancel someone's appointment.
PHONE_KEYS = frozenset({"phone", "customer_phone", "caller", "called", "target", "to", "from", "number"})
CODE_KEYS = frozenset({"code"})


def mask_phone(number: str | None) -> str:
    """'+15551234567' -> '+1*******567'; short or empty values are masked whole."""
    if not number:
        return "<unknown>"
    digits = number.strip()
    if len(digits) <= 5:
        return "*" * len(digits)
    keep_head = 2 if digits.startswith("+") else 0
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 3) + digits[-3:]


def mask_code(code: str | None) -> str:
    """'K7M2QX' -> '****QX': enough to tell two bookings apart in a log, not to use one."""
    code = (code or "").strip()
    if len(code) <= 4:
        return "*" * len(code)
    return "*" * (len(code) - 2) + code[-2:]


def scrub(text: str) -> str:
    """`text` with every phone-like number in it masked: for free text whose source we do not
    control (a provider's error message) but which is worth logging."""
    return _PHONE_LIKE.sub(lambda m: mask_phone(_compact(m.group())), text)


def _compact(number: str) -> str:
    return ("+" if number.startswith("+") else "") + "".join(ch for ch in number if ch.isdigit())


def log_safe(value: Any, path: str = "") -> Any:
    """A call event's detail as it may be logged at INFO: values at LOG_SAFE_PATHS kept (with
    phone-like numbers masked), numbers and codes masked, everything else REDACTED. Its shape is
    kept, so the log still shows which arguments a tool got and what kind of answer it gave."""
    if isinstance(value, dict):
        return {key: log_safe(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [log_safe(item, path) for item in value]
    if value is None or isinstance(value, bool) or value == "":
        return value
    key = path.rsplit(".", 1)[-1]
    if key in PHONE_KEYS:
        return mask_phone(str(value))
    if key in CODE_KEYS:
        return mask_code(str(value))
    if path not in LOG_SAFE_PATHS:
        return REDACTED
    if isinstance(value, (int, float)):
        return value
    return scrub(str(value))


def describe_error(exc: BaseException) -> str:
    """An exception's kind and where it was raised, without its message (which may quote the
    values that caused it): 'KeyError at booking.py:212'."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(exc).__name__
    filename = tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {filename}:{tb.tb_lineno}"
