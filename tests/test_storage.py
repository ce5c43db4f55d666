"""The call log in the database: written as a call goes, in any order, read back for review.
Runs on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, update

from services.storage import CallFilter, Database, MessageFilter, Storage, StorageError, derive_outcome
from services.storage.calls import TurnRow
from services.storage.models import Base, Call
from services.storage.vocabulary import EndReason
from tests.factories import ROOT

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def caller_turn(idx: int, text: str, t: float, first_audio_ms: float = 600.0) -> TurnRow:
    return TurnRow(idx, "caller", text, at(t), speech_end_at=at(t - 0.2), asr_ms=120.0, llm_ttft_ms=210.0,
                   tool_ms=0.0, tts_ttfb_ms=150.0, first_audio_ms=first_audio_ms, heard_ms=first_audio_ms + 180,
                   overhead_ms=first_audio_ms - 480.0)


async def a_call(storage: Storage, sid: str = "CA" + "1" * 32, *, caller: str = "+15550001111",
                 start: float = 0.0, end_reason: str | None = "stop event") -> str:
    await storage.calls.open_call(sid, caller=caller, called="+15559990000", at=at(start))
    await storage.calls.stream_started(sid, stream_sid="MZ" + sid[2:], at=at(start + 0.5))
    await storage.calls.add_turn(sid, TurnRow(0, "zylin", "Thanks for calling.", at(start + 3)))
    await storage.calls.add_turn(sid, caller_turn(1, "What are your hours?", start + 5, 640.0))
    await storage.calls.add_turn(sid, TurnRow(2, "zylin", "We're open nine to five. On Saturdays we...",
                                              at(start + 7), heard_text="We're open nine to five.",
                                              interrupted=True))
    await storage.calls.add_turn(sid, caller_turn(3, "Thanks, bye", start + 9, 820.0))
    if end_reason:
        await storage.calls.end_call(sid, reason=end_reason, at=at(start + 12), greeting_ms=14.5)
    return sid


async def test_the_migrated_schema_has_every_table_and_upgrading_again_changes_nothing(database: Database):
    async with database.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert {"calls", "turns", "events", "messages", "bookings", "booking_claims", "alembic_version"} <= tables
    await database.upgrade()


async def test_the_migrations_build_exactly_the_schema_the_models_describe(database: Database):
    def differences(sync_conn):
        return compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)
    async with database.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


def test_alembic_upgrade_head_works_from_the_command_line(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db"}
    for args in (["upgrade", "head"], ["current"]):
        done = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "0004 (head)" in done.stdout


async def test_a_call_is_stored_turn_by_turn_with_its_latency_and_read_back_whole(database: Database):
    storage = Storage(database)
    sid = await a_call(storage)

    detail = await storage.calls.get_call(sid)
    assert detail is not None
    call = detail.call
    assert (call.from_number, call.to_number, call.mode) == ("+15550001111", "+15559990000", "stream")
    assert call.status == "completed" and call.end_reason == "stop event"
    assert call.started_at == at(0) and call.ended_at == at(12) and call.duration_s == 12
    assert detail.stream_sid == "MZ" + "1" * 32 and detail.greeting_ms == 14.5
    assert [t.speaker for t in detail.turns] == ["zylin", "caller", "zylin", "caller"]
    cut = detail.turns[2]
    assert cut.interrupted and cut.heard_text == "We're open nine to five."
    hours = detail.turns[1]
    assert (hours.asr_ms, hours.llm_ttft_ms, hours.tool_ms, hours.tts_ttfb_ms) == (120.0, 210.0, 0.0, 150.0)
    assert (hours.first_audio_ms, hours.heard_ms, hours.overhead_ms) == (640.0, 820.0, 160.0)
    assert hours.speech_end_at == at(4.8) and hours.at == at(5)
    assert detail.median_ms == 730.0 and detail.worst_ms == 820.0
    assert call.summary == "What are your hours? / Thanks, bye"
    assert call.outcome == "hung_up"


async def test_writes_are_idempotent_so_the_writer_may_retry_them(database: Database):
    storage = Storage(database)
    sid = "CA" + "2" * 32
    turn = caller_turn(1, "Hello", 2)
    for _ in range(2):
        await storage.calls.open_call(sid, caller="+15550002222", at=at(0))
        await storage.calls.add_turn(sid, turn)
        await storage.calls.end_call(sid, reason="stop event", at=at(5))
    detail = await storage.calls.get_call(sid)
    assert len(detail.turns) == 1
    calls, total = await storage.calls.list_calls()
    assert total == 1


async def test_a_turn_that_arrives_before_the_webhook_record_still_finds_its_call(database: Database):
    """Webhook and stream may be served by different instances; either may write first."""
    storage = Storage(database)
    sid = "CA" + "3" * 32
    await storage.calls.add_turn(sid, caller_turn(1, "Hello", 2))
    await storage.calls.open_call(sid, caller="+15550003333", at=at(0))
    detail = await storage.calls.get_call(sid)
    assert detail.call.status == "in-progress" and [t.text for t in detail.turns] == ["Hello"]


async def test_the_status_callback_closes_a_call_whose_stream_never_started(database: Database):
    storage = Storage(database)
    sid = "CA" + "4" * 32
    await storage.calls.open_call(sid, caller="+15550004444", at=at(0))
    await storage.calls.status_callback(sid, twilio_status="completed", duration_s=3, at=at(3))
    call = (await storage.calls.get_call(sid)).call
    assert (call.status, call.outcome, call.duration_s) == ("completed", "hung_up", 3)
    assert call.end_reason == "twilio: completed"


async def test_the_status_callback_adds_twilios_duration_but_keeps_the_sessions_own_ending(database: Database):
    storage = Storage(database)
    sid = await a_call(storage, end_reason="zylin ended the call")
    await storage.calls.status_callback(sid, twilio_status="completed", duration_s=13, at=at(14))
    detail = await storage.calls.get_call(sid)
    assert detail.call.end_reason == "zylin ended the call" and detail.call.duration_s == 13
    assert detail.twilio_status == "completed" and detail.call.ended_at == at(12)


async def test_a_status_callback_before_the_sessions_end_leaves_the_closing_to_the_session(database: Database):
    storage = Storage(database)
    sid = await a_call(storage, end_reason=None)
    await storage.calls.status_callback(sid, twilio_status="completed", duration_s=13, at=at(13))
    assert (await storage.calls.get_call(sid)).call.status == "in-progress"
    await storage.calls.end_call(sid, reason="stop event", at=at(13.2))
    call = (await storage.calls.get_call(sid)).call
    assert (call.status, call.end_reason, call.duration_s) == ("completed", "stop event", 13)


async def test_the_sweep_closes_only_calls_no_live_server_can_still_be_serving(database: Database):
    storage = Storage(database)
    now = T0 + timedelta(hours=1)
    crashed = await a_call(storage, "CA" + "5" * 32, start=0, end_reason=None)        # an hour old
    live = await a_call(storage, "CA" + "6" * 32, start=3590, end_reason=None)        # 10 s old
    done = await a_call(storage, "CA" + "7" * 32, start=0)                             # ended cleanly
    over = await a_call(storage, "CA" + "8" * 32, start=3400, end_reason=None)        # Twilio: over
    await storage.calls.status_callback(over, twilio_status="completed", duration_s=20, at=at(3420))

    swept = await storage.calls.sweep(max_call_s=900, grace_s=120, now=now)

    assert sorted(swept) == sorted([crashed, over])
    crashed_call = await storage.calls.get_call(crashed)
    assert crashed_call.call.status == "abnormal" and crashed_call.call.end_reason == EndReason.SWEPT
    assert len(crashed_call.turns) == 4, "every finished turn is kept"
    assert crashed_call.call.ended_at == at(9), "ended at its last sign of life"
    assert crashed_call.call.outcome == "error"
    assert (await storage.calls.get_call(live)).call.status == "in-progress"
    assert (await storage.calls.get_call(done)).call.status == "completed"
    assert await storage.calls.sweep(max_call_s=900, grace_s=120, now=now) == []


async def test_calls_are_listed_newest_first_in_pages_and_filtered(database: Database):
    storage = Storage(database)
    sids = []
    for n in range(7):
        sid = f"CA{n:032d}"
        await storage.calls.open_call(sid, caller=f"+1555000{n:04d}", at=at(n * 86400))
        if n % 2:
            await storage.calls.add_event(sid, "tool", {"name": "take_message", "result": {"ok": True}},
                                          at(n * 86400 + 5))
        await storage.calls.end_call(sid, reason="stop event", at=at(n * 86400 + 30))
        sids.append(sid)

    page1, total = await storage.calls.list_calls(per_page=3)
    page3, _ = await storage.calls.list_calls(page=3, per_page=3)
    assert total == 7
    assert [c.call_sid for c in page1] == sids[::-1][:3]
    assert [c.call_sid for c in page3] == [sids[0]]

    messages, total = await storage.calls.list_calls(CallFilter(outcome="message"))
    assert total == 3 and {c.call_sid for c in messages} == {sids[1], sids[3], sids[5]}
    ranged, _ = await storage.calls.list_calls(CallFilter(since=at(2 * 86400), until=at(4 * 86400)))
    assert [c.call_sid for c in ranged] == [sids[3], sids[2]]
    by_number, _ = await storage.calls.list_calls(CallFilter(caller="5550000004"))
    assert [c.call_sid for c in by_number] == [sids[4]]
    assert (await storage.calls.list_calls(CallFilter(caller="%")))[1] == 0, "LIKE wildcards are literal"


async def test_messages_for_the_owner_are_saved_listed_and_their_sms_status_kept(database: Database):
    storage = Storage(database)
    sid = await a_call(storage)
    saved = await storage.messages.save_message(message="Call me back about my crown", name="Ann",
                                                phone="+1 (555) 000-1111", urgency="urgent", call_sid=sid)
    await storage.messages.save_message(message="Other", phone="+15550009999")
    await storage.messages.set_sms_status(saved.id, "sent")

    listed, total = await storage.messages.list_messages(MessageFilter(phone="0001111"))
    assert total == 1
    assert listed[0].phone == "+15550001111" and listed[0].sms_status == "sent" and listed[0].call_sid == sid
    assert (await storage.calls.get_call(sid)).messages[0].message == "Call me back about my crown"
    with pytest.raises(ValueError):
        await storage.messages.set_sms_status(saved.id, "delivered?")


async def test_a_message_or_booking_row_of_the_call_sets_its_outcome(database: Database):
    storage = Storage(database)
    sid = await a_call(storage, end_reason=None)
    await storage.messages.save_message(message="Please call back", call_sid=sid)
    await storage.calls.end_call(sid, reason="stop event", at=at(12))
    assert (await storage.calls.get_call(sid)).call.outcome == "message"


async def test_times_come_back_as_aware_utc_and_naive_times_are_refused(database: Database):
    storage = Storage(database)
    sid = await a_call(storage)
    async with database.read() as session:
        started = await session.scalar(select(Call.started_at).where(Call.call_sid == sid))
    assert started.tzinfo is not None and started.utcoffset() == timedelta(0)
    with pytest.raises(Exception, match="naive"):
        async with database.write() as session:
            await session.execute(update(Call).values(started_at=datetime(2026, 1, 1)))


# --- the outcome, from what happened -----------------------------------------------------------------

def tool(name: str, ok: bool = True, t: float = 5) -> tuple[str, dict, datetime]:
    return ("tool", {"name": name, "result": {"ok": ok}}, at(t))


@pytest.mark.parametrize("events, reason, expected", [
    ([tool("book_appointment")], "stop event", "booked"),
    ([tool("book_appointment", ok=False)], "stop event", "hung_up"),
    ([tool("transfer_to_human"), ("transfer", {}, at(6))], "stop event", "transferred"),
    ([("transfer", {}, at(6)), ("transfer_failed", {}, at(7)), tool("take_message", t=20)], "stop event", "message"),
    ([tool("take_message")], "zylin ended the call", "message"),
    ([("provider_error", {"provider": "asr"}, at(30))], "stop event", "error"),
    ([], "error", "error"),
    ([("hang_up", {"reason": "done"}, at(9))], "stop event", "none"),
    ([], "zylin ended the call", "none"),
    ([], "socket closed", "hung_up"),
    ([], "stop event", "hung_up"),
])
def test_the_outcome_is_derived_from_what_happened(events, reason, expected):
    assert derive_outcome(events, reason, last_caller_turn_at=at(10)) == expected


def test_a_provider_error_the_call_recovered_from_is_not_the_outcome():
    events = [("provider_error", {"provider": "llm"}, at(3))]
    assert derive_outcome(events, "stop event", last_caller_turn_at=at(10)) == "hung_up"
    assert derive_outcome([], "stop event", abnormal=True) == "error"


async def test_an_unreachable_database_stops_start_up_with_a_message_that_names_it_without_its_password():
    storage = Storage(Database("postgresql+asyncpg://zylin:hunter2@127.0.0.1:1/zylin"))
    try:
        with pytest.raises(StorageError) as error:
            await storage.start()
    finally:
        await storage.db.close()
    assert "127.0.0.1:1/zylin" in str(error.value) and "hunter2" not in str(error.value)
    with pytest.raises(StorageError, match="only sqlite"):
        Database("mysql+aiomysql://root@127.0.0.1/test")
