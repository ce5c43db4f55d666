"""Plain, frozen views of stored bookings and messages: what callers of the storage API get back."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from services.storage.models import Booking, OwnerMessage
from services.storage.vocabulary import ACTIVE_BOOKING


@dataclass(frozen=True, slots=True)
class BookingRecord:
    code: str                 # the confirmation code the caller is told
    service: str
    start_utc: datetime
    end_utc: datetime
    customer_name: str
    customer_phone: str
    status: str               # vocabulary.BookingStatus
    call_sid: str | None      # the call that made it
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_BOOKING

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    name: str
    phone: str
    message: str
    urgency: str              # low | normal | urgent
    created_at: datetime
    sms_status: str           # vocabulary.SmsStatus
    call_sid: str | None

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


def booking_record(row: Booking, call_sid: str | None) -> BookingRecord:
    return BookingRecord(row.code, row.service, row.start_utc, row.end_utc, row.customer_name,
                         row.customer_phone, row.status, call_sid, row.created_at, row.updated_at)


def message_record(row: OwnerMessage, call_sid: str | None) -> MessageRecord:
    return MessageRecord(row.id, row.name, row.phone, row.message, row.urgency, row.created_at,
                         row.sms_status, call_sid)
