"""The call log: a call's record written as it happens, and read back for review.

Every write is idempotent or an upsert, so the background writer may retry it freely and the
webhook, the media stream and Twilio's status callback may reach different instances in any order.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.database import Database
from services.storage.models import Booking, Call, Event, OwnerMessage, Turn, utcnow
from services.storage.records import BookingRecord, MessageRecord, booking_record, message_record
from services.storage.sql import insert_ignore
from services.storage.vocabulary import (
    TWILIO_REPORTED,
    BookingStatus,
    CallMode,
    CallStatus,
    EndReason,
    EventKind,
    Outcome,
    Speaker,
    twilio_ended,
)

# The caller (or Twilio, on their side) ended the call: it was not Zylin's goodbye.
CALLER_ENDED = (EndReason.STOP_EVENT, EndReason.SOCKET_CLOSED, EndReason.STUCK)
BOOKING_TOOLS = ("book_appointment", "reschedule_appointment")


# --- what the writer stores -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TurnRow:
    """One finished turn, in storage terms (UTC datetimes, derived latency in ms): the columns of
    `models.Turn`, field for field; the latency ones are orchestrator.latency.LATENCY_FIELDS
    (tests/test_latency_fields.py keeps the three the same)."""
    idx: int
    speaker: str
    text: str
    at: datetime
    heard_text: str | None = None
    interrupted: bool = False
    speech_end_at: datetime | None = None
    asr_ms: float | None = None
    llm_ttft_ms: float | None = None
    tool_ms: float | None = None
    tts_ttfb_ms: float | None = None
    first_audio_ms: float | None = None
    heard_ms: float | None = None
    overhead_ms: float | None = None


# --- what review reads ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CallFilter:
    since: datetime | None = None      # started at or after (UTC)
    until: datetime | None = None      # started before (UTC)
    outcome: str | None = None
    caller: str | None = None          # digits anywhere in the caller's number


@dataclass(frozen=True, slots=True)
class CallSummary:
    call_sid: str
    from_number: str
    to_number: str
    mode: str
    started_at: datetime
    ended_at: datetime | None
    status: str
    outcome: str | None
    summary: str
    end_reason: str | None
    duration_s: float | None
    turns: int

    def as_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True, slots=True)
class EventView:
    kind: str
    detail: dict[str, Any]
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: CallSummary
    stream_sid: str | None
    greeting_ms: float | None
    twilio_status: str | None
    turns: list[TurnRow]
    events: list[EventView]
    bookings: list[BookingRecord] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)

    @property
    def reply_latencies_ms(self) -> list[float]:
        return [t.first_audio_ms for t in self.turns
                if t.speaker == Speaker.CALLER and t.first_audio_ms is not None]

    @property
    def median_ms(self) -> float | None:
        values = self.reply_latencies_ms
        return round(statistics.median(values), 1) if values else None

    @property
    def worst_ms(self) -> float | None:
        values = self.reply_latencies_ms
        return max(values) if values else None

    @property
    def escalations(self) -> list[EventView]:
        return [e for e in self.events if e.kind in (EventKind.TRANSFER, EventKind.TRANSFER_FAILED)
                or (e.kind == EventKind.TOOL and e.detail.get("name") == "transfer_to_human")]

    def as_json(self) -> dict[str, Any]:
        return {
            **self.call.as_json(), "stream_sid": self.stream_sid, "greeting_ms": self.greeting_ms,
            "twilio_status": self.twilio_status,
            "totals": {"duration_s": self.call.duration_s, "turns": len(self.turns),
                       "caller_turns": sum(t.speaker == Speaker.CALLER for t in self.turns),
                       "median_first_audio_ms": self.median_ms, "worst_first_audio_ms": self.worst_ms},
            "turns": [_jsonable(asdict(t)) for t in self.turns],
            "events": [e.as_json() for e in self.events],
            "bookings": [b.as_json() for b in self.bookings],
            "messages": [m.as_json() for m in self.messages],
        }


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


# --- the outcome ------------------------------------------------------------------------------------

def derive_outcome(events: Sequence[tuple[str, dict[str, Any], datetime]], end_reason: str | None, *,
                   abnormal: bool = False, bookings: int = 0, messages: int = 0,
                   last_caller_turn_at: datetime | None = None) -> Outcome:
    """What the call achieved, from what happened, first match wins:
    booked > transferred > message > error > hung_up (the caller ended it) > none (Zylin said
    goodbye after a conversation that needed no action)."""
    def tool_ok(names: Sequence[str]) -> bool:
        return any(kind == EventKind.TOOL and detail.get("name") in names
                   and (detail.get("result") or {}).get("ok", False) for kind, detail, _ in events)

    kinds = [kind for kind, _, _ in events]
    if bookings or tool_ok(BOOKING_TOOLS):
        return Outcome.BOOKED
    if kinds.count(EventKind.TRANSFER) > kinds.count(EventKind.TRANSFER_FAILED):
        return Outcome.TRANSFERRED
    if messages or tool_ok(("take_message",)):
        return Outcome.MESSAGE
    errors = [at for kind, _, at in events if kind == EventKind.PROVIDER_ERROR]
    if abnormal or end_reason == EndReason.ERROR or (
            errors and (last_caller_turn_at is None or max(errors) >= last_caller_turn_at)):
        return Outcome.ERROR
    if EventKind.HANG_UP in kinds or (end_reason and end_reason not in CALLER_ENDED and
                                      not end_reason.startswith(TWILIO_REPORTED)):
        return Outcome.NONE
    return Outcome.HUNG_UP


def call_summary(turns: Sequence[TurnRow | Turn], limit: int = 240) -> str:
    """What the caller said, in their words, shortened: the list page's preview."""
    said = " / ".join(t.text for t in turns if t.speaker == Speaker.CALLER and t.text)
    return said if len(said) <= limit else said[:limit - 1].rstrip() + "…"


# --- the repository --------------------------------------------------------------------------------

class CallLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    # writes ------------------------------------------------------------------------------------

    async def open_call(self, call_sid: str, *, caller: str = "", called: str = "", mode: str = CallMode.STREAM,
                        at: datetime | None = None) -> None:
        """The webhook answered: the call exists from now on."""
        async with self.db.write() as session:
            await self._ensure(session, call_sid, caller=caller, called=called, mode=mode, at=at or utcnow())

    async def stream_started(self, call_sid: str, *, stream_sid: str, caller: str = "", called: str = "",
                             at: datetime | None = None) -> None:
        at = at or utcnow()
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, caller=caller, called=called, at=at)
            if call.status == CallStatus.COMPLETED and call.stream_sid not in (None, stream_sid):
                # The caller is back on a new stream (a transfer nobody answered): the call goes on.
                call.status, call.ended_at, call.end_reason = CallStatus.IN_PROGRESS, None, None
            call.stream_sid = stream_sid
            call.stream_started_at = call.stream_started_at or at
            call.from_number = call.from_number or caller
            call.to_number = call.to_number or called

    async def add_turn(self, call_sid: str, turn: TurnRow, *, stream_sid: str | None = None) -> None:
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, at=turn.at)
            call.stream_sid = call.stream_sid or stream_sid
            await session.execute(insert_ignore(session, Turn, [{"call_id": call.id, **asdict(turn)}]))

    async def add_event(self, call_sid: str, kind: str, detail: dict[str, Any], at: datetime) -> None:
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, at=at)
            session.add(Event(call_id=call.id, kind=kind, detail=detail, at=at))

    async def end_call(self, call_sid: str, *, reason: str, at: datetime | None = None,
                       greeting_ms: float | None = None, stream_sid: str | None = None,
                       caller: str = "", called: str = "") -> None:
        """The media session ended (stop, hang-up, socket gone): close the record, derive the outcome."""
        at = at or utcnow()
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, caller=caller, called=called, at=at)
            call.stream_sid = call.stream_sid or stream_sid
            call.greeting_ms = greeting_ms if greeting_ms is not None else call.greeting_ms
            call.status = CallStatus.COMPLETED
            call.ended_at = at
            call.end_reason = reason[:120]
            await self._conclude(session, call)

    async def legacy_state(self, call_sid: str) -> dict[str, Any] | None:
        """A legacy (record mode) call's conversation state, as its last callback left it."""
        async with self.db.read() as session:
            return await session.scalar(select(Call.legacy_state).where(Call.call_sid == call_sid))

    async def legacy_turn(self, call_sid: str, *, state: dict[str, Any], turns: Sequence[TurnRow] = (),
                          events: Sequence[tuple[str, dict[str, Any], datetime]] = (),
                          end_reason: str | None = None, caller: str = "", called: str = "",
                          at: datetime | None = None) -> None:
        """One legacy callback's results in one transaction: the state the next callback (maybe on
        another instance) starts from, the turns and events, and the end when the call is over."""
        at = at or utcnow()
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, caller=caller, called=called, mode=CallMode.LEGACY,
                                      at=at)
            call.legacy_state = dict(state)
            if turns:
                await session.execute(insert_ignore(session, Turn, [{"call_id": call.id, **asdict(t)}
                                                                    for t in turns]))
            for kind, detail, event_at in events:
                session.add(Event(call_id=call.id, kind=kind, detail=detail, at=event_at))
            if end_reason is not None and call.status == CallStatus.IN_PROGRESS:
                await session.flush()
                call.status = CallStatus.COMPLETED
                call.ended_at = at
                call.end_reason = end_reason[:120]
                await self._conclude(session, call)

    async def status_callback(self, call_sid: str, *, twilio_status: str, duration_s: int | None,
                              caller: str = "", called: str = "", at: datetime | None = None) -> None:
        """Twilio's status callback: the phone call itself is over (or moved on).

        Callbacks may arrive in any order; only one that moves the call forward counts (see
        `Call.advance_twilio_status`). A call whose media session never started is closed here.
        One whose session did start is closed by the session's own end; if that never comes (the
        server died), the sweep closes it as abnormal shortly after this callback.
        """
        at = at or utcnow()
        async with self.db.write() as session:
            call = await self._ensure(session, call_sid, caller=caller, called=called, at=at)
            if not call.advance_twilio_status(twilio_status):
                return  # late or repeated: the call has moved past it, and a final status stays
            call.duration_s = duration_s if duration_s is not None else call.duration_s
            if not call.twilio_over:
                return  # queued, ringing, in-progress: nothing ends
            call.ended_at = call.ended_at or at
            if call.status == CallStatus.IN_PROGRESS and call.stream_sid is None:
                call.status = CallStatus.COMPLETED
                call.end_reason = twilio_ended(twilio_status)
                await self._conclude(session, call)

    async def sweep(self, *, max_call_s: float, grace_s: float, now: datetime | None = None) -> list[str]:
        """Close calls left open by a server that died mid-call, as `abnormal`.

        Only calls that no live server can still be serving: open longer than the longest call
        (MAX_CALL_S + grace, covering its 60 s overrun), or reported over by Twilio more than
        `grace_s` ago. So several instances sharing one database can sweep at any time.
        """
        now = now or utcnow()
        stale = now - timedelta(seconds=max_call_s + grace_s)
        hung_up = now - timedelta(seconds=grace_s)
        swept: list[str] = []
        async with self.db.write() as session:
            calls = (await session.scalars(select(Call).where(
                Call.status == CallStatus.IN_PROGRESS,
                or_(Call.started_at < stale, Call.ended_at < hung_up)))).all()
            for call in calls:
                last = await session.scalar(select(func.max(Turn.at)).where(Turn.call_id == call.id))
                last_event = await session.scalar(select(func.max(Event.at)).where(Event.call_id == call.id))
                call.ended_at = call.ended_at or max([t for t in (last, last_event, call.started_at) if t])
                call.status = CallStatus.ABNORMAL
                call.end_reason = EndReason.SWEPT
                await self._conclude(session, call, abnormal=True)
                swept.append(call.call_sid)
        return swept

    async def _ensure(self, session: AsyncSession, call_sid: str, *, caller: str = "", called: str = "",
                      mode: str = CallMode.STREAM, at: datetime) -> Call:
        """The call's row, created if this is the first we hear of it (race-free on both databases)."""
        await session.execute(insert_ignore(session, Call, [{
            "call_sid": call_sid, "from_number": caller, "to_number": called, "mode": mode,
            "started_at": at, "status": CallStatus.IN_PROGRESS, "summary": ""}]))
        return (await session.scalars(select(Call).where(Call.call_sid == call_sid))).one()

    async def _conclude(self, session: AsyncSession, call: Call, *, abnormal: bool = False) -> None:
        turns = (await session.scalars(select(Turn).where(Turn.call_id == call.id).order_by(Turn.idx))).all()
        events = (await session.execute(select(Event.kind, Event.detail, Event.at)
                                        .where(Event.call_id == call.id))).all()
        bookings = await session.scalar(select(func.count()).select_from(Booking).where(
            Booking.call_id == call.id, Booking.status != BookingStatus.CANCELLED))
        messages = await session.scalar(select(func.count()).select_from(OwnerMessage).where(
            OwnerMessage.call_id == call.id))
        caller_turns = [t.at for t in turns if t.speaker == Speaker.CALLER]
        call.outcome = derive_outcome([tuple(e) for e in events], call.end_reason, abnormal=abnormal,
                                      bookings=bookings or 0, messages=messages or 0,
                                      last_caller_turn_at=max(caller_turns) if caller_turns else None)
        call.summary = call_summary(turns)

    # reads ---------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raises unless the call log can be read now: what readiness asks of storage."""
        async with self.db.read() as session:
            await session.execute(text("SELECT 1"))

    async def list_calls(self, filters: CallFilter = CallFilter(), *, page: int = 1,
                         per_page: int = 25) -> tuple[list[CallSummary], int]:
        """Newest first, one page, and how many calls match in all."""
        turns = (select(func.count(Turn.id)).where(Turn.call_id == Call.id)
                 .correlate(Call).scalar_subquery())
        query = _filtered(select(Call, turns), filters)
        async with self.db.read() as session:
            total = await session.scalar(_filtered(select(func.count(Call.id)), filters))
            rows = (await session.execute(query.order_by(Call.started_at.desc(), Call.id.desc())
                                          .limit(per_page).offset((page - 1) * per_page))).all()
        return [_summary(call, count) for call, count in rows], total or 0

    async def get_call(self, call_sid: str) -> CallDetail | None:
        async with self.db.read() as session:
            call = (await session.scalars(select(Call).where(Call.call_sid == call_sid))).one_or_none()
            if call is None:
                return None
            turns = (await session.scalars(select(Turn).where(Turn.call_id == call.id)
                                           .order_by(Turn.idx))).all()
            events = (await session.scalars(select(Event).where(Event.call_id == call.id)
                                            .order_by(Event.at, Event.id))).all()
            bookings = (await session.scalars(select(Booking).where(Booking.call_id == call.id)
                                              .order_by(Booking.start_utc))).all()
            messages = (await session.scalars(select(OwnerMessage).where(OwnerMessage.call_id == call.id)
                                              .order_by(OwnerMessage.created_at))).all()
        return CallDetail(
            call=_summary(call, len(turns)), stream_sid=call.stream_sid, greeting_ms=call.greeting_ms,
            twilio_status=call.twilio_status, turns=[_turn_row(t) for t in turns],
            events=[EventView(e.kind, e.detail or {}, e.at) for e in events],
            bookings=[booking_record(b, call.call_sid) for b in bookings],
            messages=[message_record(m, call.call_sid) for m in messages])


def _filtered(query: Select, filters: CallFilter) -> Select:
    if filters.since is not None:
        query = query.where(Call.started_at >= filters.since)
    if filters.until is not None:
        query = query.where(Call.started_at < filters.until)
    if filters.outcome:
        query = query.where(Call.outcome == filters.outcome)
    if filters.caller:
        query = query.where(Call.from_number.contains(filters.caller, autoescape=True))
    return query


def _summary(call: Call, turns: int) -> CallSummary:
    duration: float | None = call.duration_s
    if duration is None and call.ended_at is not None:
        duration = round((call.ended_at - call.started_at).total_seconds(), 1)
    return CallSummary(call.call_sid, call.from_number, call.to_number, call.mode, call.started_at,
                       call.ended_at, call.status, call.outcome, call.summary, call.end_reason,
                       duration, turns or 0)


def _turn_row(turn: Turn) -> TurnRow:
    return TurnRow(**{f.name: getattr(turn, f.name) for f in fields(TurnRow)})
