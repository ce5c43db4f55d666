"""DatabaseRecorder: the call's record written to the database as the call goes.

Each method converts the call's monotonic instants to UTC and queues one write, as plain data;
the writer task applies it, or keeps it on disk while the database is away. Nothing here waits
on the database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from services.llm.base import Message
from services.orchestrator.record import CallEvent, CallInfo, LogRecorder, TurnRecord
from services.storage.calls import CallDetail, TurnRow
from services.storage.service import Storage

RECENT_ENDS = 2000   # keys: call, and call/stream


def wall_clock(monotonic_at: float) -> datetime:
    """A monotonic instant of this process as a UTC datetime."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic_at)


def turn_row(turn: TurnRecord) -> TurnRow:
    latency = turn.latency
    values: dict[str, Any] = latency.as_dict() if latency is not None else {}
    speech_end = latency.speech_end if latency is not None else None
    return TurnRow(
        idx=turn.index, speaker=turn.speaker, text=turn.text, at=wall_clock(turn.at),
        heard_text=turn.heard_text, interrupted=turn.interrupted,
        speech_end_at=wall_clock(speech_end) if speech_end is not None else None, **values)


def plain(detail: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of an event's detail (tool results may hold dates or other objects)."""
    return json.loads(json.dumps(detail, default=str))


class DatabaseRecorder(LogRecorder):
    """Logs like LogRecorder and stores everything; `wait_ended` lets tests and tools await a
    call's stored end."""

    def __init__(self, storage: Storage, latency_target_ms: float = 1200.0) -> None:
        super().__init__(latency_target_ms)
        self.storage = storage
        self._waiters: dict[str, asyncio.Event] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()

    def stream_started(self, call: CallInfo) -> None:
        super().stream_started(call)
        self.storage.queue("stream_started", f"call {call.call_sid} stream started", call_sid=call.call_sid,
                           stream_sid=call.stream_sid, caller=call.caller, called=call.called,
                           at=wall_clock(call.started_at))

    def turn(self, call: CallInfo, turn: TurnRecord) -> None:
        super().turn(call, turn)
        self.storage.queue("add_turn", f"turn {call.call_sid} #{turn.index}", call_sid=call.call_sid,
                           turn=turn_row(turn), stream_sid=call.stream_sid)

    def event(self, call: CallInfo, event: CallEvent) -> None:
        super().event(call, event)
        self.storage.queue("add_event", f"event {call.call_sid} {event.kind}", call_sid=call.call_sid,
                           kind=event.kind, detail=plain(event.detail), at=wall_clock(event.at))

    def ended(self, call: CallInfo, reason: str, turns: list[TurnRecord], history: list[Message]) -> None:
        super().ended(call, reason, turns, history)
        self.storage.queue(
            "end_call", f"end of call {call.call_sid}",
            done=lambda stored: self._end_stored(call.call_sid, call.stream_sid),
            call_sid=call.call_sid, reason=reason, at=datetime.now(UTC), greeting_ms=call.greeting_ms,
            stream_sid=call.stream_sid, caller=call.caller, called=call.called)

    def _end_stored(self, call_sid: str, stream_sid: str) -> None:
        for key in (call_sid, f"{call_sid}/{stream_sid}"):
            self._recent[key] = None
            waiter = self._waiters.pop(key, None)
            if waiter is not None:
                waiter.set()
        while len(self._recent) > RECENT_ENDS:
            self._recent.popitem(last=False)

    async def wait_ended(self, call_sid: str, timeout_s: float = 10.0, *, stream_sid: str = "") -> CallDetail:
        """The stored call, once this server has written the end of its stream (of `stream_sid`,
        when a call had several: a caller back from a transfer)."""
        key = f"{call_sid}/{stream_sid}" if stream_sid else call_sid
        if key not in self._recent:
            waiter = self._waiters.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), timeout_s)
            except TimeoutError:
                self._waiters.pop(key, None)
                raise
        detail = await self.storage.calls.get_call(call_sid)
        assert detail is not None, f"call {call_sid} ended but is not stored"
        return detail
