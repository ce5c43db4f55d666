"""The brain contract: instructions, history and tools in, a stream of text deltas and tool calls out.

The instructions are a plain value the receptionist writes (services/receptionist/persona.py): a
brain knows how to talk to its model, not who it is or which business it answers for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    name: str = ""  # tool name, for role="tool"


BrainOutput = TextDelta | ToolCall


class BrainError(RuntimeError):
    """The brain could not answer (timeout, rate limit, server error) after its retries."""


class Brain(Protocol):
    def respond(self, instructions: str, history: list[Message],
                tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
        """One model turn; the caller runs the tool calls and asks again with their results."""
        ...

    async def close(self) -> None: ...
