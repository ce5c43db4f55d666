"""The OpenAI brain: Chat Completions, streamed, with the receptionist's tools.

One `respond()` is one model turn: text deltas as they arrive, then the tool calls assembled
from their deltas. It answers within the first-token and overall timeouts or raises BrainError
(after one quick retry when nothing was said yet and time allows), so the engine can speak a
fallback line instead of leaving the caller in silence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from services.llm.base import BrainError, BrainOutput, Message, TextDelta, ToolCall, ToolSpec
from services.receptionist.profile import BusinessProfile
from services.settings import Settings

log = logging.getLogger("zylin.llm.openai")

PERSONA = """\
You are Zylin, the receptionist who answers the phone for {name}. You are warm, calm and efficient.
Everything you write is spoken aloud to a caller on the phone, so:
- Answer in one or two short, natural spoken sentences. Ask one question at a time.
- Never use lists, bullet points, markdown, emojis, URLs or abbreviations that sound odd aloud.
  Say times and prices the way a person would ("ten thirty in the morning", "a hundred and twenty dollars").
- Confirm names, phone numbers, dates and times back to the caller before acting on them.
- Use the tools for every action (messages, transfers, ending the call). Never say you did
  something a tool has not confirmed, and never invent availability, prices or facts that are not
  written below. If you do not know, say so and offer to take a message or find a person.
- If the caller asks for a person, use transfer_to_human. When the caller is done, say a short
  goodbye and use end_call.
"""


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, AsyncOpenAI]] = \
    weakref.WeakKeyDictionary()


def shared_client(api_key: str, base_url: str, timeout_s: float) -> AsyncOpenAI:
    """One client per event loop and configuration, shared by every call's brain: building one
    costs ~20 ms of CPU, and a shared pool keeps warm connections, so a call's first request
    skips the TCP and TLS set-up."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (api_key, base_url, timeout_s)
    if key not in per_loop:
        per_loop[key] = AsyncOpenAI(api_key=api_key, base_url=base_url or None, max_retries=0,
                                    timeout=timeout_s)
    return per_loop[key]


class _AttemptFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def system_prompt(profile: BusinessProfile) -> str:
    """The profile as the model should know it; the clock goes last so the prefix stays cacheable."""
    lines = [PERSONA.format(name=profile.name), f"About {profile.name}:"]
    if profile.address:
        lines.append(f"Address: {profile.address}.")
    lines.append(f"Opening hours: {profile.hours_sentence()}")
    lines.append("Services:")
    for s in profile.services:
        details = [f"{s.duration_min} minutes"] + ([f"price {s.price}"] if s.price else [])
        lines.append(f"- {s.name} ({', '.join(details)})" + (f": {s.description}" if s.description else ""))
    if profile.faq:
        lines.append("Answers to common questions:")
        lines += [f"- {topic}: {answer}" for topic, answer in profile.faq.items()]
    now = profile.now()
    lines.append(f"Right now it is {now:%A}, {now:%B} {now.day}, {now.year}, "
                 f"{now.hour % 12 or 12}:{now:%M} {'am' if now.hour < 12 else 'pm'} "
                 f"in the business's time zone ({profile.timezone}).")
    return "\n".join(lines)


def chat_messages(system: str, history: list[Message]) -> list[dict[str, Any]]:
    """Our history as Chat Completions messages. Tool calls without an answer (a barge-in can
    leave one) and answers without a call are left out: the API rejects either."""
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    open_ids: set[str] = set()
    for m in history:
        if m.role == "assistant":
            calls = [c for c in m.tool_calls if c.id in answered]
            if not calls and not m.content:
                continue
            message: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if calls:
                message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": json.dumps(c.arguments)}} for c in calls]
                open_ids = {c.id for c in calls}
            out.append(message)
        elif m.role == "tool":
            if m.tool_call_id in open_ids:
                out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
                open_ids.discard(m.tool_call_id)
        else:
            open_ids = set()
            out.append({"role": m.role, "content": m.content})
    return out


def chat_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


class OpenAIBrain:
    """A Brain on OpenAI Chat Completions (or any compatible server via OPENAI_BASE_URL)."""

    def __init__(self, settings: Settings, profile: BusinessProfile, *,
                 retry_pause_s: float = 0.2) -> None:
        self._profile = profile
        self._model = settings.openai_model
        self._effort = settings.openai_reasoning_effort
        self._first_token_s = settings.llm_first_token_timeout_s
        self._total_s = settings.llm_timeout_s
        self._retry_pause_s = retry_pause_s
        self._client_config = (settings.openai_api_key, settings.openai_base_url, settings.llm_timeout_s)

    async def respond(self, history: list[Message], tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_s
        request: dict[str, Any] = {
            "model": self._model, "stream": True,
            "messages": chat_messages(system_prompt(self._profile), history),
        }
        if tools:
            request["tools"] = chat_tools(tools)
        if self._effort:
            request["reasoning_effort"] = self._effort
        for attempt in (1, 2):
            said_something = False
            try:
                async with aclosing(self._attempt(request, deadline)) as outputs:
                    async for output in outputs:
                        said_something = True
                        yield output
                return
            except _AttemptFailed as failure:
                remaining = deadline - loop.time() - self._retry_pause_s
                if said_something:
                    raise BrainError(f"OpenAI stream broke off: {failure.reason}") from failure
                if attempt == 1 and failure.retryable and remaining >= min(self._first_token_s, 1.0):
                    log.warning("OpenAI %s; retrying once", failure.reason)
                    await asyncio.sleep(self._retry_pause_s)
                    continue
                raise BrainError(f"OpenAI {failure.reason}") from failure

    async def _attempt(self, request: dict[str, Any], deadline: float) -> AsyncIterator[BrainOutput]:
        """One streamed request. The timeouts wrap each read, never a yield: a timer left running
        across a yield would fire inside the consumer's code and cancel it."""
        loop = asyncio.get_running_loop()
        first_deadline = min(loop.time() + self._first_token_s, deadline)
        client = shared_client(*self._client_config)
        try:
            async with asyncio.timeout_at(first_deadline):
                stream = await client.chat.completions.create(**request)
        except TimeoutError:
            raise _AttemptFailed(f"gave no first token within {self._first_token_s:g} s", True) from None
        except openai.APIError as exc:
            raise _failure(exc) from exc
        async with stream:
            calls: dict[int, _PartialCall] = {}
            started = False
            while True:
                limit = deadline if started else first_deadline
                try:
                    async with asyncio.timeout_at(limit):
                        chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    what = (f"did not finish within {self._total_s:g} s" if started
                            else f"gave no first token within {self._first_token_s:g} s")
                    raise _AttemptFailed(what, True) from None
                except openai.APIError as exc:
                    raise _failure(exc) from exc
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        started = True
                        yield TextDelta(delta.content)
                    for piece in (delta.tool_calls if delta is not None else None) or ():
                        started = True
                        call = calls.setdefault(piece.index, _PartialCall())
                        call.id = call.id or (piece.id or "")
                        if piece.function is not None:
                            call.name = call.name or (piece.function.name or "")
                            call.arguments.append(piece.function.arguments or "")
                    if choice.finish_reason == "length":
                        log.warning("OpenAI reply was cut off at the token limit")
                    if choice.finish_reason and calls:
                        for output in _finished_calls(calls):
                            yield output
                        calls.clear()
            for output in _finished_calls(calls):  # a compatible server that sends no finish_reason
                yield output

    async def close(self) -> None:
        """Nothing to release: the HTTP client is shared (see shared_client)."""


def _finished_calls(calls: dict[int, _PartialCall]) -> list[ToolCall]:
    out = []
    for index in sorted(calls):
        partial = calls[index]
        if not partial.name:
            log.warning("OpenAI sent a tool call without a name; ignored")
            continue
        raw = "".join(partial.arguments)
        try:
            arguments = json.loads(raw) if raw.strip() else {}
        except ValueError:
            log.warning("OpenAI sent invalid JSON arguments for %s; using none", partial.name)
            arguments = {}
        if not isinstance(arguments, dict):
            log.warning("OpenAI sent non-object arguments for %s; using none", partial.name)
            arguments = {}
        out.append(ToolCall(partial.id or f"call_{uuid.uuid4().hex[:24]}", partial.name, arguments))
    return out


def _failure(exc: openai.APIError) -> _AttemptFailed:
    if isinstance(exc, openai.APITimeoutError):
        return _AttemptFailed("timed out", True)
    if isinstance(exc, openai.APIConnectionError):
        return _AttemptFailed("could not be reached", True)
    if isinstance(exc, openai.RateLimitError):
        return _AttemptFailed("rate limited (429)", True)
    if isinstance(exc, openai.APIStatusError):
        return _AttemptFailed(f"answered HTTP {exc.status_code}", exc.status_code >= 500)
    return _AttemptFailed(f"stream error: {exc.message}", True)
