"""LATENCY_FIELDS is the one list of a turn's durations: it holds every duration TurnLatency
derives, and each reaches the turns table, the stored turn and the JSON API under its name, so
a new duration cannot be measured and then forgotten on the way."""

from __future__ import annotations

import time
from dataclasses import fields

import httpx

from api.console.latency import BAR_PARTS
from services.orchestrator.database_recorder import turn_row
from services.orchestrator.latency import LATENCY_FIELDS, TurnLatency
from services.orchestrator.record import CallInfo, TurnRecord
from services.storage import Database, Storage, TurnRow
from services.storage.models import Turn
from services.storage.writer import Write
from tests.conftest import running_zylin

NAMES = [f.name for f in LATENCY_FIELDS]
ADMIN = "owner-secret-token"


def a_measured_turn() -> TurnRecord:
    """A caller turn with every instant known, so every duration has a value."""
    now = time.monotonic()
    latency = TurnLatency(speech_end=now - 1.0, transcript_at=now - 0.9, llm_request_at=now - 0.89,
                          llm_first_at=now - 0.7, tool_s=0.05, tool_before_audio_s=0.05, tts_request_at=now - 0.65,
                          tts_first_at=now - 0.55, first_audio_at=now - 0.5, heard_at=now - 0.3)
    assert all(value is not None for value in latency.as_dict().values())
    return TurnRecord(1, "caller", "What are your hours?", now - 0.9, latency=latency)


def test_the_list_is_every_duration_turn_latency_derives_once_each():
    derived = [name for name, value in vars(TurnLatency).items() if isinstance(value, property)]
    assert sorted(NAMES) == sorted(derived) and len(set(NAMES)) == len(NAMES)
    assert list(a_measured_turn().latency.as_dict()) == NAMES


def test_the_turns_table_and_the_turn_row_have_a_column_for_each_and_no_other():
    columns = [c.name for c in Turn.__table__.columns if c.name not in ("id", "call_id")]
    row = [f.name for f in fields(TurnRow)]
    assert sorted(columns) == sorted(row), "a turn row is the table's columns"
    assert [name for name in columns if name.endswith("_ms")] == NAMES
    assert [name for name in row if name.endswith("_ms")] == NAMES


def test_the_call_page_stacks_each_part_of_the_time_to_first_audio():
    assert [name for name, _, _ in BAR_PARTS] == [f.name for f in LATENCY_FIELDS if f.part]


async def test_each_duration_is_stored_with_the_turn_under_its_name(database: Database):
    storage = Storage(database)
    sid = "CA" + "7" * 32
    turn = a_measured_turn()
    await storage.calls.open_call(sid)
    # as the recorder sends it: a Write, plain JSON (the journal's form), applied by the storage
    await storage.apply(Write.of("add_turn", "turn", call_sid=sid, turn=turn_row(turn)))
    detail = await storage.calls.get_call(sid)
    assert detail is not None
    stored = detail.turns[0]
    assert {name: getattr(stored, name) for name in NAMES} == turn.latency.as_dict()


async def test_each_duration_is_in_the_json_api_under_its_name():
    async with running_zylin(database=True, admin_token=ADMIN) as zylin:
        turn = a_measured_turn()
        info = CallInfo("CA" + "8" * 32, "MZ" + "8" * 32, "+15550100001", "+15559990000", time.monotonic())
        zylin.recorder.stream_started(info)
        zylin.recorder.turn(info, turn)
        zylin.recorder.ended(info, "stop event", [turn], [])
        await zylin.recorder.wait_ended(info.call_sid)
        async with httpx.AsyncClient(base_url=zylin.base_url, timeout=10,
                                     headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            call = (await http.get(f"/api/calls/{info.call_sid}")).json()
    assert {name: call["turns"][0][name] for name in NAMES} == turn.latency.as_dict()
