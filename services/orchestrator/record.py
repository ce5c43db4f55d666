"""What a call leaves behind: turns with latency, events, the end. A recorder receives it as
the call goes, never on the per-frame path; its methods must return at once (the database
recorder, services/orchestrator/database_recorder.py, only queues writes)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.llm.base import Message
from services.orchestrator.latency import TurnLatency
from services.privacy import log_safe, mask_phone
from services.storage.vocabulary import EventKind, Speaker

log = logging.getLogger("zylin.calls")


@dataclass(slots=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    caller: str
    called: str
    started_at: float  # monotonic, at the `start` event
    greeting_ms: float | None = None


@dataclass(slots=True)
class TurnRecord:
    index: int
    speaker: Speaker
    text: str
    at: float                                 # monotonic
    heard_text: str | None = None             # zylin turns: what the caller actually heard
    interrupted: bool = False
    latency: TurnLatency | None = None        # caller turns: the reply's latency


@dataclass(slots=True)
class CallEvent:
    kind: EventKind
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


class CallRecorder(Protocol):
    def stream_started(self, call: CallInfo) -> None: ...
    def turn(self, call: CallInfo, turn: TurnRecord) -> None: ...
    def event(self, call: CallInfo, event: CallEvent) -> None: ...
    def ended(self, call: CallInfo, reason: str, turns: list[TurnRecord],
              history: list[Message]) -> None: ...


class LogRecorder:
    """Writes each finished turn and event to the log. At INFO a line carries what happened, not
    what was said: latencies and kinds, an event's detail through `log_safe` (numbers and codes
    masked, caller content redacted). The words themselves go to DEBUG only."""

    def __init__(self, latency_target_ms: float = 1200.0) -> None:
        self.latency_target_ms = latency_target_ms

    def stream_started(self, call: CallInfo) -> None:
        log.debug("call %s stream %s started", call.call_sid, call.stream_sid)

    def turn(self, call: CallInfo, turn: TurnRecord) -> None:
        fields = {"call": call.call_sid, "turn": turn.index, "speaker": turn.speaker}
        if turn.latency is not None:
            fields.update(turn.latency.as_dict())
            total = turn.latency.first_audio_ms
            if total is not None and total > self.latency_target_ms:
                log.warning("slow turn %s #%d: %.0f ms to first audio (target %.0f)",
                            call.call_sid, turn.index, total, self.latency_target_ms)
        if turn.interrupted:
            fields["interrupted"] = True
        log.info("turn %s", json.dumps(fields))
        log.debug("turn %s #%d %s said %r", call.call_sid, turn.index, turn.speaker, turn.text)

    def event(self, call: CallInfo, event: CallEvent) -> None:
        log.info("event %s %s %s", call.call_sid, event.kind, json.dumps(log_safe(event.detail), default=str))
        log.debug("event %s %s in full: %s", call.call_sid, event.kind, json.dumps(event.detail, default=str))

    def ended(self, call: CallInfo, reason: str, turns: list[TurnRecord],
              history: list[Message]) -> None:
        log.info("call %s from %s ended (%s) after %d turns", call.call_sid, mask_phone(call.caller),
                 reason, len(turns))


class MemoryRecorder(LogRecorder):
    """Keeps every call in memory as well: for the demo's summary and for tests."""

    def __init__(self, latency_target_ms: float = 1200.0) -> None:
        super().__init__(latency_target_ms)
        self.calls: dict[str, dict[str, Any]] = {}
        self._ended: dict[str, asyncio.Event] = {}

    def _call(self, call: CallInfo) -> dict[str, Any]:
        return self.calls.setdefault(call.call_sid, {"info": call, "turns": [], "events": [],
                                                     "ended": None, "history": []})

    async def wait_ended(self, call_sid: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The call's record once the server has closed it."""
        event = self._ended.setdefault(call_sid, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout_s)
        return self.calls[call_sid]

    def stream_started(self, call: CallInfo) -> None:
        super().stream_started(call)
        self._call(call)

    def turn(self, call: CallInfo, turn: TurnRecord) -> None:
        super().turn(call, turn)
        self._call(call)["turns"].append(turn)

    def event(self, call: CallInfo, event: CallEvent) -> None:
        super().event(call, event)
        self._call(call)["events"].append(event)

    def ended(self, call: CallInfo, reason: str, turns: list[TurnRecord],
              history: list[Message]) -> None:
        super().ended(call, reason, turns, history)
        entry = self._call(call)
        entry["ended"] = reason
        entry["history"] = list(history)
        self._ended.setdefault(call.call_sid, asyncio.Event()).set()
