"""The tables. Times are UTC datetimes (timezone-aware in Python, whatever the database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.storage.vocabulary import BookingStatus, CallMode, CallStatus, SmsStatus

TWILIO_PROGRESS = ("queued", "initiated", "ringing", "in-progress")      # Twilio's CallStatus, in order,
TWILIO_FINAL = ("completed", "busy", "failed", "no-answer", "canceled")  # then one of these, for good

NUMBER_LENGTH = 512  # a phone number, or on a SIP call the SIP URI Twilio sends as From/To


class Clipped(TypeDecorator):
    """A bounded string for values from outside (Twilio, the caller, the LLM), cut to its length
    on the way in: on PostgreSQL an over-long value fails the whole write for good, losing the
    call's record or the owner's message for one long field.

    Identifiers (CallSid, booking codes) stay plain String: cutting one could merge two rows.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        limit = cast(String, self.impl).length  # TypeDecorator.__init__ made `impl` a String(length)
        if isinstance(value, str) and limit is not None and len(value) > limit:
            return value[:limit]
        return value


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; naive datetimes are refused (their zone is a guess)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    from_number: Mapped[str] = mapped_column(Clipped(NUMBER_LENGTH), default="", index=True)
    to_number: Mapped[str] = mapped_column(Clipped(NUMBER_LENGTH), default="")
    mode: Mapped[str] = mapped_column(String(16), default=CallMode.STREAM)   # vocabulary.CallMode
    started_at: Mapped[datetime] = mapped_column(index=True)                 # the webhook
    stream_started_at: Mapped[datetime | None]                               # the `start` event
    ended_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default=CallStatus.IN_PROGRESS, index=True)
    outcome: Mapped[str | None] = mapped_column(String(16), index=True)     # vocabulary.Outcome
    summary: Mapped[str] = mapped_column(Text, default="")
    greeting_ms: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(Clipped(120))
    twilio_status: Mapped[str | None] = mapped_column(Clipped(24))            # status callback
    duration_s: Mapped[int | None] = mapped_column(Integer)                   # Twilio's CallDuration
    # legacy record mode: history, turn counter, recordings heard, misses (services/legacy/)
    legacy_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the highest stream (segment) admitted for this call: one live stream, never one replayed
    stream_segment: Mapped[int | None] = mapped_column(Integer)
    # record mode: who runs this call's turn now, until when (callbacks of a call, one at a time)
    turn_lease_owner: Mapped[str | None] = mapped_column(String(40))
    turn_lease_until: Mapped[datetime | None]

    turns: Mapped[list[Turn]] = relationship(back_populates="call", order_by="Turn.idx",
                                             cascade="all, delete-orphan", passive_deletes=True)
    events: Mapped[list[Event]] = relationship(back_populates="call", order_by="Event.id",
                                               cascade="all, delete-orphan", passive_deletes=True)

    @property
    def twilio_over(self) -> bool:
        """Twilio has reported the phone call over (completed, busy, failed, ...)."""
        return self.twilio_status in TWILIO_FINAL

    def advance_twilio_status(self, status: str) -> bool:
        """Take a status callback's CallStatus if it moves the call forward; False if not.

        Callbacks can arrive out of order (a late 'ringing' after 'completed'), but a call only
        moves forward, and its final status is never replaced by another.
        """
        if not status or self.twilio_over or _twilio_rank(status) <= _twilio_rank(self.twilio_status):
            return False
        self.twilio_status = status
        return True


def _twilio_rank(status: str | None) -> int:
    """Where a CallStatus comes in a call: nothing yet < a status we do not know < the known ones."""
    if status is None:
        return -2
    if status in TWILIO_FINAL:
        return len(TWILIO_PROGRESS)
    return TWILIO_PROGRESS.index(status) if status in TWILIO_PROGRESS else -1


class Turn(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(8))           # vocabulary.Speaker
    text: Mapped[str] = mapped_column(Text, default="")
    heard_text: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime]
    # docs/architecture.md "Latency", on caller turns (the latency of the reply to them): the
    # durations of orchestrator.latency.LATENCY_FIELDS (tests/test_latency_fields.py keeps them equal)
    speech_end_at: Mapped[datetime | None]
    asr_ms: Mapped[float | None] = mapped_column(Float)
    llm_ttft_ms: Mapped[float | None] = mapped_column(Float)
    tool_ms: Mapped[float | None] = mapped_column(Float)
    tts_ttfb_ms: Mapped[float | None] = mapped_column(Float)
    first_audio_ms: Mapped[float | None] = mapped_column(Float)
    heard_ms: Mapped[float | None] = mapped_column(Float)
    overhead_ms: Mapped[float | None] = mapped_column(Float)

    call: Mapped[Call] = relationship(back_populates="turns")

    __table_args__ = (UniqueConstraint("call_id", "idx"),)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))            # vocabulary.EventKind
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime]

    call: Mapped[Call] = relationship(back_populates="events")


class OwnerMessage(Base):
    """A message taken for the owner."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(Clipped(120), default="")
    phone: Mapped[str] = mapped_column(Clipped(NUMBER_LENGTH), default="")
    message: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(Clipped(16), default="normal")  # low | normal | urgent
    created_at: Mapped[datetime] = mapped_column(index=True)
    sms_status: Mapped[str] = mapped_column(String(24), default=SmsStatus.PENDING)


class Booking(Base):
    __tablename__ = "bookings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)      # the confirmation code
    service: Mapped[str] = mapped_column(Clipped(120))
    start_utc: Mapped[datetime] = mapped_column(index=True)
    end_utc: Mapped[datetime]
    customer_name: Mapped[str] = mapped_column(Clipped(120), default="")
    customer_phone: Mapped[str] = mapped_column(Clipped(NUMBER_LENGTH), default="", index=True)
    status: Mapped[str] = mapped_column(String(16), default=BookingStatus.BOOKED)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    claims: Mapped[list[BookingClaim]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class BookingClaim(Base):
    """One slot step held by a booking, in one of the business's parallel lanes (capacity):
    the UNIQUE constraint is the double-booking guarantee, across transactions, processes and
    servers."""

    __tablename__ = "booking_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id", ondelete="CASCADE"), index=True)
    start_utc: Mapped[datetime]
    lane: Mapped[int] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("start_utc", "lane"),)


class WebhookReceipt(Base):
    """A Twilio callback already taken, by its identity (a RecordingSid, a dial's outcome):
    Twilio retries webhooks, and a retry must not book or message twice. `answer` is the TwiML
    the first delivery got, for the retries."""

    __tablename__ = "webhook_receipts"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime]
    answer: Mapped[str | None] = mapped_column(Text)
