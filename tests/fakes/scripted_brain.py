"""A brain that says what the test wrote, round by round: for tests of the engine, not of a receptionist.

Each round is a list of outputs (TextDelta, ToolCall) streamed in order; an exception in the list
is raised at that point, as a brain that breaks off mid-answer. What each round was asked is kept.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.llm.base import BrainOutput, Message, TextDelta, ToolCall, ToolSpec


def words(text: str) -> list[TextDelta]:
    """`text` streamed a word at a time, as a model's tokens arrive."""
    return [TextDelta(word) for word in re.findall(r"\S+\s*", text)]


def call(name: str, call_id: str = "", **arguments: Any) -> ToolCall:
    return ToolCall(call_id or f"call_{name}", name, arguments)


@dataclass(frozen=True, slots=True)
class Asked:
    """One round as the brain received it."""
    instructions: str
    history: list[Message]
    tools: list[str]


@dataclass
class ScriptedBrain:
    rounds: list[Sequence[BrainOutput | Exception]]
    asked: list[Asked] = field(default_factory=list)
    closed: bool = False

    async def respond(self, instructions: str, history: list[Message],
                      tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
        self.asked.append(Asked(instructions, list(history), [t.name for t in tools]))
        for output in self.rounds.pop(0) if self.rounds else []:
            if isinstance(output, Exception):
                raise output
            yield output
            await asyncio.sleep(0)

    async def close(self) -> None:
        self.closed = True
