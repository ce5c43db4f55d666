"""One caller turn's brain and tool loop, the same for a live call and for record mode.

The brain is asked, its tool calls are run and their results go back to it, until it answers
without calling a tool. What the caller hears of the words, what a slow tool makes them hear and
how a tool run is recorded differ between the two engines: they come in as hooks.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from services.llm.base import Brain, Message, TextDelta, ToolCall
from services.receptionist.tool_types import ToolResult
from services.receptionist.tools import Toolbox, ToolBudget

log = logging.getLogger("zylin.generation")


class Timings(Protocol):
    """Where the loop notes when the brain was first asked and first answered, and each tool run."""
    llm_request_at: float | None
    llm_first_at: float | None

    def add_tool_run(self, started: float, ended: float) -> None: ...


def _nothing(*_: object) -> None:
    return None


async def run_turn(brain: Brain, instructions: str, history: list[Message], toolbox: Toolbox, *,
                   messages: list[Message], timings: Timings, budget: ToolBudget, max_rounds: int,
                   on_text: Callable[[Message, str], None] = _nothing,
                   on_words: Callable[[Message], None] = _nothing,
                   on_hold: Callable[[Message], None] | None = None,
                   on_tool: Callable[[ToolCall, ToolResult], None] = _nothing,
                   before_tool: Callable[[ToolCall], Awaitable[None]] | None = None) -> None:
    """Brain rounds until it stops calling tools (or `max_rounds` ran out).

    Each round's assistant message joins `messages` before the brain speaks, and each tool result
    right after its run: an engine that cancels the turn (a barge-in, a response budget) still
    holds what was said and done. `on_text` gets each text delta with its message, `on_words` the
    message once its round's words are all in (before its tools run), `on_hold` the message of a
    tool that keeps the caller waiting past `budget.one_moment_s`, `on_tool` each tool's result.
    `before_tool` is awaited before each tool runs: a speculative reply holds its side effects there.
    """
    for _ in range(max_rounds):
        message = Message("assistant")
        context = history + messages
        messages.append(message)
        calls: list[ToolCall] = []
        if timings.llm_request_at is None:
            timings.llm_request_at = time.monotonic()
        async for out in brain.respond(instructions, context, toolbox.specs):
            if timings.llm_first_at is None:
                timings.llm_first_at = time.monotonic()
            if isinstance(out, TextDelta):
                message.content += out.text
                on_text(message, out.text)
            elif isinstance(out, ToolCall):
                calls.append(out)
        on_words(message)
        if not calls:
            return
        message.tool_calls = calls
        hold = None if on_hold is None else functools.partial(on_hold, message)
        for call in calls:
            if before_tool is not None:
                await before_tool(call)
            started = time.monotonic()
            result = await toolbox.run(call, hold, budget)
            timings.add_tool_run(started, time.monotonic())
            on_tool(call, result)
            messages.append(Message("tool", json.dumps(result.data), tool_call_id=call.id, name=call.name))
    log.warning("brain kept calling tools on %s; stopping after %d rounds", toolbox.ctx.call_sid, max_rounds)
