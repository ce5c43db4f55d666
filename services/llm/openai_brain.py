"""The OpenAI brain: the Responses API (or Chat Completions), streamed, with the receptionist's tools.

One `respond()` is one model turn: text deltas as they arrive, then each tool call once its
arguments are complete. It answers within the first-token and overall timeouts or raises
BrainError (after one quick retry when nothing was said yet and time allows), so the engine can
speak a fallback line instead of leaving the caller in silence.

The Responses API is the default (`OPENAI_API=responses`): it is the interface on which GPT-5.x
models take function tools together with a reasoning effort. `OPENAI_API=chat` keeps Chat
Completions for compatible servers that only speak it; tools then go to GPT-5.x models with
`reasoning_effort="none"`, the only effort OpenAI accepts with tools there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from services.llm.base import BrainError, BrainOutput, Message, TextDelta, ToolCall, ToolSpec

log = logging.getLogger("zylin.llm.openai")

RETRYABLE_STREAM_CODES = {None, "server_error", "rate_limit_exceeded"}


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, AsyncOpenAI]] = \
    weakref.WeakKeyDictionary()
_told_effort_none: set[str] = set()     # models already logged as getting effort "none" on chat


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
    def __init__(self, reason: str, retryable: bool, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.wait_s = wait_s            # how long the server asked us to wait (retry-after)


# --- what the model is sent ---------------------------------------------------------------------------------
def paired_history(history: list[Message]) -> list[Message]:
    """The history both APIs accept: each tool call kept only with its answer right after it, and
    each answer only after its call. A barge-in can leave a call unanswered, and either kind of
    orphan is refused with a 400."""
    out: list[Message] = []
    i = 0
    while i < len(history):
        message = history[i]
        i += 1
        if message.role == "tool":
            continue                               # answers no call just before it
        if message.role != "assistant":
            out.append(message)
            continue
        answers: dict[str, Message] = {}
        while i < len(history) and history[i].role == "tool":
            answers.setdefault(history[i].tool_call_id, history[i])
            i += 1
        calls = [c for c in message.tool_calls if c.id in answers]
        if calls or message.content:
            out.append(Message("assistant", message.content, tool_calls=calls))
            out += [answers[c.id] for c in calls]
    return out


def chat_messages(system: str, history: list[Message]) -> list[dict[str, Any]]:
    """Our history as Chat Completions messages."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in paired_history(history):
        if m.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": json.dumps(c.arguments)}} for c in m.tool_calls]
            out.append(message)
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def responses_input(history: list[Message]) -> list[dict[str, Any]]:
    """Our history as Responses input items. No item ids: with store=false OpenAI keeps nothing
    they could refer to, and refuses them."""
    items: list[dict[str, Any]] = []
    for m in paired_history(history):
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.content})
            continue
        if m.content:
            items.append({"role": m.role, "content": m.content})
        items += [{"type": "function_call", "call_id": c.id, "name": c.name,
                   "arguments": json.dumps(c.arguments)} for c in m.tool_calls]
    return items


def chat_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def responses_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """Not strict: strict schemas need every property required, and ours have optional ones."""
    return [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
             "strict": False} for t in tools]


def chat_reasoning_effort(model: str, effort: str, has_tools: bool) -> str | None:
    """The reasoning_effort for Chat Completions. There GPT-5.x models take function tools only
    with "none" (gpt-5.6 refuses even an omitted effort), so tools get "none"; the original gpt-5
    models (gpt-5, gpt-5-mini) take tools with any effort but not "none"."""
    if has_tools and model.rsplit("/", 1)[-1].startswith("gpt-5."):
        if model not in _told_effort_none:
            _told_effort_none.add(model)
            log.info("Chat Completions takes function tools for %s only without reasoning: sending "
                     "reasoning_effort 'none' (OPENAI_API=responses keeps OPENAI_REASONING_EFFORT)", model)
        return "none"
    return effort or None


# --- the brain ----------------------------------------------------------------------------------------------
class OpenAIBrain:
    """A Brain on the OpenAI Responses API, or Chat Completions for any compatible server."""

    def __init__(self, *, api_key: str, base_url: str, model: str, api: str, effort: str,
                 first_token_timeout_s: float, timeout_s: float, retry_pause_s: float = 0.2) -> None:
        """`api` is "responses" or "chat"; an empty `effort` sends none; an empty `base_url` is OpenAI's."""
        self._api = api
        self._model = model
        self._effort = effort
        self._first_token_s = first_token_timeout_s
        self._total_s = timeout_s
        self._retry_pause_s = retry_pause_s
        self._client_config = (api_key, base_url, timeout_s)

    async def respond(self, instructions: str, history: list[Message],
                      tools: list[ToolSpec]) -> AsyncIterator[BrainOutput]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_s
        if self._api == "chat":
            request, attempt_once = self._chat_request(instructions, history, tools), self._chat_attempt
        else:
            request, attempt_once = self._responses_request(instructions, history, tools), self._responses_attempt
        for attempt in (1, 2):
            said_something = False
            try:
                async with aclosing(attempt_once(request, deadline)) as outputs:
                    async for output in outputs:
                        said_something = True
                        yield output
                return
            except _AttemptFailed as failure:
                if said_something:
                    raise _give_up(f"stream broke off: {failure.reason}") from failure
                pause = max(self._retry_pause_s, failure.wait_s or 0.0)
                fits = deadline - loop.time() - pause >= min(self._first_token_s, 1.0)
                if attempt == 1 and failure.retryable and fits:
                    log.warning("OpenAI %s; retrying in %.2g s", failure.reason, pause)
                    await asyncio.sleep(pause)
                    continue
                reason = failure.reason
                if attempt == 1 and failure.retryable and failure.wait_s and not fits:
                    reason += f"; it asked to wait {failure.wait_s:g} s, longer than the time left"
                raise _give_up(reason) from failure

    def _responses_request(self, system: str, history: list[Message], tools: list[ToolSpec]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self._model, "stream": True, "instructions": system,
                                   "input": responses_input(history), "store": False}
        if tools:
            request["tools"] = responses_tools(tools)
        if self._effort:
            request["reasoning"] = {"effort": self._effort}
        return request

    def _chat_request(self, system: str, history: list[Message], tools: list[ToolSpec]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self._model, "stream": True,
                                   "messages": chat_messages(system, history)}
        if tools:
            request["tools"] = chat_tools(tools)
        if effort := chat_reasoning_effort(self._model, self._effort, bool(tools)):
            request["reasoning_effort"] = effort
        return request

    # --- one attempt: the timeouts wrap each read, never a yield ---------------------------------------
    # A timer left running across a yield would fire inside the consumer's code and cancel it.
    async def _open(self, create: Callable[..., Awaitable[Any]], request: dict[str, Any],
                    first_deadline: float) -> Any:
        try:
            async with asyncio.timeout_at(first_deadline):
                return await create(**request)
        except TimeoutError:
            raise self._timed_out(started=False) from None
        except openai.APIError as exc:
            raise _failure(exc) from exc

    async def _read(self, stream: Any, limit: float, started: bool) -> Any | None:
        """The stream's next event, or None at its end."""
        try:
            async with asyncio.timeout_at(limit):
                return await stream.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise self._timed_out(started) from None
        except openai.APIError as exc:
            raise _failure(exc) from exc

    def _timed_out(self, started: bool) -> _AttemptFailed:
        what = (f"did not finish within {self._total_s:g} s" if started
                else f"gave no first token within {self._first_token_s:g} s")
        return _AttemptFailed(what, True)

    def _first_deadline(self, deadline: float) -> float:
        return min(asyncio.get_running_loop().time() + self._first_token_s, deadline)

    async def _responses_attempt(self, request: dict[str, Any],
                                 deadline: float) -> AsyncGenerator[BrainOutput, None]:
        """One streamed response. Only text and function calls count as the first token: the
        response.created and reasoning events come before the model has said anything."""
        first_deadline = self._first_deadline(deadline)
        client = shared_client(*self._client_config)
        stream = await self._open(client.responses.create, request, first_deadline)
        async with stream:
            calls: dict[int, _PartialCall] = {}
            started = False
            while (event := await self._read(stream, deadline if started else first_deadline, started)) is not None:
                kind = getattr(event, "type", None)
                if kind == "response.output_text.delta" and event.delta:
                    started = True
                    yield TextDelta(event.delta)
                elif kind == "response.output_item.added" and event.item.type == "function_call":
                    started = True
                    calls[event.output_index] = _PartialCall(event.item.call_id, event.item.name)
                elif kind == "response.function_call_arguments.delta":
                    started = True
                    calls.setdefault(event.output_index, _PartialCall()).arguments.append(event.delta)
                elif kind == "response.output_item.done" and event.item.type == "function_call":
                    partial = calls.pop(event.output_index, _PartialCall())
                    item = event.item
                    done = _PartialCall(item.call_id or partial.id, item.name or partial.name,
                                        [item.arguments] if item.arguments is not None else partial.arguments)
                    for output in _finished_calls({0: done}):
                        yield output
                elif kind == "response.completed":
                    return
                elif kind == "response.incomplete":
                    details = event.response.incomplete_details
                    log.warning("OpenAI reply was cut off (%s)%s", getattr(details, "reason", None) or "incomplete",
                                f"; {len(calls)} unfinished tool call(s) dropped" if calls else "")
                    return
                elif kind == "response.failed":
                    error = event.response.error
                    code = getattr(error, "code", None)
                    raise _AttemptFailed(f"response failed: {_redacted(getattr(error, 'message', '') or '')}"
                                         f"{_details(code=code)}", code in RETRYABLE_STREAM_CODES)
                elif kind == "error":
                    raise _AttemptFailed(f"stream error: {_redacted(event.message or '')}"
                                         f"{_details(param=event.param, code=event.code)}",
                                         event.code in RETRYABLE_STREAM_CODES)
            log.warning("OpenAI stream ended without response.completed")   # a lax compatible server
            for output in _finished_calls(calls):
                yield output

    async def _chat_attempt(self, request: dict[str, Any], deadline: float) -> AsyncGenerator[BrainOutput, None]:
        """One streamed chat completion: tool calls are assembled from deltas keyed by index."""
        first_deadline = self._first_deadline(deadline)
        client = shared_client(*self._client_config)
        stream = await self._open(client.chat.completions.create, request, first_deadline)
        async with stream:
            calls: dict[int, _PartialCall] = {}
            started = False
            while (chunk := await self._read(stream, deadline if started else first_deadline, started)) is not None:
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


# --- failures: what OpenAI said, never the key ---------------------------------------------------------------
def _give_up(reason: str) -> BrainError:
    log.warning("OpenAI %s", reason)
    return BrainError(f"OpenAI {reason}")


def _failure(exc: openai.APIError) -> _AttemptFailed:
    if isinstance(exc, openai.APITimeoutError):
        return _AttemptFailed("timed out", True)
    if isinstance(exc, openai.APIConnectionError):
        return _AttemptFailed("could not be reached", True)
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        said = body.get("message")
        message = said if isinstance(said, str) else exc.message
        reason = (f"answered HTTP {exc.status_code}: {_redacted(message)}"
                  f"{_details(param=body.get('param'), code=body.get('code'), request=exc.request_id)}")
        if exc.status_code == 429:     # a rate limit passes; an exhausted quota does not
            return _AttemptFailed(reason, body.get("code") != "insufficient_quota",
                                  _retry_after(exc.response.headers))
        return _AttemptFailed(reason, exc.status_code >= 500 or exc.status_code in (408, 409))
    return _AttemptFailed(f"stream error: {_redacted(exc.message)}"
                          f"{_details(param=exc.param, code=exc.code)}", True)


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` (OpenAI's, precise), else
    `retry-after` in seconds. A date form is ignored: no caller waits that long."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name))
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value * scale
    return None


def _details(**fields: Any) -> str:
    shown = [f"{name} {value}" for name, value in fields.items() if value]
    return f" ({', '.join(shown)})" if shown else ""


_KEYS = (re.compile(r"(?<=API key provided: )\S+?(?=\.(?:\s|$))"), re.compile(r"\bsk-[\w*-]{4,}"))


def _redacted(message: str, limit: int = 500) -> str:
    """OpenAI's own words, minus any key: its 401 message quotes part of the key it was sent."""
    for pattern in _KEYS:
        message = pattern.sub("[redacted]", message)
    return message if len(message) <= limit else message[:limit] + "…"
