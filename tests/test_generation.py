"""The brain and tool loop both engines run: rounds until no tool is called, with a scripted brain."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from services.llm.base import Message, TextDelta, ToolCall, ToolSpec
from services.orchestrator.generation import run_turn
from services.orchestrator.latency import TurnLatency
from services.receptionist.tool_types import CallAction, ToolResult
from services.receptionist.tools import ToolBudget
from tests.fakes.scripted_brain import ScriptedBrain, call, words

SPECS = [ToolSpec("end_call", "End the call.", {"type": "object", "properties": {}}),
         ToolSpec("check_availability", "Free times.", {"type": "object", "properties": {}})]


@dataclass
class Tools:
    """A toolbox that answers from a table; a tool named in `slow` first puts the caller on hold."""
    results: dict[str, ToolResult]
    slow: set[str] = field(default_factory=set)
    ran: list[tuple[ToolCall, ToolBudget | None]] = field(default_factory=list)
    specs: list[ToolSpec] = field(default_factory=lambda: list(SPECS))
    ctx: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(call_sid="CA123"))

    async def run(self, call: ToolCall, on_hold=None, budget: ToolBudget | None = None) -> ToolResult:
        self.ran.append((call, budget))
        if call.name in self.slow and on_hold is not None:
            on_hold()
        await asyncio.sleep(0)
        return self.results[call.name]


GOODBYE = ToolResult({"ok": True}, CallAction("end_call", reason="caller said goodbye"))
FREE = ToolResult({"ok": True, "slots": ["2026-11-23T15:00"]})
HISTORY = [Message("user", "Thanks, bye!")]


async def turn(brain, tools, **hooks) -> tuple[list[Message], TurnLatency]:
    messages: list[Message] = []
    timings = TurnLatency()
    budget = hooks.pop("budget", ToolBudget())
    await asyncio.wait_for(run_turn(brain, "You are Zylin.", HISTORY, tools, messages=messages, timings=timings,
                                    budget=budget, max_rounds=hooks.pop("max_rounds", 4), **hooks), 5)
    return messages, timings


async def test_words_then_a_tool_then_the_brain_again_with_its_result_until_it_calls_none():
    brain = ScriptedBrain([[*words("Goodbye! "), call("end_call", reason="caller said goodbye")], []])
    tools = Tools({"end_call": GOODBYE})
    seen, ran = [], []
    messages, timings = await turn(brain, tools, on_text=lambda m, t: seen.append((id(m), t)),
                                   on_tool=lambda c, r: ran.append((c.name, r.action)))

    first, result, second = messages
    assert (first.role, first.content, [c.name for c in first.tool_calls]) == ("assistant", "Goodbye! ", ["end_call"])
    assert (result.role, result.tool_call_id, result.name) == ("tool", "call_end_call", "end_call")
    assert json.loads(result.content) == {"ok": True}
    assert (second.role, second.content, second.tool_calls) == ("assistant", "", [])
    assert seen == [(id(first), "Goodbye! ")]
    assert ran == [("end_call", GOODBYE.action)]
    # Each round is asked with the instructions, the history so far and the tools on offer.
    assert [a.instructions for a in brain.asked] == ["You are Zylin."] * 2
    assert brain.asked[0].history == HISTORY and brain.asked[0].tools == ["end_call", "check_availability"]
    assert brain.asked[1].history == [*HISTORY, first, result]
    assert timings.llm_request_at is not None and timings.llm_first_at is not None
    assert timings.llm_request_at <= timings.llm_first_at


async def test_a_round_s_words_are_all_in_before_its_tools_run():
    brain = ScriptedBrain([[*words("Let me check. "), call("check_availability")], words("It's free.")])
    tools = Tools({"check_availability": FREE})
    order = []
    await turn(brain, tools, on_words=lambda m: order.append(("words", m.content)),
               on_tool=lambda c, r: order.append(("tool", c.name)))
    assert order == [("words", "Let me check. "), ("tool", "check_availability"), ("words", "It's free.")]


async def test_a_slow_tool_puts_the_caller_on_hold_in_the_words_of_its_round_and_gets_the_budget():
    brain = ScriptedBrain([[*words("Let me check. "), call("check_availability")], words("It's free.")])
    tools = Tools({"check_availability": FREE}, slow={"check_availability"})
    held: list[Message] = []
    budget = ToolBudget(2.0, 0.5)
    messages, _ = await turn(brain, tools, on_hold=held.append, budget=budget)
    assert held == [messages[0]]
    assert tools.ran == [(messages[0].tool_calls[0], budget)]


async def test_without_an_on_hold_the_tool_is_run_without_one():
    class Strict(Tools):
        async def run(self, call, on_hold=None, budget=None):
            assert on_hold is None
            return await super().run(call, on_hold, budget)

    brain = ScriptedBrain([[call("check_availability")], words("Free.")])
    await turn(brain, Strict({"check_availability": FREE}, slow={"check_availability"}))


async def test_tool_runs_count_as_tool_time():
    brain = ScriptedBrain([[call("check_availability")], []])
    _, timings = await turn(brain, Tools({"check_availability": FREE}))
    assert timings.tool_s > 0


async def test_a_brain_that_keeps_calling_tools_is_stopped_after_max_rounds(caplog):
    brain = ScriptedBrain([[call("check_availability", call_id=f"c{i}")] for i in range(5)])
    with caplog.at_level(logging.WARNING):
        messages, _ = await turn(brain, Tools({"check_availability": FREE}), max_rounds=3)
    assert len(brain.asked) == 3 and len(messages) == 6
    assert "brain kept calling tools on CA123; stopping after 3 rounds" in caplog.text


async def test_what_was_said_and_done_stays_in_messages_when_the_brain_breaks_off():
    brain = ScriptedBrain([[call("end_call")], [TextDelta("Good"), RuntimeError("the stream broke")]])
    messages: list[Message] = []
    with pytest.raises(RuntimeError):
        await run_turn(brain, "", HISTORY, Tools({"end_call": GOODBYE}), messages=messages, timings=TurnLatency(),
                       budget=ToolBudget(), max_rounds=4)
    assert [(m.role, m.content) for m in messages] == [("assistant", ""), ("tool", '{"ok": true}'),
                                                       ("assistant", "Good")]
