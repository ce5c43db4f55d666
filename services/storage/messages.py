"""Messages taken for the owner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from services.storage.bookings import normal_phone, phone_digits
from services.storage.database import Database
from services.storage.models import Call, OwnerMessage, utcnow
from services.storage.records import MessageRecord, message_record
from services.storage.vocabulary import SmsStatus


@dataclass(frozen=True, slots=True)
class MessageFilter:
    since: datetime | None = None
    until: datetime | None = None
    phone: str | None = None          # digits anywhere in the number left for a call-back


class Messages:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save_message(self, *, message: str, name: str = "", phone: str = "", urgency: str = "normal",
                           call_sid: str | None = None, sms_status: str = SmsStatus.PENDING) -> MessageRecord:
        async with self.db.write() as session:
            call_id = await session.scalar(select(Call.id).where(Call.call_sid == call_sid)) if call_sid else None
            row = OwnerMessage(call_id=call_id, name=name, phone=normal_phone(phone), message=message,
                               urgency=urgency, created_at=utcnow(), sms_status=sms_status)
            session.add(row)
            await session.flush()
            return message_record(row, call_sid if call_id else None)

    async def set_sms_status(self, message_id: int, status: str) -> None:
        if status not in tuple(SmsStatus):
            raise ValueError(f"sms status must be one of {', '.join(SmsStatus)}, not {status!r}")
        async with self.db.write() as session:
            await session.execute(update(OwnerMessage).where(OwnerMessage.id == message_id)
                                  .values(sms_status=status))

    async def list_messages(self, filters: MessageFilter = MessageFilter(), *, page: int = 1,
                            per_page: int = 50) -> tuple[list[MessageRecord], int]:
        """Newest first, one page, and how many match in all."""
        query = select(OwnerMessage, Call.call_sid).outerjoin(Call, OwnerMessage.call_id == Call.id)
        count = select(func.count(OwnerMessage.id))
        conditions = []
        if filters.since is not None:
            conditions.append(OwnerMessage.created_at >= filters.since)
        if filters.until is not None:
            conditions.append(OwnerMessage.created_at < filters.until)
        if filters.phone:
            conditions.append(OwnerMessage.phone.contains(phone_digits(filters.phone), autoescape=True))
        async with self.db.read() as session:
            total = await session.scalar(count.where(*conditions))
            rows = (await session.execute(query.where(*conditions)
                                          .order_by(OwnerMessage.created_at.desc(), OwnerMessage.id.desc())
                                          .limit(per_page).offset((page - 1) * per_page))).all()
        return [message_record(row, call_sid) for row, call_sid in rows], total or 0
