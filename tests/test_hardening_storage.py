"""Storage that survives what Twilio and the caller can send: SIP addresses as numbers, failing
statements that must not leak numbers into logs, migrations that keep every row, and status
callbacks that arrive out of order. On SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select

from services.storage import CallFilter, Database, Storage
from services.storage.bookings import normal_phone
from services.storage.calls import TurnRow
from services.storage.database import alembic_config
from services.storage.models import Booking, BookingClaim, Call, Event, OwnerMessage, Turn
from services.storage.writer import Writer

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SIP_FROM = "sip:+15551234567@pbx.example.com;user=phone"
SIP_TO = "sip:reception@bright-smile-dental.sip.us1.twilio.com;transport=tls"
# A SIP URI as long as a PBX may make one (display-name-free, with parameters): 300 characters.
LONG_SIP = ("sip:+15551234567@pbx.example.com;user=phone;transport=tls;x-routing=" + "a" * 300)[:300]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def call_from(storage: Storage, sid: str, caller: str, called: str) -> None:
    """A whole call the way the recorder writes it: webhook, stream, turns, the end."""
    await storage.calls.open_call(sid, caller=caller, called=called, at=at(0))
    await storage.calls.stream_started(sid, stream_sid="MZ" + sid[2:], caller=caller, called=called, at=at(1))
    await storage.calls.add_turn(sid, TurnRow(0, "zylin", "Thanks for calling.", at(2)))
    await storage.calls.add_turn(sid, TurnRow(1, "caller", "What are your hours?", at(4)))
    await storage.calls.end_call(sid, reason="stop event", at=at(9), caller=caller, called=called)
    await storage.calls.status_callback(sid, twilio_status="completed", duration_s=9, caller=caller,
                                        called=called, at=at(10))


# --- long numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("caller", [SIP_FROM, LONG_SIP], ids=["sip-uri", "300-char-sip-uri"])
async def test_a_call_from_a_sip_address_is_stored_in_full(database: Database, caller: str):
    storage = Storage(database)
    sid = "CA" + "5" * 32
    await call_from(storage, sid, caller, SIP_TO)
    message = await storage.messages.save_message(message="Call me back", name="Ann", phone=caller,
                                                  call_sid=sid)

    detail = await storage.calls.get_call(sid)
    assert detail is not None, "the call's record was lost"
    assert (detail.call.from_number, detail.call.to_number) == (caller, SIP_TO)
    assert [t.text for t in detail.turns] == ["Thanks for calling.", "What are your hours?"]
    assert (detail.call.status, detail.twilio_status, detail.call.duration_s) == ("completed", "completed", 9)
    assert message.phone == detail.messages[0].phone == normal_phone(caller)  # digits, as messages keep them
    found, total = await storage.calls.list_calls(CallFilter(caller="5551234567"))
    assert total == 1 and found[0].from_number == caller


async def test_what_no_number_could_be_is_cut_to_fit_rather_than_losing_the_write(database: Database):
    """Past any SIP URI Twilio sends (and past what an LLM should put in a name): the write
    still succeeds, with the value cut to its column, so the call and the message are kept."""
    storage = Storage(database)
    sid = "CA" + "6" * 32
    huge = "sip:" + "9" * 5000 + "@pbx.example.com"
    await call_from(storage, sid, huge, huge)
    saved = await storage.messages.save_message(message="Please call back", name="N" * 500, phone=huge,
                                                urgency="extremely urgent, really very urgent", call_sid=sid)
    await storage.calls.end_call(sid, reason="r" * 500, at=at(11))

    detail = await storage.calls.get_call(sid)
    assert detail is not None and len(detail.turns) == 2
    assert detail.call.from_number == huge[:512] and detail.call.to_number == huge[:512]
    assert detail.call.end_reason == "r" * 120
    message = detail.messages[0]
    assert (message.id, message.message) == (saved.id, "Please call back")
    assert (message.phone, message.name, message.urgency) == ("9" * 512, "N" * 120, "extremely urgent")


async def test_a_failing_statement_never_puts_a_number_in_its_error_or_the_log(database: Database, caplog):
    storage = Storage(database)
    sid = "CA" + "7" * 32
    secret = "+15557654321"
    await storage.calls.open_call(sid, caller="+15550000000", at=at(0))

    async def duplicate() -> None:  # a second row for the same CallSid: refused on both databases
        async with database.write() as session:
            session.add(Call(call_sid=sid, from_number=secret, to_number=secret, mode="stream",
                             started_at=at(1), status="in-progress", summary=""))

    with pytest.raises(Exception) as failed:
        await duplicate()
    writer = Writer(retry_delays_s=(0.0,))
    writer.start()
    outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.DEBUG):
        writer.submit(f"call {sid}", duplicate, outcome.set_result)
        assert await asyncio.wait_for(outcome, 10) is False
        await writer.close()

    assert "uq_calls_call_sid" in str(failed.value) or "UNIQUE" in str(failed.value)
    assert secret not in str(failed.value) and "hidden" in str(failed.value)
    assert "could not store" in caplog.text and secret not in caplog.text


# --- the 0003 migration keeps every row ---------------------------------------------------------

async def migrate(database: Database, action: str, revision: str) -> None:
    """alembic upgrade/downgrade on this database, the way Database.upgrade() runs it."""
    def run(connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async with database.engine.execution_options(zylin_write=True).begin() as conn:
        await conn.run_sync(run)


async def counts(database: Database) -> dict[str, int]:
    async with database.read() as session:
        return {model.__tablename__: await session.scalar(select(func.count()).select_from(model))
                for model in (Call, Turn, Event, OwnerMessage, Booking, BookingClaim)}


async def rows_as_of_0002(database: Database, sid: str) -> None:
    """A call with two turns, an event, a message and a booking with two claims, written with the
    columns that schema 0002 has (reflected), as a server of that version would have left them."""
    number, t = "+15550008888", at(0)
    async with database.engine.begin() as conn:
        tables = await conn.run_sync(lambda sync: {name: sa.Table(name, sa.MetaData(), autoload_with=sync)
                                                   for name in ("calls", "turns", "events", "messages",
                                                                "bookings", "booking_claims")})
        call = (await conn.execute(tables["calls"].insert().values(
            call_sid=sid, from_number=number, to_number="+15559990000", mode="stream", started_at=t,
            status="completed", summary="").returning(tables["calls"].c.id))).scalar_one()
        await conn.execute(tables["turns"].insert(), [
            {"call_id": call, "idx": i, "speaker": who, "text": text, "interrupted": False, "at": t}
            for i, (who, text) in enumerate((("zylin", "Thanks for calling."), ("caller", "Hours?")))])
        await conn.execute(tables["events"].insert().values(call_id=call, kind="tool",
                                                            detail={"name": "book_appointment"}, at=t))
        await conn.execute(tables["messages"].insert().values(call_id=call, name="", phone=number, message="Call me",
                                                              urgency="normal", created_at=t, sms_status="off"))
        booking = (await conn.execute(tables["bookings"].insert().values(
            code="ABCDEF", service="Cleaning", start_utc=at(86400), end_utc=at(88200), customer_name="Ann",
            customer_phone=number, status="booked", call_id=call, created_at=t, updated_at=t)
            .returning(tables["bookings"].c.id))).scalar_one()
        await conn.execute(tables["booking_claims"].insert(), [
            {"booking_id": booking, "start_utc": at(86400 + 900 * n), "lane": 0} for n in range(2)])


async def test_widening_the_numbers_keeps_every_row_of_every_table(database: Database):
    """On SQLite a table copy of `calls` with foreign keys on would cascade-delete every turn."""
    await migrate(database, "downgrade", "0002")
    storage = Storage(database)
    sid = "CA" + "8" * 32
    await rows_as_of_0002(database, sid)  # today's models know columns 0002 does not have
    before = await counts(database)

    await migrate(database, "upgrade", "head")

    assert before == {"calls": 1, "turns": 2, "events": 1, "messages": 1, "bookings": 1, "booking_claims": 2}
    assert await counts(database) == before
    detail = await storage.calls.get_call(sid)
    assert detail.bookings and detail.messages, "bookings and messages still belong to their call"
    await call_from(storage, "CA" + "9" * 32, SIP_FROM, SIP_TO)
    assert (await storage.calls.get_call("CA" + "9" * 32)).call.from_number == SIP_FROM


# --- status callbacks out of order ---------------------------------------------------------------

@pytest.mark.parametrize(("arrivals", "kept"), [
    (["ringing", "completed", "ringing"], "completed"),
    (["completed", "in-progress"], "completed"),
    (["in-progress", "queued", "initiated", "ringing"], "in-progress"),
    (["no-answer", "completed"], "no-answer"),           # a final status is never replaced
    (["busy", "canceled", "ringing", "failed"], "busy"),
    (["queued", "ringing", "in-progress", "completed"], "completed"),
    (["ringing", "ringing", "in-progress", "in-progress"], "in-progress"),
], ids=["late-ringing", "late-in-progress", "late-early-ones", "final-then-final", "busy-stays",
        "in-order", "repeats"])
async def test_twilio_status_only_moves_forward_and_a_final_one_stays(database: Database, arrivals, kept):
    storage = Storage(database)
    sid = "CA" + "a" * 32
    await storage.calls.open_call(sid, caller="+15550001111", at=at(0))
    for n, status in enumerate(arrivals):
        final = status in ("completed", "busy", "failed", "no-answer", "canceled")
        await storage.calls.status_callback(sid, twilio_status=status, duration_s=n + 1 if final else None,
                                            at=at(10 + n))
    detail = await storage.calls.get_call(sid)
    assert detail.twilio_status == kept
    first_final = next((n for n, s in enumerate(arrivals) if s == kept), None)
    if kept in ("completed", "busy", "failed", "no-answer", "canceled"):
        assert detail.call.duration_s == first_final + 1, "the final callback's duration is kept"
        assert detail.call.end_reason == f"twilio: {kept}" and detail.call.ended_at == at(10 + first_final)
    else:
        assert detail.call.status == "in-progress" and detail.call.ended_at is None


async def test_a_late_ringing_after_the_session_ended_leaves_the_call_as_the_session_closed_it(
        database: Database):
    storage = Storage(database)
    sid = "CA" + "b" * 32
    await call_from(storage, sid, "+15550001111", "+15559990000")   # ends with "completed", 9 s
    await storage.calls.status_callback(sid, twilio_status="ringing", duration_s=None, at=at(30))
    await storage.calls.status_callback(sid, twilio_status="in-progress", duration_s=None, at=at(31))
    detail = await storage.calls.get_call(sid)
    assert (detail.twilio_status, detail.call.duration_s) == ("completed", 9)
    call = detail.call
    assert (call.status, call.end_reason, call.ended_at) == ("completed", "stop event", at(9))


async def test_a_callback_without_a_status_changes_nothing(database: Database):
    storage = Storage(database)
    sid = "CA" + "c" * 32
    await storage.calls.open_call(sid, caller="+15550001111", at=at(0))
    await storage.calls.status_callback(sid, twilio_status="ringing", duration_s=None, at=at(1))
    await storage.calls.status_callback(sid, twilio_status="", duration_s=5, at=at(2))
    detail = await storage.calls.get_call(sid)
    assert (detail.twilio_status, detail.call.duration_s) == ("ringing", None)
