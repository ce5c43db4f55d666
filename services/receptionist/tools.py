"""The receptionist's tools: one layer that both brains call (OpenAI by function calling, the
mock brain directly). A tool returns data for the brain and, for end and transfer, an action
the conversation engine carries out once the caller has heard the last line.

Each tool's arguments are a pydantic model (tool_args.py): the JSON schema the brain is given is
generated from it, and the Toolbox reads a call's arguments with it before the tool runs, so a
tool gets them typed and arguments that cannot be read get a refusal, never the tool.

A result's words have one reader each, so that nothing meant for a brain reaches the caller:
- `reason` (on a failure): why, worded so the receptionist can say it to the caller as it is;
- `note`: what the brain should do next; for the brain only, never said;
- `ask` (on a failure): what the caller must give for the tool to work, one of "name",
  "phone", "date", "time", "which" (booking) or "message";
- `retryable`: the same call may work if it is made again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError

from services.llm.base import ToolCall, ToolSpec
from services.privacy import describe_error, mask_phone
from services.receptionist import booking, tool_args
from services.receptionist.profile import BusinessProfile
from services.receptionist.tool_args import ToolArgs
from services.receptionist.tool_types import BROKEN, CallAction, CallContext, ToolResult
from services.storage.vocabulary import SmsStatus

if TYPE_CHECKING:
    from services.storage import Storage
    from services.telephony.rest import Telephony

log = logging.getLogger("zylin.tools")


async def end_call(ctx: CallContext, args: tool_args.EndCall) -> ToolResult:
    return ToolResult({"ok": True, "note": "Say a short goodbye; the call ends after it."},
                      CallAction("end_call", reason=args.reason))


async def transfer_to_human(ctx: CallContext, args: tool_args.TransferToHuman) -> ToolResult:
    profile = ctx.profile
    if not profile.owner_phone or not ctx.can_transfer:
        why = "no one can take calls on this line right now"
    elif not profile.transfer_open(ctx.now()):
        why = "it is outside the hours when someone can take calls"
    else:
        return ToolResult({"ok": True, "note": "Tell the caller you are connecting them now."},
                          CallAction("transfer", reason=args.reason, target=profile.owner_phone))
    return ToolResult({"ok": False, "reason": why,
                       "note": "Apologise, and offer to take a message for the team instead."})


async def take_message(ctx: CallContext, args: tool_args.TakeMessage) -> ToolResult:
    entry = {"name": args.name, "phone": args.phone or ctx.caller_phone, "message": args.message,
             "urgency": args.urgency}
    ctx.messages.append(entry)
    log.info("message taken on %s for the owner from %s", ctx.call_sid, mask_phone(entry["phone"]))
    if ctx.storage is not None:
        owner = ctx.profile.owner_sms
        saved = await ctx.storage.messages.save_message(
            message=args.message, name=entry["name"], phone=entry["phone"], urgency=entry["urgency"],
            call_sid=ctx.call_sid, sms_status=SmsStatus.PENDING if owner else SmsStatus.OFF)
        if owner and ctx.telephony is not None:
            ctx.background(_text_owner(ctx, ctx.storage, ctx.telephony, saved.id, owner, entry))
    return ToolResult({"ok": True, "note": "Confirm the message will be passed on."})


async def _text_owner(ctx: CallContext, storage: Storage, telephony: Telephony, message_id: int, owner: str,
                      entry: dict[str, str]) -> None:
    who = entry["name"] or "A caller"
    urgent = "URGENT " if entry["urgency"] == "urgent" else ""
    body = f"{urgent}Message for {ctx.profile.name} from {who} ({entry['phone']}): {entry['message']}"
    sent = await telephony.send_sms(owner, body[:1500])
    try:
        await storage.messages.set_sms_status(message_id, SmsStatus.SENT if sent else SmsStatus.FAILED)
    except Exception as exc:
        log.error("could not record the SMS status of message %s: %s", message_id, describe_error(exc))


A = TypeVar("A", bound=ToolArgs)


@dataclass(frozen=True, slots=True)
class Tool(Generic[A]):
    """One tool: what the brain is told (its description, its arguments' schema) and what runs."""
    description: str
    arguments: type[A]
    handler: Callable[[CallContext, A], Awaitable[ToolResult]]


TOOLS: dict[str, Tool[Any]] = {
    "check_availability": Tool("Free times for a service on a day (optionally near a time or in a part of the "
                               "day). Always check before offering or booking a time.",
                               tool_args.CheckAvailability, booking.check_availability),
    "book_appointment": Tool("Book a checked free time once the caller has confirmed it.",
                             tool_args.BookAppointment, booking.book_appointment),
    "find_bookings": Tool("The caller's upcoming appointments.", tool_args.FindBookings, booking.find_bookings),
    "reschedule_appointment": Tool("Move an appointment to a new confirmed time.",
                                   tool_args.RescheduleAppointment, booking.reschedule_appointment),
    "cancel_appointment": Tool("Cancel an appointment the caller confirmed cancelling.",
                               tool_args.CancelAppointment, booking.cancel_appointment),
    "take_message": Tool("Take a message for the business owner.", tool_args.TakeMessage, take_message),
    "transfer_to_human": Tool("Put the caller through to a person at the business.",
                              tool_args.TransferToHuman, transfer_to_human),
    "end_call": Tool("End the call after saying goodbye, when the caller is done.",
                     tool_args.EndCall, end_call),
}


def tool_specs(profile: BusinessProfile) -> dict[str, ToolSpec]:
    """Every tool as the brain is given it; a `service` is one of this business's."""
    services = [s.name for s in profile.services]
    return {name: ToolSpec(name, tool.description, tool_args.parameters(tool.arguments, services))
            for name, tool in TOOLS.items()}


NEEDS_STORAGE = {"check_availability", "book_appointment", "find_bookings", "reschedule_appointment",
                 "cancel_appointment"}
READ_ONLY = {"check_availability", "find_bookings"}  # asked again = answered afresh
TIMED = NEEDS_STORAGE | {"take_message"}  # they wait on the database: they get a time budget
TOOL_TIMEOUT_S = 4.0      # settings TOOL_TIMEOUT_S: then an honest failure, never a silent caller
TOOL_ONE_MOMENT_S = 1.5   # settings TOOL_ONE_MOMENT_S: then the caller hears "One moment, please."


@dataclass(frozen=True, slots=True)
class ToolBudget:
    """How long a tool on the database may keep the caller waiting, and when they hear why."""
    timeout_s: float = TOOL_TIMEOUT_S
    one_moment_s: float = TOOL_ONE_MOMENT_S


def not_answering(name: str, side_effect: bool) -> dict[str, Any]:
    """The result of a tool the database did not answer in time: said honestly, never guessed."""
    system = "the message system" if name == "take_message" else "the booking system"
    note = "Say so, and offer to try again in a moment or to take a message."
    if side_effect:
        note = ("It may still go through: do not say it is done, nor that it failed. " + note)
    return {"ok": False, "retryable": True, "reason": f"{system} is not answering right now", "note": note}


class Toolbox:
    """Runs tool calls for one call. A call's arguments are read with its tool's model first. A side
    effect happens once: a repeated identical call (the brain retrying, a barge-in
    mid-confirmation) returns the first result."""

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

    async def run(self, call: ToolCall, on_hold: Callable[[], None] | None = None,
                  budget: ToolBudget | None = None) -> ToolResult:
        """Run one tool call. A tool on the database answers within `budget`: `on_hold` is called
        (the caller hears "One moment, please.") once it has taken `one_moment_s`, and at
        `timeout_s` the result is an honest failure while a side effect goes on by itself."""
        tool = TOOLS.get(call.name) if call.name in self._specs else None
        if tool is None:
            return ToolResult({"ok": False, "reason": f"there is no tool called {call.name}"})
        try:
            args = tool.arguments.model_validate(call.arguments)
        except ValidationError as exc:
            # Which arguments and how, never what they held: that may be the caller's words.
            log.info("tool %s on %s: arguments not readable (%s)", call.name, self.ctx.call_sid,
                     tool_args.what_was_wrong(exc))
            return tool_args.unreadable(exc, [s.name for s in self.ctx.profile.services])
        if call.name in READ_ONLY:
            work = asyncio.ensure_future(self._guarded(call, tool, args))
            try:
                return await self._within(call, work, budget or ToolBudget(), on_hold)
            finally:
                work.cancel()  # too late, or the reply was cancelled: asked again = answered afresh
        key = (call.name, args.model_dump_json())  # the same arguments as read, however they were sent
        running = self._done.get(key)
        if running is None:
            # Shielded: a barge-in cancels the reply, not a booking half-way into the database;
            # the brain's repeat of the same call then gets this same result (or waits for it).
            running = asyncio.ensure_future(self._guarded(call, tool, args))
            self._done[key] = running
            running.add_done_callback(lambda done: self._forget_retryable(key, done))
        return await self._within(call, running, budget or ToolBudget(), on_hold)

    async def _within(self, call: ToolCall, work: asyncio.Future[ToolResult], budget: ToolBudget,
                      on_hold: Callable[[], None] | None) -> ToolResult:
        """`work`'s result, or, past the budget, the honest failure. Never cancels `work`."""
        if call.name not in TIMED or self.ctx.storage is None or budget.timeout_s <= 0:
            return await asyncio.shield(work)
        hold_at = budget.one_moment_s if 0 < budget.one_moment_s < budget.timeout_s else budget.timeout_s
        done, _ = await asyncio.wait({work}, timeout=hold_at)
        if not done and hold_at < budget.timeout_s:
            if on_hold is not None:
                on_hold()
            done, _ = await asyncio.wait({work}, timeout=budget.timeout_s - hold_at)
        if done:
            return work.result()
        log.warning("tool %s on %s: no answer within %.1f s; the caller is told", call.name,
                    self.ctx.call_sid, budget.timeout_s)
        return ToolResult(not_answering(call.name, side_effect=call.name not in READ_ONLY))

    def _forget_retryable(self, key: tuple[str, str], done: asyncio.Future[ToolResult]) -> None:
        """A failure that may pass is not kept: the brain's next try runs the tool afresh."""
        if done.cancelled() or self._done.get(key) is not done:
            return
        data = done.result().data
        if not data.get("ok", True) and data.get("retryable"):
            self._done.pop(key, None)

    async def _guarded(self, call: ToolCall, tool: Tool[A], args: A) -> ToolResult:
        try:
            return await tool.handler(self.ctx, args)
        except Exception as exc:  # a tool bug or a database outage must not end the call
            # The error's message may quote the caller's words (the arguments): DEBUG only.
            log.error("tool %s failed on %s: %s", call.name, self.ctx.call_sid, describe_error(exc))
            log.debug("tool %s failed on %s", call.name, self.ctx.call_sid, exc_info=True)
            return ToolResult(dict(BROKEN))
