"""The receptionist's tools: one layer that both brains call (OpenAI by function calling, the
mock brain directly). A tool returns data for the brain and, for end and transfer, an action
the conversation engine carries out once the caller has heard the last line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from services.llm.base import ToolCall, ToolSpec
from services.privacy import mask_phone
from services.receptionist.profile import BusinessProfile

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
    """What the tools know about the call they serve."""
    call_sid: str
    caller_phone: str
    profile: BusinessProfile
    can_transfer: bool
    messages: list[dict[str, str]] = field(default_factory=list)


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[ToolResult]]


async def end_call(ctx: CallContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult({"ok": True, "note": "Say a short goodbye; the call ends after it."},
                      CallAction("end_call", reason=str(args.get("reason", ""))))


async def transfer_to_human(ctx: CallContext, args: dict[str, Any]) -> ToolResult:
    reason = str(args.get("reason", "caller asked for a person"))
    profile = ctx.profile
    if not profile.owner_phone or not ctx.can_transfer:
        why = "no one can take calls on this line right now"
    elif not profile.transfer_open():
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
             "message": message, "urgency": str(args.get("urgency", "normal"))}
    ctx.messages.append(entry)
    log.info("message taken on %s for the owner from %s", ctx.call_sid, mask_phone(entry["phone"]))
    return ToolResult({"ok": True, "note": "Confirm the message will be passed on."})


_STRING = {"type": "string"}

TOOLS: dict[str, tuple[ToolSpec, Handler]] = {
    "end_call": (ToolSpec(
        "end_call", "End the call after saying goodbye, when the caller is done.",
        {"type": "object", "properties": {"reason": _STRING}, "required": []}), end_call),
    "transfer_to_human": (ToolSpec(
        "transfer_to_human", "Put the caller through to a person at the business.",
        {"type": "object", "properties": {"reason": _STRING}, "required": ["reason"]}),
        transfer_to_human),
    "take_message": (ToolSpec(
        "take_message", "Take a message for the business owner.",
        {"type": "object", "properties": {
            "name": _STRING, "phone": _STRING, "message": _STRING,
            "urgency": {"type": "string", "enum": ["low", "normal", "urgent"]}},
         "required": ["message"]}), take_message),
}


class Toolbox:
    """Runs tool calls for one call; a repeated identical call returns the first result."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self._done: dict[tuple[str, str], ToolResult] = {}

    @property
    def specs(self) -> list[ToolSpec]:
        return [spec for spec, _ in TOOLS.values()]

    async def run(self, call: ToolCall) -> ToolResult:
        entry = TOOLS.get(call.name)
        if entry is None:
            return ToolResult({"ok": False, "reason": f"there is no tool called {call.name}"})
        key = (call.name, repr(sorted(call.arguments.items())))
        if key in self._done:
            return self._done[key]
        try:
            result = await entry[1](self.ctx, call.arguments)
        except Exception:  # a tool bug must not end the call
            log.exception("tool %s failed on %s", call.name, self.ctx.call_sid)
            return ToolResult({"ok": False, "reason": "that did not work; apologise and offer a message"})
        self._done[key] = result
        return result
