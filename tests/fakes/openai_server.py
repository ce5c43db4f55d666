"""A local OpenAI API: the Responses API and Chat Completions, both streamed (SSE), and the Speech
API (raw pcm).

Model requests: each POST /v1/responses or /v1/chat/completions takes the next scripted
`ModelReply` (or asks `model_handler`) and streams it the way that interface does. Responses:
`event:`/`data:` pairs numbered by `sequence_number` (response.created, output items added and done,
text and function-call argument deltas, then response.completed, .incomplete or .failed).
Chat Completions: a role chunk, content deltas, tool-call deltas split across chunks by `index` (id
and name on the first delta only, arguments in pieces), a finish chunk, then `data: [DONE]`.
A reply can be an HTTP error with OpenAI's error body and headers, a stream that fails midway, or a
stall (before the headers, or after some deltas) that lasts until `release` is set or the client
leaves.

Before any reply, the fake refuses what the real API refuses, with the real status and error body
({"error": {"message", "type", "param", "code"}}): unknown models, reasoning efforts a model does
not take, function tools with reasoning on Chat Completions for the GPT-5.x models that refuse them
(`MODELS` holds the rule per model), tool results that answer no call and calls left unanswered,
and item ids a `store=false` request cannot refer to. docs/providers.md lists each refusal with the
public report it comes from.

Handlers and tests see every model request as a `ModelRequest`: the conversation as chat-style
messages whichever interface carried it, with the body as sent beside it, so one scripted model
serves both interfaces.

Speech: POST /v1/audio/speech with response_format "pcm" streams 24 kHz 16-bit mono with no
header, in odd-sized chunks, optionally paced or held mid-stream; it notes when the client leaves.

Realtime: GET /v1/realtime is the Realtime API's WebSocket, in tests/fakes/openai_realtime.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from tests.fakes.deepgram_server import tone
from tests.fakes.openai_realtime import FakeRealtime
from tests.fakes.server import FakeServer, Handler, RecordedRequest, StreamRecord, json_response, stream_chunks

PCM_RATE = 24000
RECORDED = web.RequestKey("recorded", RecordedRequest)   # what the middleware recorded, for the route
Api = Literal["responses", "chat"]


# --- what each model accepts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRule:
    """What one model accepts. `chat_tools` is its rule for function tools on Chat Completions:
    "any" effort, "no_effort" (the effort omitted or "none"), or "effort_none" (only an explicit
    "none": its default effort is not none)."""
    efforts: tuple[str, ...] = ()        # reasoning efforts it takes; empty: not a reasoning model
    chat_tools: Literal["any", "no_effort", "effort_none"] = "any"


GPT_5X_EFFORTS = ("none", "low", "medium", "high", "xhigh")   # gpt-5.1 and later
GPT_5_EFFORTS = ("minimal", "low", "medium", "high")          # gpt-5, gpt-5-mini: no "none"

MODELS: dict[str, ModelRule] = {
    "gpt-5.4-mini": ModelRule(GPT_5X_EFFORTS, "no_effort"),
    "gpt-5.4": ModelRule(GPT_5X_EFFORTS, "no_effort"),
    "gpt-5.6": ModelRule(GPT_5X_EFFORTS, "effort_none"),
    "gpt-5-mini": ModelRule(GPT_5_EFFORTS),
    "gpt-4.1-mini": ModelRule(),
    "gpt-4o-mini-tts": ModelRule(),
    "tts-1": ModelRule(),
    "gpt-transcribe": ModelRule(),
}


@dataclass(frozen=True)
class Refusal:
    """An error the API answers instead of a reply."""
    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def tools_refused_message(model: str) -> str:
    return (f"Function tools with reasoning_effort are not supported for {model} in /v1/chat/completions. "
            "To use function tools, use /v1/responses or set reasoning_effort to 'none'.")


def model_not_found(model: str) -> Refusal:
    return Refusal(404, f"The model `{model}` does not exist or you do not have access to it.",
                   code="model_not_found")


# --- the conversation, whichever interface carried it -----------------------------------------------------
@dataclass(eq=False)
class ModelRequest(Mapping[str, Any]):
    """One model request as the model sees it: chat-style `messages` (system, user, assistant with
    `tool_calls`, tool) and chat-style `tools`, whichever interface carried it; `body` is what was
    sent. Reads like a dict (`request["messages"]`), so handlers written for chat bodies keep working."""
    api: Api
    body: dict
    messages: list[dict]
    tools: list[dict]
    received_at: float                   # time.monotonic() when the request arrived
    KEYS: ClassVar[tuple[str, ...]] = ("api", "model", "messages", "tools")

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def __getitem__(self, key: str) -> Any:
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    @classmethod
    def of(cls, api: Api, body: Any) -> ModelRequest:
        body = body if isinstance(body, dict) else {}
        try:
            if api == "chat":
                messages, tools = list(body.get("messages") or []), list(body.get("tools") or [])
            else:
                messages, tools = responses_conversation(body), responses_tools_as_chat(body)
        except (AttributeError, TypeError):      # a malformed body: the checks refuse it
            messages, tools = [], []
        return cls(api, body, messages, tools, time.monotonic())


def responses_conversation(body: dict) -> list[dict]:
    """A Responses request as chat-style messages: the instructions first, each function call folded
    into the assistant message just before it, each output a tool message."""
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or []:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text_of(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": _text_of(item.get("output"))})
    return messages


def responses_tools_as_chat(body: dict) -> list[dict]:
    return [{"type": "function", "function": {k: t.get(k) for k in ("name", "description", "parameters")}}
            for t in body.get("tools") or [] if t.get("type") == "function"]


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


# --- scripted replies -------------------------------------------------------------------------------------
@dataclass
class ScriptedCall:
    id: str
    name: str
    pieces: list[str]                    # the arguments, as they arrive

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


@dataclass
class ModelReply:
    """What the fake answers to one model request, rendered for whichever interface asked."""
    text_pieces: list[str] = field(default_factory=list)    # text deltas, in order
    calls: list[ScriptedCall] = field(default_factory=list)  # after the text
    interleave: bool = True               # Chat Completions: call deltas interleaved by index
    finish: Literal["stop", "tool_calls", "length"] = "stop"
    status: int = 200
    error: dict | None = None             # OpenAI error object for a non-200 status
    headers: dict[str, str] = field(default_factory=dict)   # extra response headers
    stream_error: dict | None = None      # after the deltas the stream fails with this error object
    stream_error_event: Literal["response.failed", "error"] = "response.failed"
    stall_before_headers: bool = False    # accept the request, then say nothing
    stall_after: int | None = None        # send this many deltas (text pieces, call pieces), then stall

    @classmethod
    def text(cls, *pieces: str) -> ModelReply:
        return cls(list(pieces))

    @classmethod
    def tool_calls(cls, *calls: tuple[str, dict | str], text: Sequence[str] = (), pieces: int = 3,
                   interleave: bool = True) -> ModelReply:
        """Tool calls (name, arguments: a dict, or a raw string sent as is), optionally after
        some text; each call's arguments arrive in `pieces` deltas."""
        scripted = []
        for name, args in calls:
            raw = args if isinstance(args, str) else json.dumps(args)
            size = max(1, -(-len(raw) // pieces))
            parts = [raw[i:i + size] for i in range(0, len(raw), size)] or [""]
            scripted.append(ScriptedCall(f"call_{uuid.uuid4().hex[:24]}", name, parts))
        return cls(list(text), scripted, interleave, "tool_calls")

    @classmethod
    def failure(cls, status: int, message: str = "", code: str | None = None, *,
                retry_after_s: float | None = None, retry_after_ms: float | None = None,
                param: str | None = None) -> ModelReply:
        """An HTTP error as OpenAI sends it. A 429 carries the x-ratelimit headers, and
        `retry-after` / `retry-after-ms` when asked for."""
        kinds = {429: ("requests", "rate_limit_exceeded",
                       "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1."),
                 500: ("server_error", None, "The server had an error while processing your request."),
                 503: ("server_error", None, "The engine is currently overloaded, please try again later.")}
        kind, default_code, default_message = kinds.get(status, ("invalid_request_error", None, "Bad request"))
        if code == "insufficient_quota":
            kind, default_message = "insufficient_quota", (
                "You exceeded your current quota, please check your plan and billing details.")
        headers: dict[str, str] = {}
        if status == 429:
            headers |= {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
                        "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
                        "x-ratelimit-remaining-tokens": "199000", "x-ratelimit-reset-tokens": "300ms"}
        if retry_after_s is not None:
            headers["retry-after"] = str(math.ceil(retry_after_s))
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(round(retry_after_ms))
        error = {"message": message or default_message, "type": kind, "param": param,
                 "code": code or default_code}
        return cls(status=status, error=error, headers=headers)

    @classmethod
    def broken(cls, *pieces: str, code: str = "server_error",
               message: str = "An error occurred while processing your request.",
               event: Literal["response.failed", "error"] = "response.failed") -> ModelReply:
        """Some text, then the stream fails: `response.failed` or an `error` event (Responses),
        an error chunk (Chat Completions)."""
        return cls(list(pieces), stream_error={"code": code, "message": message}, stream_error_event=event)

    @classmethod
    def stall(cls, after: int = 0, before_headers: bool = False) -> ModelReply:
        reply = cls.text("This", " never", " arrives.")
        reply.stall_after = None if before_headers else after
        reply.stall_before_headers = before_headers
        return reply

    # --- Chat Completions -------------------------------------------------------------------------------
    def chat_frames(self, request: ModelRequest) -> Iterator[tuple[bytes, bool]]:
        """The SSE frames of a chat completion stream, each with whether it carries a model delta."""
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:29]}", int(time.time())
        n = 0

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            nonlocal n
            event = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": request.model, "service_tier": "default", "system_fingerprint": "fp_fake",
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                     "obfuscation": "x" * (n % 7)}
            n += 1
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": "" if self.text_pieces or not self.calls else None,
                     "refusal": None}), False
        for piece in self.text_pieces:
            yield chunk({"content": piece}), True
        streams = [[{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}]
                   + [{"index": i, "function": {"arguments": p}} for p in c.pieces]
                   for i, c in enumerate(self.calls)]
        if self.interleave:
            order = [s[i] for i in range(max(map(len, streams), default=0)) for s in streams if i < len(s)]
        else:
            order = [d for s in streams for d in s]
        for delta in order:
            yield chunk({"tool_calls": [delta]}), True
        if self.stream_error is not None:
            error = {"message": self.stream_error["message"], "type": "server_error", "param": None,
                     "code": self.stream_error["code"]}
            yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n", False
            return
        yield chunk({}, self.finish), False
        yield b"data: [DONE]\n\n", False

    # --- Responses --------------------------------------------------------------------------------------
    def responses_frames(self, request: ModelRequest) -> Iterator[tuple[bytes, bool]]:
        """The SSE events of a streamed response, each with whether it carries a model delta."""
        body, seq = request.body, 0
        rid, created = f"resp_{uuid.uuid4().hex}", int(time.time())
        output: list[dict] = []

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal seq
            data = {"type": kind, "sequence_number": seq, **fields}
            seq += 1
            return f"event: {kind}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n"

        def response(status: str, **extra: Any) -> dict:
            return _response_object(rid, created, body, status, list(output), **extra)

        yield event("response.created", response=response("in_progress")), False
        yield event("response.in_progress", response=response("in_progress")), False
        effort = (body.get("reasoning") or {}).get("effort")
        if effort and effort != "none":
            item = {"id": f"rs_{uuid.uuid4().hex}", "type": "reasoning", "summary": []}
            yield event("response.output_item.added", output_index=len(output), item=item), False
            yield event("response.output_item.done", output_index=len(output), item=item), False
            output.append(item)
        if self.text_pieces:
            yield from self._message_events(event, output)
        for call in self.calls:
            yield from self._call_events(event, output, call)
        if self.stream_error is not None:
            if self.stream_error_event == "error":
                yield event("error", code=self.stream_error["code"], message=self.stream_error["message"],
                            param=None), False
            else:
                yield event("response.failed", response=response("failed", error=self.stream_error)), False
            return
        if self.finish == "length":
            yield event("response.incomplete", response=response(
                "incomplete", incomplete_details={"reason": "max_output_tokens"})), False
            return
        yield event("response.completed", response=response("completed", usage=_usage(body, output))), False

    def _message_events(self, event: Callable[..., bytes], output: list[dict]) -> Iterator[tuple[bytes, bool]]:
        index, mid, full = len(output), f"msg_{uuid.uuid4().hex}", "".join(self.text_pieces)
        item = {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        yield event("response.output_item.added", output_index=index, item=item), False
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        yield event("response.content_part.added", item_id=mid, output_index=index, content_index=0,
                    part=part), False
        for piece in self.text_pieces:
            yield event("response.output_text.delta", item_id=mid, output_index=index, content_index=0,
                        delta=piece, logprobs=[], obfuscation="x" * (len(piece) % 5)), True
        yield event("response.output_text.done", item_id=mid, output_index=index, content_index=0,
                    text=full, logprobs=[]), False
        part = dict(part, text=full)
        yield event("response.content_part.done", item_id=mid, output_index=index, content_index=0,
                    part=part), False
        done = dict(item, status="completed", content=[part])
        yield event("response.output_item.done", output_index=index, item=done), False
        output.append(done)

    @staticmethod
    def _call_events(event: Callable[..., bytes], output: list[dict],
                     call: ScriptedCall) -> Iterator[tuple[bytes, bool]]:
        index, fid = len(output), f"fc_{uuid.uuid4().hex}"
        item = {"id": fid, "type": "function_call", "status": "in_progress", "arguments": "",
                "call_id": call.id, "name": call.name}
        yield event("response.output_item.added", output_index=index, item=item), True
        for piece in call.pieces:
            yield event("response.function_call_arguments.delta", item_id=fid, output_index=index,
                        delta=piece, obfuscation="x" * (len(piece) % 5)), True
        yield event("response.function_call_arguments.done", item_id=fid, output_index=index,
                    arguments=call.arguments), False
        done = dict(item, status="completed", arguments=call.arguments)
        yield event("response.output_item.done", output_index=index, item=done), False
        output.append(done)


ChatReply = ModelReply        # the name the tests were written with


def _response_object(rid: str, created: int, body: dict, status: str, output: list[dict], *,
                     error: dict | None = None, incomplete_details: dict | None = None,
                     usage: dict | None = None) -> dict:
    tools = [dict({"strict": True, "description": None}, **t) for t in body.get("tools") or []]
    return {"id": rid, "object": "response", "created_at": created, "status": status, "background": False,
            "error": error, "incomplete_details": incomplete_details, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "model": body.get("model"), "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "service_tier": "default", "store": body.get("store", True), "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_p": 1.0,
            "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


def _usage(body: dict, output: list[dict]) -> dict:
    words_in = len(json.dumps(body.get("input"))) // 4 + len(body.get("instructions") or "") // 4
    words_out = len(json.dumps(output)) // 8
    return {"input_tokens": words_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": words_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": words_in + words_out}


# --- the server -------------------------------------------------------------------------------------------
class FakeOpenAI(FakeServer):
    """The fake OpenAI server; point OPENAI_BASE_URL at `base_url`."""

    def __init__(self, *, api_key: str | None = None, models: Mapping[str, ModelRule] | None = None) -> None:
        super().__init__()
        self.api_key = api_key                       # when set, other keys get 401
        self.models: dict[str, ModelRule] = dict(MODELS if models is None else models)
        self.model_replies: deque[ModelReply] = deque()
        self.model_handler: Callable[[ModelRequest], ModelReply] | None = None  # when no reply is queued
        self.requests: list[RecordedRequest] = []
        self.model_requests: list[ModelRequest] = []
        self.model_streams: list[StreamRecord] = []
        self.speech_requests: list[dict] = []
        self.speech_streams: list[StreamRecord] = []
        self.speech_chunk_sizes: Sequence[int] = (4801, 1, 2399, 7, 9601)
        self.speech_seconds_per_char = 0.06
        self.speech_bytes_per_s: float | None = None   # pace the audio (None: as fast as possible)
        self.speech_hold_after: int | None = None      # stall after this many chunks until release
        self.speech_errors: deque[tuple[int, str]] = deque()
        self.release = asyncio.Event()                 # ends every stall
        self._changed = asyncio.Condition()
        self.realtime = FakeRealtime(self.release, self._notify)   # GET /v1/realtime (openai_realtime.py)

    # The names the tests were written with, when chat was the only interface.
    @property
    def chat_requests(self) -> list[ModelRequest]:
        return self.model_requests

    @property
    def chat_streams(self) -> list[StreamRecord]:
        return self.model_streams

    @property
    def chat_replies(self) -> deque[ModelReply]:
        return self.model_replies

    @property
    def chat_handler(self) -> Callable[[ModelRequest], ModelReply] | None:
        return self.model_handler

    @chat_handler.setter
    def chat_handler(self, handler: Callable[[ModelRequest], ModelReply] | None) -> None:
        self.model_handler = handler

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def reply(self, *replies: ModelReply) -> None:
        self.model_replies.extend(replies)

    async def wait_model_requests(self, count: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: len(self.model_requests) >= count, timeout)

    wait_chat_requests = wait_model_requests

    async def wait_speech_streams(self, count: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: len(self.speech_streams) >= count, timeout)

    async def _wait(self, predicate, timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def speech_audio(text: str, seconds_per_char: float = 0.06) -> bytes:
        """The pcm the fake returns for `text`: a tone as long as the text would take to say."""
        return tone(max(int(len(text) * seconds_per_char * PCM_RATE), PCM_RATE // 10), PCM_RATE)

    # --- routing ------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/responses", self._responses), web.post("/v1/chat/completions", self._chat),
                web.post("/v1/audio/speech", self._speech), web.get("/v1/realtime", self._realtime),
                web.route("*", "/{tail:.*}", self._unknown)]

    def middlewares(self) -> list[Middleware]:
        return [self._record_and_authorize]

    @web.middleware
    async def _record_and_authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request is recorded, and with `api_key` set checked, before any route sees it."""
        recorded = await RecordedRequest.of(request)
        request[RECORDED] = recorded
        self.requests.append(recorded)
        try:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if self.api_key is not None and given != self.api_key:
                return json_response(401, Refusal(401, f"Incorrect API key provided: {_masked(given)}. You can "
                                                  "find your API key at https://platform.openai.com/account/api-keys.",
                                                  code="invalid_api_key").body())
            return await handler(request)
        finally:
            await self._notify()

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        return await self.realtime.handle(request, request[RECORDED])

    async def _unknown(self, request: web.Request) -> web.Response:
        return json_response(404, _error(f"Invalid URL ({request.method} {request.path})", "invalid_request_error"))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._model(request, "responses")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._model(request, "chat")

    # --- model requests, both interfaces -----------------------------------------------------------
    async def _model(self, request: web.Request, api: Api) -> web.StreamResponse:
        recorded = request[RECORDED]
        body = recorded.json()
        seen = ModelRequest.of(api, body)
        self.model_requests.append(seen)
        await self._notify()
        check = check_chat_request if api == "chat" else check_responses_request
        refusal = check(body, self.models)
        if refusal is not None:
            return json_response(refusal.status, refusal.body(), {"x-request-id": _request_id()})
        if self.model_replies:
            reply = self.model_replies.popleft()
        elif self.model_handler is not None:
            reply = self.model_handler(seen)
        else:
            return json_response(500, _error("fake OpenAI: no reply scripted for this request", "server_error"))
        record = StreamRecord(recorded)
        self.model_streams.append(record)
        await self._notify()
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                               "x-request-id": _request_id(), "openai-processing-ms": "42",
                                               **reply.headers})
        with self.streaming(record):
            if reply.stall_before_headers:
                await self.release.wait()
            if reply.status != 200:
                record.finished.set()
                return json_response(reply.status, {"error": reply.error},
                                     {"x-request-id": _request_id(), **reply.headers})
            await response.prepare(request)
            frames = reply.chat_frames(seen) if api == "chat" else reply.responses_frames(seen)
            deltas = 0
            for data, is_delta in frames:
                if is_delta and reply.stall_after is not None and deltas == reply.stall_after:
                    await self.release.wait()
                deltas += is_delta
                await response.write(data)
                record.chunks.append(data)
            await response.write_eof()
            record.finished.set()
        return response

    # --- speech ----------------------------------------------------------------------------
    async def _speech(self, request: web.Request) -> web.StreamResponse:
        recorded = request[RECORDED]
        body = recorded.json()
        self.speech_requests.append(body)
        await self._notify()
        missing = [k for k in ("model", "input", "voice") if not body.get(k)]
        if missing:
            return json_response(400, _error(f"Missing required parameter: '{missing[0]}'.", "invalid_request_error"))
        if body["model"] not in self.models:
            refusal = model_not_found(body["model"])
            return json_response(refusal.status, refusal.body())
        if body.get("response_format") != "pcm":
            return json_response(400, _error("the fake only makes response_format 'pcm'", "invalid_request_error"))
        if self.speech_errors:
            status, message = self.speech_errors.popleft()
            return json_response(status, _error(message, "server_error"))
        record = StreamRecord(recorded)
        self.speech_streams.append(record)
        await self._notify()
        audio = self.speech_audio(body["input"], self.speech_seconds_per_char)
        response = web.StreamResponse(headers={"content-type": "application/octet-stream",
                                               "x-request-id": _request_id()})
        try:
            with self.streaming(record):
                await response.prepare(request)
                await stream_chunks(response, record, audio, self.speech_chunk_sizes, self.speech_bytes_per_s,
                                    self.speech_hold_after, self.release)
        finally:
            await self._notify()
        return response


# --- what the API refuses -------------------------------------------------------------------------------------
def check_chat_request(body: Any, models: Mapping[str, ModelRule] = MODELS) -> Refusal | None:
    """What the API would refuse in a chat completion request; None when it is fine."""
    if not isinstance(body, dict) or not body.get("model"):
        return Refusal(400, "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Refusal(400, "Invalid 'messages': empty array.", "messages")
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            return Refusal(400, "Invalid 'tools': each tool needs type 'function' and a function name.", "tools")
    if body["model"] not in models:
        return model_not_found(body["model"])
    rule, effort = models[body["model"]], body.get("reasoning_effort")
    if (refused := _effort_refusal(rule, effort, "reasoning_effort")) is not None:
        return refused
    if body.get("tools") and rule.chat_tools != "any":
        allowed = (None, "none") if rule.chat_tools == "no_effort" else ("none",)
        if effort not in allowed:
            return Refusal(400, tools_refused_message(body["model"]), "reasoning_effort")
    return _chat_history_refusal(messages)


def _chat_history_refusal(messages: list) -> Refusal | None:
    """Every tool message answers a call of the assistant message before it; every call is answered."""
    unanswered = ("An assistant message with 'tool_calls' must be followed by tool messages "
                  "responding to each 'tool_call_id'.")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return Refusal(400, f"Invalid value for 'messages[{i}].role': {role!r}.", f"messages[{i}].role")
        if open_calls and role != "tool":
            return Refusal(400, unanswered, "messages")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if not calls and not message.get("content"):
                return Refusal(400, f"Invalid 'messages[{i}]': an assistant message needs content or tool_calls.")
            for call in calls:
                fn = call.get("function") or {}
                if call.get("type") != "function" or not call.get("id") or not fn.get("name") \
                        or not isinstance(fn.get("arguments"), str):
                    return Refusal(400, f"Invalid 'messages[{i}].tool_calls': malformed tool call.")
                open_calls.add(call["id"])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return Refusal(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                    "preceeding message with 'tool_calls'.", f"messages.[{i}].role")
            open_calls.discard(call_id)
            if not isinstance(message.get("content"), str):
                return Refusal(400, f"Invalid 'messages[{i}].content': expected a string.")
    return Refusal(400, unanswered, "messages") if open_calls else None


def check_responses_request(body: Any, models: Mapping[str, ModelRule] = MODELS) -> Refusal | None:
    """What the API would refuse in a Responses request; None when it is fine."""
    if not isinstance(body, dict) or not body.get("model"):
        return Refusal(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if "reasoning_effort" in body:
        return Refusal(400, "Unsupported parameter: 'reasoning_effort'. In the Responses API, this parameter "
                            "has moved to 'reasoning.effort'. Try again with the new parameter.",
                       code="unsupported_parameter")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
            return Refusal(400, f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name",
                           "missing_required_parameter")
    if body["model"] not in models:
        return model_not_found(body["model"])
    effort = (body.get("reasoning") or {}).get("effort")
    if (refused := _effort_refusal(models[body["model"]], effort, "reasoning.effort")) is not None:
        return refused
    items = body.get("input")
    return None if isinstance(items, str) else _responses_items_refusal(items or [], body.get("store", True))


def _responses_items_refusal(items: list, store: bool) -> Refusal | None:
    """Every function_call_output answers a function_call before it, and every call is answered.
    No item may carry an id: nothing was stored (and with store=false nothing can be)."""
    calls: list[str] = []
    answered: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return Refusal(400, f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
        if item.get("id"):
            detail = (" Items are not persisted when `store` is set to false. Try again with `store` set "
                      "to true, or remove this item from your input.") if not store else ""
            return Refusal(404, f"Item with id '{item['id']}' not found.{detail}", "input")
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in ("user", "assistant", "system", "developer"):
                return Refusal(400, f"Invalid value: {item.get('role')!r}. Supported values are: 'user', "
                                    "'assistant', 'system', and 'developer'.", f"input[{i}].role")
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str) or (key != "arguments" and not item[key]):
                    return Refusal(400, f"Missing required parameter: 'input[{i}].{key}'.", f"input[{i}].{key}",
                                   "missing_required_parameter")
            calls.append(item["call_id"])
        elif kind == "function_call_output":
            if item.get("call_id") not in calls:
                return Refusal(400, f"No tool call found for function call output with call_id "
                                    f"{item.get('call_id')}.", "input")
            if not isinstance(item.get("output"), (str, list)):
                return Refusal(400, f"Invalid type for 'input[{i}].output': expected a string.", f"input[{i}].output")
            answered.add(item["call_id"])
        elif kind != "reasoning":
            return Refusal(400, f"Invalid value: {kind!r}.", f"input[{i}].type")
    for call_id in calls:
        if call_id not in answered:
            return Refusal(400, f"No tool output found for function call {call_id}.", "input")
    return None


def _effort_refusal(rule: ModelRule, effort: Any, param: str) -> Refusal | None:
    if effort is None:
        return None
    if not rule.efforts:
        return Refusal(400, f"Unsupported parameter: '{param}' is not supported with this model.", param,
                       "unsupported_parameter")
    if effort not in rule.efforts:
        quoted = [f"'{e}'" for e in rule.efforts]
        listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
        return Refusal(400, f"Unsupported value: '{param}' does not support {effort!r} with this model. "
                            f"Supported values are: {listed}.", param, "unsupported_value")
    return None


def _masked(key: str) -> str:
    """The key as OpenAI's 401 message shows it: the first 8 and last 4 characters."""
    return key[:8] + "*" * max(len(key) - 12, 1) + key[-4:] if len(key) > 12 else "*" * len(key)


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def _error(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
