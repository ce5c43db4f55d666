"""The receptionist's tools: one layer that both brains call (OpenAI by function calling, the
mock brain directly). A tool returns data for the brain and, for end and transfer, an action
the conversation engine carries out once the caller has heard the last line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from services.llm.base import ToolCall, ToolSpec
from services.privacy import mask_phone
from services.receptionist import booking
from services.receptionist.profile import BusinessProfile

if TYPE_CHECKING:
    from services.storage import Storage
    from services.telephony.rest import Telephony

log = logging.getLogger("zylin.tools")


@dataclass(frozen=True, slots=True)
class CallAction:
    kind: Literal["end_call", "transfer"]
    reason: str = ""
    target: str = ""  # the number to dial for a transfer


@dataclass(slots=True)
class ToolResult:
    data: dict[str, Any]
    action: CallAction | None = None


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

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Side work (an SMS) that must not hold up what the caller hears."""
        task = asyncio.create_task(work)
        self._side_work.add(task)
        task.add_done_callback(self._side_work.discard)


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[ToolResult]]


async def end_call(ctx: CallContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult({"ok": True, "note": "Say a short goodbye; the call ends after it."},
                      CallAction("end_call", reason=str(args.get("reason", ""))))


async def transfer_to_human(ctx: CallContext, args: dict[str, Any]) -> ToolResult:
    reason = str(args.get("reason", "caller asked for a person"))
    profile = ctx.profile
    if not profile.owner_phone or not ctx.can_transfer:
        why = "no one can take calls on this line right now"
    elif not profile.transfer_open(ctx.now()):
        why = "it is outside the hours when someone can take calls"
    else:
        return ToolResult({"ok": True, "note": "Tell the caller you are connecting them now."},
                          CallAction("transfer", reason=reason, target=profile.owner_phone))
    return ToolResult({"ok": False, "reason": why,
                       "note": "Apologise, and offer to take a message for the team instead."})


async def take_message(ctx: CallContext, args: dict[str, Any]) -> ToolResult:
    message = str(args.get("message", "")).strip()
    if not message:
        return ToolResult({"ok": False, "reason": "the message is empty; ask what to pass on"})
    entry = {"name": str(args.get("name", "")), "phone": str(args.get("phone") or ctx.caller_phone),
             "message": message, "urgency": str(args.get("urgency") or "normal")}
    ctx.messages.append(entry)
    log.info("message taken on %s for the owner from %s", ctx.call_sid, mask_phone(entry["phone"]))
    if ctx.storage is not None:
        owner = ctx.profile.owner_sms
        saved = await ctx.storage.messages.save_message(
            message=message, name=entry["name"], phone=entry["phone"], urgency=entry["urgency"],
            call_sid=ctx.call_sid, sms_status="pending" if owner else "off")
        if owner and ctx.telephony is not None:
            ctx.background(_text_owner(ctx, saved.id, owner, entry))
    return ToolResult({"ok": True, "note": "Confirm the message will be passed on."})


async def _text_owner(ctx: CallContext, message_id: int, owner: str, entry: dict[str, str]) -> None:
    who = entry["name"] or "A caller"
    urgent = "URGENT " if entry["urgency"] == "urgent" else ""
    body = f"{urgent}Message for {ctx.profile.name} from {who} ({entry['phone']}): {entry['message']}"
    sent = await ctx.telephony.send_sms(owner, body[:1500])
    try:
        await ctx.storage.messages.set_sms_status(message_id, "sent" if sent else "failed")
    except Exception as exc:
        log.error("could not record the SMS status of message %s: %s", message_id, exc)


_STRING = {"type": "string"}
_LOCAL_TIME = {"type": "string", "description": "business local time, YYYY-MM-DDTHH:MM"}


def tool_specs(profile: BusinessProfile) -> dict[str, ToolSpec]:
    services = {"type": "string", "enum": [s.name for s in profile.services]}
    code_or_phone = {"code": {"type": "string", "description": "confirmation code, if the caller has it"},
                     "customer_phone": {"type": "string", "description": "empty = the number calling"}}
    specs = [
        ToolSpec("check_availability", "Free times for a service on a day (optionally near a time or "
                 "in a part of the day). Always check before offering or booking a time.",
                 {"type": "object", "properties": {
                     "service": services, "date": {"type": "string", "description": "YYYY-MM-DD"},
                     "time": {"type": "string", "description": "HH:MM the caller asked for"},
                     "part_of_day": {"type": "string", "enum": ["morning", "afternoon", "evening"]}},
                  "required": ["service", "date"]}),
        ToolSpec("book_appointment", "Book a checked free time once the caller has confirmed it.",
                 {"type": "object", "properties": {
                     "service": services, "start": _LOCAL_TIME, "customer_name": _STRING,
                     "customer_phone": {"type": "string", "description": "empty = the number calling"}},
                  "required": ["service", "start", "customer_name"]}),
        ToolSpec("find_bookings", "The caller's upcoming appointments.",
                 {"type": "object", "properties": {"customer_phone": code_or_phone["customer_phone"]},
                  "required": []}),
        ToolSpec("reschedule_appointment", "Move an appointment to a new confirmed time.",
                 {"type": "object", "properties": {"new_start": _LOCAL_TIME, **code_or_phone},
                  "required": ["new_start"]}),
        ToolSpec("cancel_appointment", "Cancel an appointment the caller confirmed cancelling.",
                 {"type": "object", "properties": code_or_phone, "required": []}),
        ToolSpec("take_message", "Take a message for the business owner.",
                 {"type": "object", "properties": {
                     "name": _STRING, "phone": _STRING, "message": _STRING,
                     "urgency": {"type": "string", "enum": ["low", "normal", "urgent"]}},
                  "required": ["message"]}),
        ToolSpec("transfer_to_human", "Put the caller through to a person at the business.",
                 {"type": "object", "properties": {"reason": _STRING}, "required": ["reason"]}),
        ToolSpec("end_call", "End the call after saying goodbye, when the caller is done.",
                 {"type": "object", "properties": {"reason": _STRING}, "required": []}),
    ]
    return {spec.name: spec for spec in specs}


HANDLERS: dict[str, Handler] = {
    "check_availability": booking.check_availability,
    "book_appointment": booking.book_appointment,
    "find_bookings": booking.find_bookings,
    "reschedule_appointment": booking.reschedule_appointment,
    "cancel_appointment": booking.cancel_appointment,
    "take_message": take_message,
    "transfer_to_human": transfer_to_human,
    "end_call": end_call,
}
NEEDS_STORAGE = {"check_availability", "book_appointment", "find_bookings", "reschedule_appointment",
                 "cancel_appointment"}
READ_ONLY = {"check_availability", "find_bookings"}  # asked again = answered afresh


class Toolbox:
    """Runs tool calls for one call. A side effect happens once: a repeated identical call (the
    brain retrying, a barge-in mid-confirmation) returns the first result."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        offered = tool_specs(ctx.profile)
        if ctx.storage is None:
            offered = {k: v for k, v in offered.items() if k not in NEEDS_STORAGE}
        self._specs = offered
        self._done: dict[tuple[str, str], asyncio.Future[ToolResult]] = {}

    @property
    def specs(self) -> list[ToolSpec]:
        return list(self._specs.values())

    async def run(self, call: ToolCall) -> ToolResult:
        handler = HANDLERS.get(call.name) if call.name in self._specs else None
        if handler is None:
            return ToolResult({"ok": False, "reason": f"there is no tool called {call.name}"})
        if call.name in READ_ONLY:
            return await self._guarded(call, handler)
        key = (call.name, repr(sorted(call.arguments.items())))
        running = self._done.get(key)
        if running is None:
            # Shielded: a barge-in cancels the reply, not a booking half-way into the database;
            # the brain's repeat of the same call then gets this same result.
            running = asyncio.ensure_future(self._guarded(call, handler))
            self._done[key] = running
        result = await asyncio.shield(running)
        if not result.data.get("ok", True) and result.data.get("retryable"):
            self._done.pop(key, None)
        return result

    async def _guarded(self, call: ToolCall, handler: Handler) -> ToolResult:
        try:
            return await handler(self.ctx, call.arguments)
        except Exception:  # a tool bug or a database outage must not end the call
            log.exception("tool %s failed on %s", call.name, self.ctx.call_sid)
            return ToolResult({"ok": False, "retryable": True,
                               "reason": "that did not work; apologise and offer a message"})
