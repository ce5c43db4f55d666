"""The background writer and the database recorder: the call path only enqueues; a write the
database does not take waits (in memory, then in the journal on disk) and is stored in order when
it returns, after a restart too; only a lasting failure is set aside; nothing ever blocks a call.

The writer is tested against a stand-in database that is up or away at the test's word, then the
whole recorder against real databases: SQLite (a locked file is a database that hangs) and
PostgreSQL when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from services.llm.base import Message
from services.orchestrator.database_recorder import DatabaseRecorder
from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import CallEvent, CallInfo, TurnRecord
from services.storage import Database, Storage
from services.storage.calls import TurnRow
from services.storage.writer import Journal, Write, Writer
from tests.conftest import fresh_database

FAST = (0.01, 0.02, 0.05)


async def until(ready: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    """Wait for an observable state, no longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)


def journaled(folder: Path) -> list[dict]:
    """Every line in the journal files of `folder`, oldest file first."""
    lines: list[dict] = []
    for path in sorted(folder.glob("writes-*.jsonl")):
        lines += [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.endswith(b"}")]
    return lines


def flaky(failures: int, error: Exception):
    calls = {"n": 0}

    async def write() -> None:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
    return write, calls


class StandIn:
    """A database for the writer: stores writes in a list, or is away (connection refused)."""

    def __init__(self, away: bool = False) -> None:
        self.away = away
        self.stored: list[Write] = []
        self.attempts = 0

    async def apply(self, write: Write) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.away:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        self.stored.append(write)

    @property
    def numbers(self) -> list[int]:
        return [w.args["n"] for w in self.stored]


def numbered(n: int) -> Write:
    return Write.of("add_turn", f"turn CA1 #{n}", call_sid="CA1", n=n)


# --- the writer -------------------------------------------------------------------------------------

async def test_a_write_that_fails_for_a_passing_reason_is_retried_until_it_is_stored(caplog):
    writer = Writer(retry_delays_s=FAST)
    writer.start()
    write, calls = flaky(2, OperationalError("INSERT", {}, ConnectionError("server closed the connection")))
    stored: list[bool] = []
    writer.submit("turn CA1 #1", write, stored.append)
    await writer.flush()
    await writer.close()
    assert calls["n"] == 3 and stored == [True] and writer.failed == 0
    assert "retrying" in caplog.text and "after 2 retries" in caplog.text


async def test_a_write_is_kept_for_as_long_as_the_database_is_away_however_many_tries_that_takes():
    """No count and no clock gives up on a write while the database is away (the old writer
    dropped it after half a minute)."""
    writer = Writer(retry_delays_s=(0.0,))
    writer.start()
    write, calls = flaky(500, OperationalError("INSERT", {}, ConnectionRefusedError("connection refused")))
    stored: list[bool] = []
    writer.submit("turn CA1 #1", write, stored.append)
    await writer.flush(30)
    await writer.close()
    assert calls["n"] == 501 and stored == [True] and writer.failed == 0


async def test_a_write_that_fails_for_a_lasting_reason_is_set_aside_and_the_next_one_goes_through(tmp_path, caplog):
    db = StandIn()
    writer = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST)
    writer.start()
    bad, bad_calls = flaky(99, IntegrityError("INSERT", {}, Exception("a bug")))
    outcomes: list[tuple[str, bool]] = []
    writer.submit("bad closure", bad, lambda ok: outcomes.append(("bad closure", ok)))

    async def refuse(write: Write) -> None:
        if write.kind == "nonsense":
            raise IntegrityError("INSERT", {}, Exception("bad data"))
        await db.apply(write)
    writer.apply = refuse
    writer.submit(Write.of("nonsense", "bad record", call_sid="CA2"),
                  done=lambda ok: outcomes.append(("bad record", ok)))
    writer.submit(numbered(1), done=lambda ok: outcomes.append(("good", ok)))
    with caplog.at_level(logging.ERROR, "zylin.storage.writer"):
        await writer.flush()
    await writer.close()

    assert outcomes == [("bad closure", False), ("bad record", False), ("good", True)], "in order, none lost silently"
    assert bad_calls["n"] == 2, "a lasting failure is tried twice, not for ever"
    assert writer.failed == 2 and db.numbers == [1]
    assert "could not store bad closure" in caplog.text and "could not store bad record" in caplog.text
    [rejected] = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert (rejected["kind"], rejected["args"], rejected["reason"]) == ("nonsense", {"call_sid": "CA2"},
                                                                        "IntegrityError: (builtins.Exception) bad data")


async def test_a_write_the_database_answers_but_keeps_refusing_is_set_aside_rather_than_blocking_the_rest(tmp_path):
    db = StandIn()
    probes = {"n": 0}

    async def answering() -> None:
        probes["n"] += 1

    async def stuck_on_one(write: Write) -> None:
        if write.args["n"] == 0:
            raise OperationalError("UPDATE", {}, TimeoutError("canceling statement due to lock timeout"))
        await db.apply(write)

    writer = Writer(stuck_on_one, journal=Journal(tmp_path), probe=answering, retry_delays_s=FAST)
    writer.start()
    for n in range(3):
        writer.submit(numbered(n))
    await writer.flush()
    await writer.close()
    assert db.numbers == [1, 2] and writer.failed == 1 and probes["n"] >= 5
    assert json.loads((tmp_path / "rejected.jsonl").read_text())["args"]["n"] == 0


async def test_writes_the_database_does_not_take_wait_in_the_journal_and_are_stored_in_order_when_it_returns(tmp_path):
    db = StandIn(away=True)
    writer = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST, spill_after_s=0.05)
    writer.start()
    for n in range(5):
        writer.submit(numbered(n))
    await until(lambda: len(journaled(tmp_path)) == 5, what="the first writes on disk")
    for n in range(5, 10):   # the database is still away: these follow the others to disk
        writer.submit(numbered(n))
    await until(lambda: len(journaled(tmp_path)) == 10, what="the later writes on disk")
    assert writer.waiting <= 1, "memory holds at most the write being tried"
    assert [line["args"]["n"] for line in journaled(tmp_path)] == list(range(10))

    writer.spill_after_s = 3600  # from here on, only the order is being tested
    db.away = False
    for n in range(10, 15):  # while the journal is replayed: behind it, not around it
        writer.submit(numbered(n))
    await writer.flush()
    assert db.numbers == list(range(15))
    assert writer.spilled == 10 and writer.replayed == 9, "the 10th was being tried when it went to disk"
    assert not list(tmp_path.glob("writes-*")), "a replayed journal is removed"
    await writer.close()


async def test_a_write_s_callback_comes_once_it_is_stored_even_by_way_of_the_journal(tmp_path):
    db = StandIn(away=True)
    writer = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST, spill_after_s=0.05)
    writer.start()
    stored: list[tuple[int, bool]] = []
    for n in range(3):
        writer.submit(numbered(n), done=lambda ok, n=n: stored.append((n, ok)))
    await until(lambda: len(journaled(tmp_path)) == 3)
    assert stored == []
    db.away = False
    await writer.flush()
    await writer.close()
    assert stored == [(0, True), (1, True), (2, True)]


async def test_memory_holds_a_bounded_number_of_writes_the_rest_wait_on_disk_and_submitting_never_blocks(tmp_path):
    db = StandIn(away=True)
    writer = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=(0.2,), max_memory=50, spill_after_s=3600)
    writer.start()
    started = time.perf_counter()
    for n in range(1000):
        writer.submit(numbered(n))
    assert time.perf_counter() - started < 0.05, "submitting is a deque append"
    assert not list(tmp_path.glob("writes-*")), "submit() never touches the disk itself"
    await until(lambda: len(journaled(tmp_path)) >= 950, what="the writes past the bound on disk")
    assert writer.waiting <= 51 and writer.dropped == 0

    db.away = False
    await writer.flush()
    await writer.close()
    assert db.numbers == list(range(1000))


async def test_writes_that_cannot_go_to_disk_are_refused_past_the_bound_never_blocking():
    writer = Writer(max_memory=3)  # no journal, not started: nothing drains it
    write, _ = flaky(0, RuntimeError())
    dropped: list[bool] = []
    started = time.perf_counter()
    for n in range(5):
        writer.submit(f"write {n}", write, dropped.append)
    assert time.perf_counter() - started < 0.01
    assert writer.dropped == 2 and dropped == [False, False]


async def test_a_server_stopped_while_the_database_is_away_leaves_its_writes_for_the_next_start(tmp_path, caplog):
    db = StandIn(away=True)
    first = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST, spill_after_s=3600,
                   spill_after_attempts=10_000)
    first.start()
    for n in range(4):
        first.submit(numbered(n))
    await until(lambda: db.attempts >= 2, what="the database found away")
    assert journaled(tmp_path) == [], "nothing had waited long enough to go to disk"
    await first.close()  # shutdown: what is waiting goes to the journal, not into the void
    assert [line["args"]["n"] for line in journaled(tmp_path)] == [0, 1, 2, 3]

    db.away = False
    second = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST)
    second.submit(numbered(4))  # a new write, made before the old ones are replayed
    with caplog.at_level(logging.WARNING, "zylin.storage.writer"):
        second.start()
        await second.flush()
    await second.close()
    assert db.numbers == [0, 1, 2, 3, 4], "the kept writes first, then the new one"
    assert "replaying writes a stopped server kept" in caplog.text
    assert not list(tmp_path.glob("writes-*"))


async def test_a_journal_line_cut_short_by_a_crash_is_skipped_and_the_rest_is_replayed(tmp_path, caplog):
    lines = b"".join(numbered(n).line(n + 1) for n in range(3))
    (tmp_path / "writes-20260101T000000000000-1.jsonl").write_bytes(lines + b'{"seq":4,"kind":"add_tu')
    (tmp_path / "writes-20260101T000000000000-1.jsonl.applied").write_text(f"{1:020d}\n")  # #0 was stored
    db = StandIn()
    writer = Writer(db.apply, journal=Journal(tmp_path), retry_delays_s=FAST)
    writer.start()
    await writer.flush()
    await writer.close()
    assert db.numbers == [1, 2], "what was applied before the crash is not applied again"
    assert "incomplete last line" in caplog.text
    assert not list(tmp_path.glob("writes-*"))


async def test_a_live_server_s_journal_is_left_to_it_and_another_database_s_journal_is_never_replayed(tmp_path):
    away = StandIn(away=True)
    live = Writer(away.apply, journal=Journal(tmp_path, tag="a"), retry_delays_s=FAST, spill_after_s=0.05)
    live.start()
    live.submit(numbered(0))
    await until(lambda: len(journaled(tmp_path)) == 1)

    same_db, other_db = StandIn(), StandIn()
    beside = Writer(same_db.apply, journal=Journal(tmp_path, tag="a"), retry_delays_s=FAST)
    elsewhere = Writer(other_db.apply, journal=Journal(tmp_path, tag="b"), retry_delays_s=FAST)
    for writer in (beside, elsewhere):
        writer.start()
        await writer.flush()
    assert same_db.stored == [] and other_db.stored == [], "a live server's file is locked"

    await live.close()  # it stops: its journal is free to take over, for its own database only
    later, unrelated = Writer(same_db.apply, journal=Journal(tmp_path, tag="a")), \
        Writer(other_db.apply, journal=Journal(tmp_path, tag="b"))
    for writer in (later, unrelated):
        writer.start()
        await writer.flush()
        await writer.close()
    assert same_db.numbers == [0] and other_db.stored == []
    for writer in (beside, elsewhere):
        await writer.close()


# --- the recorder, on real databases --------------------------------------------------------------

def call_info(sid: str) -> CallInfo:
    return CallInfo(call_sid=sid, stream_sid="MZ" + sid[2:], caller="+15550001111", called="+15559990000",
                    started_at=time.monotonic() - 5, greeting_ms=12.0)


def record_a_call(recorder: DatabaseRecorder, info: CallInfo) -> None:
    """A short call the way a session records it: stream, greeting, a question, a tool, the end."""
    now = time.monotonic()
    latency = TurnLatency(speech_end=now - 1.0, transcript_at=now - 0.9, llm_request_at=now - 0.9,
                          llm_first_at=now - 0.7, tts_request_at=now - 0.7, tts_first_at=now - 0.6,
                          first_audio_at=now - 0.55, heard_at=now - 0.3)
    recorder.stream_started(info)
    recorder.turn(info, TurnRecord(0, "zylin", "Hello!", now - 3))
    recorder.turn(info, TurnRecord(1, "caller", "Hours?", now - 0.9, latency=latency))
    recorder.event(info, CallEvent("tool", now - 0.8, {"name": "take_message", "arguments": {"message": "x"},
                                                       "result": {"ok": True, "when": object()}}))
    recorder.ended(info, "stop event", [], [Message("user", "Hours?")])


async def test_the_recorder_stores_a_call_as_it_goes_and_its_methods_return_at_once(database: Database, tmp_path):
    storage = Storage(database, journal_dir=tmp_path)
    storage.writer.start()
    recorder = DatabaseRecorder(storage)
    info = call_info("CA" + "a" * 32)

    record_a_call(recorder, info)
    # The methods are plain calls that only queue: when they return, no write has been made yet
    # (the writer runs on the loop, which they never gave a turn to).
    assert storage.writer.waiting >= 4, "recording must not wait for the database"

    detail = await recorder.wait_ended(info.call_sid)
    await storage.writer.close()
    assert detail.call.status == "completed" and detail.call.outcome == "message"
    assert detail.greeting_ms == 12.0 and detail.stream_sid == info.stream_sid
    hours = detail.turns[1]
    assert hours.first_audio_ms == pytest.approx(450, abs=1) and hours.asr_ms == pytest.approx(100, abs=1)
    assert hours.heard_ms == pytest.approx(700, abs=1) and hours.overhead_ms == pytest.approx(50, abs=1)
    assert detail.events[0].detail["result"]["when"].startswith("<object"), "details are stored as JSON"
    assert abs((detail.turns[1].at - detail.turns[0].at).total_seconds() - 2.1) < 0.01


async def test_every_kind_of_write_comes_back_from_the_journal_as_it_went_in(database: Database, tmp_path):
    """Each write, made plain data, written to disk and read back, stores what the call path meant."""
    storage = Storage(database, journal_dir=tmp_path)
    at = datetime(2026, 3, 2, 15, 0, 5, 123456, tzinfo=UTC)
    sid, legacy = "CA" + "d" * 32, "CA" + "e" * 32
    writes = [
        Write.of("open_call", "open", call_sid=sid, caller="+15550001111", called="+15559990000", mode="stream", at=at),
        Write.of("stream_started", "stream", call_sid=sid, stream_sid="MZ1", caller="", called="", at=at),
        Write.of("add_turn", "turn", call_sid=sid, stream_sid="MZ1", turn=TurnRow(
            0, "caller", "I'd like a cleaning", at, heard_text=None, speech_end_at=at, asr_ms=101.5)),
        Write.of("add_event", "event", call_sid=sid, kind="transfer_failed", detail={"status": "busy"}, at=at),
        Write.of("end_call", "end", call_sid=sid, reason="stop event", at=at, greeting_ms=41.0,
                 stream_sid="MZ1", caller="", called=""),
        Write.of("status_callback", "status", call_sid=sid, twilio_status="completed", duration_s=12,
                 caller="", called="", at=at),
        Write.of("legacy_turn", "legacy", call_sid=legacy, state={"turn": 1}, end_reason=None, caller="+1555",
                 called="+1666", at=at, turns=[TurnRow(0, "zylin", "Hello", at)],
                 events=[("dtmf", {"digit": "0"}, at)]),
    ]
    journal = Journal(tmp_path)
    journal.append([(n + 1, w) for n, w in enumerate(writes)])
    for _segment, _seq, write in journal.read(100):
        await storage.apply(write)
    journal.close()

    detail = await storage.calls.get_call(sid)
    assert (detail.call.from_number, detail.stream_sid, detail.call.status) == ("+15550001111", "MZ1", "completed")
    assert detail.call.started_at == at and detail.call.ended_at == at and detail.greeting_ms == 41.0
    [turn] = detail.turns
    assert (turn.text, turn.at, turn.speech_end_at, turn.asr_ms) == ("I'd like a cleaning", at, at, 101.5)
    assert [(e.kind, e.detail, e.at) for e in detail.events] == [("transfer_failed", {"status": "busy"}, at)]
    assert (detail.twilio_status, detail.call.duration_s) == ("completed", 12)
    kept = await storage.calls.get_call(legacy)
    assert kept.call.mode == "legacy" and [t.text for t in kept.turns] == ["Hello"]
    assert [e.kind for e in kept.events] == ["dtmf"] and await storage.calls.legacy_state(legacy) == {"turn": 1}


async def test_a_database_outage_during_a_call_delays_its_record_but_loses_nothing(database: Database, monkeypatch,
                                                                                    tmp_path):
    storage = Storage(database, journal_dir=tmp_path)
    storage.writer.retry_delays_s = FAST
    storage.writer.start()
    recorder = DatabaseRecorder(storage)
    real_add_turn = storage.calls.add_turn
    failures = {"n": 0}

    async def add_turn_while_down(*args, **kwargs):
        if failures["n"] < 2:
            failures["n"] += 1
            raise OperationalError("INSERT", {}, ConnectionError("database restarting"))
        await real_add_turn(*args, **kwargs)

    monkeypatch.setattr(storage.calls, "add_turn", add_turn_while_down)
    info = call_info("CA" + "b" * 32)
    recorder.turn(info, TurnRecord(0, "zylin", "Hello!", time.monotonic()))
    recorder.ended(info, "stop event", [], [])
    detail = await recorder.wait_ended(info.call_sid)
    await storage.writer.close()
    assert [t.text for t in detail.turns] == ["Hello!"] and failures["n"] == 2


async def test_the_webhook_record_gives_up_waiting_quickly_and_leaves_it_to_the_writer(database: Database, monkeypatch,
                                                                                       tmp_path):
    storage = Storage(database, journal_dir=tmp_path, webhook_write_timeout_s=0.2)
    storage.writer.start()
    real_open = storage.calls.open_call
    attempts = {"n": 0}

    async def slow_then_fine(*args, **kwargs):
        attempts["n"] += 1
        if attempts["n"] == 1:
            try:
                await asyncio.sleep(30)  # the database hangs...
            finally:
                await asyncio.sleep(3)   # ...and so does letting go of the statement
        await real_open(*args, **kwargs)

    monkeypatch.setattr(storage.calls, "open_call", slow_then_fine)
    started = time.perf_counter()
    await storage.call_opened("CA" + "c" * 32, "+15550001111", "+15559990000")
    assert time.perf_counter() - started < 0.5, "the webhook does not wait for a cancelled statement"
    await storage.writer.flush()
    await storage.writer.close()
    assert (await storage.calls.get_call("CA" + "c" * 32)).call.from_number == "+15550001111"


# --- SQLite: a locked file ----------------------------------------------------------------------------

class Locked:
    """Another process holding the SQLite file's write lock: every write waits (busy_timeout),
    reads go on (WAL)."""

    def __init__(self, url: str) -> None:
        self.path = make_url(url).database
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Locked:
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None


async def test_a_call_recorded_while_the_sqlite_file_is_locked_is_stored_complete_once_it_is_free(tmp_path):
    async with fresh_database("sqlite") as database:
        storage = Storage(database, journal_dir=tmp_path, spill_after_s=0.2)
        storage.writer.start()
        recorder = DatabaseRecorder(storage)
        info = call_info("CA" + "f" * 32)
        with Locked(database.url) as lock:
            record_a_call(recorder, info)
            await until(lambda: any(line["kind"] == "end_call" for line in journaled(tmp_path)), 10,
                        "the whole call on disk while the file is locked")
            assert await storage.calls.get_call(info.call_sid) is None
            lock.release()
            detail = await recorder.wait_ended(info.call_sid, timeout_s=40)
        await storage.writer.close()
    assert detail.call.status == "completed" and detail.call.outcome == "message"
    assert [t.text for t in detail.turns] == ["Hello!", "Hours?"] and len(detail.events) == 1
    assert not list(tmp_path.glob("writes-*"))


async def test_a_call_recorded_while_the_sqlite_file_is_locked_survives_a_restart(tmp_path):
    folder = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{folder}/zylin.db"
    first = Storage(Database(url), spill_after_s=0.5)  # the journal goes beside the file by default
    await first.start()
    info = call_info("CA" + "9" * 32)
    others = asyncio.all_tasks()
    with Locked(url):
        record_a_call(DatabaseRecorder(first), info)
        await until(lambda: first.writer.behind, 10, "the writer finding the file locked")
        await first.writer.close()  # the server stops: the call's writes go to disk
    await first.close()
    # The statement cancelled mid-wait lets go of its connection once the file is free, as a
    # stopping process waits for it; then the next server starts.
    await until(lambda: all(t.done() for t in asyncio.all_tasks() - others - {asyncio.current_task()}), 30,
                "the first server's tasks finished")
    assert [line["kind"] for line in journaled(folder / "journal")] == [
        "stream_started", "add_turn", "add_turn", "add_event", "end_call"]

    second = Storage(Database(url))
    await second.start()
    try:
        await until(lambda: not list((folder / "journal").glob("writes-*")), 20, "the journal replayed")
        detail = await second.calls.get_call(info.call_sid)
    finally:
        await second.close()
    assert detail.call.status == "completed" and [t.text for t in detail.turns] == ["Hello!", "Hours?"]
    assert len(detail.events) == 1, "every write once"


def test_the_journal_folder_is_beside_the_sqlite_file_or_data_or_as_set(tmp_path, monkeypatch):
    from services.storage.service import journal_folder
    from tests.factories import make_settings

    monkeypatch.chdir(tmp_path)
    assert journal_folder(f"sqlite+aiosqlite:///{tmp_path}/db/zylin.db") == tmp_path / "db" / "journal"
    assert journal_folder("sqlite+aiosqlite:///data/zylin.db") == tmp_path / "data" / "journal"
    assert journal_folder("postgresql+asyncpg://u@db.example/zylin") == tmp_path / "data" / "journal"
    assert journal_folder("sqlite+aiosqlite:///:memory:") is None
    settings = make_settings(write_journal_dir=str(tmp_path / "kept"), database_url="sqlite+aiosqlite:///:memory:")
    assert Storage.from_settings(settings).writer.journal.folder == tmp_path / "kept"
    assert os.path.isabs(str(journal_folder("postgresql+asyncpg://u@db.example/zylin")))
