"""The background writer and the database recorder: the call path only enqueues; a database
hiccup is retried, a lasting failure is logged and dropped, and nothing ever blocks a call."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from services.llm.base import Message
from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import CallEvent, CallInfo, TurnRecord
from services.storage import Database, Storage
from services.storage.recorder import DatabaseRecorder
from services.storage.writer import Writer

FAST = (0.01, 0.02, 0.05)


def flaky(failures: int, error: Exception):
    calls = {"n": 0}

    async def write() -> None:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
    return write, calls


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


async def test_a_write_that_keeps_failing_is_logged_and_dropped_and_the_next_one_goes_through(caplog):
    writer = Writer(retry_delays_s=FAST)
    writer.start()
    bad, bad_calls = flaky(99, IntegrityError("INSERT", {}, Exception("a bug")))
    good, good_calls = flaky(0, RuntimeError())
    down, down_calls = flaky(99, OperationalError("INSERT", {}, ConnectionError("refused")))
    outcomes: list[tuple[str, bool]] = []
    writer.submit("bad", bad, lambda ok: outcomes.append(("bad", ok)))
    writer.submit("down", down, lambda ok: outcomes.append(("down", ok)))
    writer.submit("good", good, lambda ok: outcomes.append(("good", ok)))
    with caplog.at_level(logging.ERROR, "zylin.storage.writer"):
        await writer.flush()
    await writer.close()
    assert outcomes == [("bad", False), ("down", False), ("good", True)], "in order, none lost silently"
    assert bad_calls["n"] == 2, "a lasting failure is tried twice, not for half a minute"
    assert down_calls["n"] == len(FAST) + 1
    assert writer.failed == 2
    assert "could not store bad" in caplog.text and "could not store down" in caplog.text


async def test_submitting_never_blocks_even_when_the_queue_is_full(caplog):
    writer = Writer(max_queue=3)  # not started: nothing drains it
    write, _ = flaky(0, RuntimeError())
    dropped: list[bool] = []
    started = time.perf_counter()
    for n in range(5):
        writer.submit(f"write {n}", write, dropped.append)
    assert time.perf_counter() - started < 0.01
    assert writer.dropped == 2 and dropped == [False, False]
    assert "database writes are backed up" in caplog.text


def call_info(sid: str) -> CallInfo:
    return CallInfo(call_sid=sid, stream_sid="MZ" + sid[2:], caller="+15550001111", called="+15559990000",
                    started_at=time.monotonic() - 5, greeting_ms=12.0)


async def test_the_recorder_stores_a_call_as_it_goes_and_its_methods_return_at_once(database: Database):
    storage = Storage(database)
    storage.writer.start()
    recorder = DatabaseRecorder(storage)
    info = call_info("CA" + "a" * 32)
    now = time.monotonic()
    latency = TurnLatency(speech_end=now - 1.0, transcript_at=now - 0.9, llm_request_at=now - 0.9,
                          llm_first_at=now - 0.7, tts_request_at=now - 0.7, tts_first_at=now - 0.6,
                          first_audio_at=now - 0.55, heard_at=now - 0.3)

    started = time.perf_counter()
    recorder.stream_started(info)
    recorder.turn(info, TurnRecord(0, "zylin", "Hello!", now - 3))
    recorder.turn(info, TurnRecord(1, "caller", "Hours?", now - 0.9, latency=latency))
    recorder.event(info, CallEvent("tool", now - 0.8, {"name": "take_message", "arguments": {"message": "x"},
                                                       "result": {"ok": True, "when": object()}}))
    recorder.ended(info, "stop event", [], [Message("user", "Hours?")])
    assert time.perf_counter() - started < 0.005, "recording must not wait for the database"

    detail = await recorder.wait_ended(info.call_sid)
    await storage.writer.close()
    assert detail.call.status == "completed" and detail.call.outcome == "message"
    assert detail.greeting_ms == 12.0 and detail.stream_sid == info.stream_sid
    hours = detail.turns[1]
    assert hours.first_audio_ms == pytest.approx(450, abs=1) and hours.asr_ms == pytest.approx(100, abs=1)
    assert hours.heard_ms == pytest.approx(700, abs=1) and hours.overhead_ms == pytest.approx(50, abs=1)
    assert detail.events[0].detail["result"]["when"].startswith("<object"), "details are stored as JSON"
    assert abs((detail.turns[1].at - detail.turns[0].at).total_seconds() - 2.1) < 0.01


async def test_a_database_outage_during_a_call_delays_its_record_but_loses_nothing(database: Database, monkeypatch):
    storage = Storage(database)
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


async def test_the_webhook_record_gives_up_waiting_quickly_and_leaves_it_to_the_writer(database: Database, monkeypatch):
    storage = Storage(database)
    storage.writer.start()
    real_open = storage.calls.open_call
    attempts = {"n": 0}

    async def slow_then_fine(*args, **kwargs):
        attempts["n"] += 1
        if attempts["n"] == 1:
            await asyncio.sleep(30)  # the database hangs
        await real_open(*args, **kwargs)

    monkeypatch.setattr(storage.calls, "open_call", slow_then_fine)
    monkeypatch.setattr("services.storage.service.WEBHOOK_WRITE_TIMEOUT_S", 0.2)
    started = time.perf_counter()
    await storage.call_opened("CA" + "c" * 32, "+15550001111", "+15559990000")
    assert time.perf_counter() - started < 1.0
    await storage.writer.flush()
    await storage.writer.close()
    assert (await storage.calls.get_call("CA" + "c" * 32)).call.from_number == "+15550001111"
