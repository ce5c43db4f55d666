"""What a tool is given and what it gives back: the call it serves (CallContext), its result
(ToolResult) and the action a result may ask of the conversation engine (CallAction).

A module of their own so that the tool modules (tools.py, booking.py) and the engines that run
them all import these from one place, and no tool module needs another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from services.receptionist.profile import BusinessProfile

if TYPE_CHECKING:
    from services.storage import Bookings, Storage
    from services.telephony.rest import Telephony


@dataclass(frozen=True, slots=True)
class CallAction:
    kind: Literal["end_call", "transfer"]
    reason: str = ""
    target: str = ""  # the number to dial for a transfer


@dataclass(slots=True)
class ToolResult:
    data: dict[str, Any]
    action: CallAction | None = None


# A tool that broke (a bug, a database outage): the caller hears an apology, not the fault.
BROKEN = {"ok": False, "retryable": True, "reason": "something went wrong on my side",
          "note": "The tool failed. Apologise, and offer to take a message for the team instead."}


@dataclass(slots=True)
class CallContext:
    """What the tools know about the call they serve and what they may use."""
    call_sid: str
    caller_phone: str
    profile: BusinessProfile
    can_transfer: bool
    storage: Storage | None = None
    telephony: Telephony | None = None
    sms_confirmations: bool = False
    clock: Callable[[], datetime] | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    _side_work: set[asyncio.Task] = field(default_factory=set)

    def now(self) -> datetime:
        return self.clock() if self.clock else self.profile.now()

    def bookings(self) -> Bookings:
        """The bookings, for the booking tools. The Toolbox offers those only on a call with
        storage, so reaching here without it is a bug (the Toolbox answers it as BROKEN)."""
        if self.storage is None:
            raise RuntimeError("the booking tools need storage, and this call has none")
        return self.storage.bookings

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Side work (an SMS) that must not hold up what the caller hears."""
        task = asyncio.create_task(work)
        self._side_work.add(task)
        task.add_done_callback(self._side_work.discard)
