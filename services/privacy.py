"""Phone numbers never appear in full in logs at INFO and above."""

from __future__ import annotations


def mask_phone(number: str | None) -> str:
    """'+15551234567' -> '+1*******567'; short or empty values are masked whole."""
    if not number:
        return "<unknown>"
    digits = number.strip()
    if len(digits) <= 5:
        return "*" * len(digits)
    keep_head = 2 if digits.startswith("+") else 0
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 3) + digits[-3:]
