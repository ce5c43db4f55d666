"""A local OpenAI API: streamed chat completions (SSE) and the Speech API (raw pcm).

Chat: each POST /v1/chat/completions takes the next scripted `ChatReply` (or asks `chat_handler`),
and streams `chat.completion.chunk` events as the API does: a role chunk, content deltas, tool-call
deltas split across chunks by `index` (id and name on the first delta only, arguments in pieces),
a finish chunk, then `data: [DONE]`. A reply can be an HTTP error with OpenAI's error body, or a
stall (before the headers, or after some chunks) that lasts until `release` is set or the client
leaves. The fake checks the history the way the API does (every tool message answers a preceding
tool call, every tool call is answered) and rejects a bad one with 400.

Speech: POST /v1/audio/speech with response_format "pcm" streams 24 kHz 16-bit mono with no
header, in odd-sized chunks, optionally paced or held mid-stream; it notes when the client leaves.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import ClientGone, HttpRequest, HttpServer, ResponseWriter, StreamRecord
from tests.fakes.deepgram_server import stream_chunks, tone

PCM_RATE = 24000


@dataclass
class ChatReply:
    """What the fake answers to one chat completion request."""
    chunks: list[dict] = field(default_factory=list)   # `choices[0]` bodies: {"delta":..., "finish_reason":...}
    status: int = 200
    error: dict | None = None             # OpenAI error object for a non-200 status
    stall_before_headers: bool = False    # accept the request, then say nothing
    stall_after: int | None = None        # send this many chunks, then stall

    @classmethod
    def text(cls, *pieces: str) -> ChatReply:
        chunks = [{"delta": {"role": "assistant", "content": "", "refusal": None}}]
        chunks += [{"delta": {"content": p}} for p in pieces]
        chunks.append({"delta": {}, "finish_reason": "stop"})
        return cls(chunks)

    @classmethod
    def tool_calls(cls, *calls: tuple[str, dict | str], text: Sequence[str] = (), pieces: int = 3,
                   interleave: bool = True) -> ChatReply:
        """Tool calls (name, arguments: a dict, or a raw string sent as is), optionally after
        some text; each call's arguments arrive in `pieces` deltas, interleaved across calls."""
        chunks = [{"delta": {"role": "assistant", "content": None if not text else "", "refusal": None}}]
        chunks += [{"delta": {"content": p}} for p in text]
        streams = []
        for index, (name, args) in enumerate(calls):
            raw = args if isinstance(args, str) else json.dumps(args)
            size = max(1, -(-len(raw) // pieces))
            parts = [raw[i:i + size] for i in range(0, len(raw), size)] or [""]
            first = {"index": index, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                     "function": {"name": name, "arguments": ""}}
            streams.append([first] + [{"index": index, "function": {"arguments": p}} for p in parts])
        if interleave:
            order = [s[i] for i in range(max(map(len, streams), default=0)) for s in streams if i < len(s)]
        else:
            order = [d for s in streams for d in s]
        chunks += [{"delta": {"tool_calls": [d]}} for d in order]
        chunks.append({"delta": {}, "finish_reason": "tool_calls"})
        return cls(chunks)

    @classmethod
    def failure(cls, status: int, message: str = "", code: str | None = None) -> ChatReply:
        kinds = {429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
                 500: ("server_error", None, "The server had an error while processing your request."),
                 503: ("server_error", None, "The engine is currently overloaded, please try again later.")}
        kind, default_code, default_message = kinds.get(status, ("invalid_request_error", None, "Bad request"))
        return cls(status=status, error={"message": message or default_message, "type": kind,
                                         "param": None, "code": code or default_code})

    @classmethod
    def stall(cls, after: int = 1, before_headers: bool = False) -> ChatReply:
        reply = cls.text("This", " never", " arrives.")
        reply.stall_after = None if before_headers else after
        reply.stall_before_headers = before_headers
        return reply


class FakeOpenAI(HttpServer):
    """The fake OpenAI server; point OPENAI_BASE_URL at `base_url`."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key                       # when set, other keys get 401
        self.chat_replies: deque[ChatReply] = deque()
        self.chat_handler: Callable[[dict], ChatReply] | None = None  # used when no reply is queued
        self.requests: list[HttpRequest] = []
        self.chat_requests: list[dict] = []
        self.chat_streams: list[StreamRecord] = []
        self.speech_requests: list[dict] = []
        self.speech_streams: list[StreamRecord] = []
        self.speech_chunk_sizes: Sequence[int] = (4801, 1, 2399, 7, 9601)
        self.speech_seconds_per_char = 0.06
        self.speech_bytes_per_s: float | None = None   # pace the audio (None: as fast as possible)
        self.speech_hold_after: int | None = None      # stall after this many chunks until release
        self.speech_errors: deque[tuple[int, str]] = deque()
        self.release = asyncio.Event()                 # ends every stall
        self._changed = asyncio.Condition()

    @property
    def base_url(self) -> str:
        return f"{self.http_url}/v1"

    def reply(self, *replies: ChatReply) -> None:
        self.chat_replies.extend(replies)

    async def wait_chat_requests(self, count: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: len(self.chat_requests) >= count, timeout)

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
    async def handle(self, request: HttpRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        out = ResponseWriter(reader, writer)
        self.requests.append(request)
        try:
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                await out.send_json(401, _error("Incorrect API key provided.", "invalid_request_error",
                                                "invalid_api_key"))
            elif request.method == "POST" and request.path == "/v1/chat/completions":
                await self._chat(request, out)
            elif request.method == "POST" and request.path == "/v1/audio/speech":
                await self._speech(request, out)
            else:
                await out.send_json(404, _error(f"Invalid URL ({request.method} {request.path})",
                                                "invalid_request_error"))
            return out.reusable
        finally:
            out.finish()
            await self._notify()

    # --- chat -----------------------------------------------------------------------------
    async def _chat(self, request: HttpRequest, out: ResponseWriter) -> None:
        body = request.json()
        self.chat_requests.append(body)
        await self._notify()
        problem = check_chat_request(body)
        if problem:
            await out.send_json(400, _error(problem, "invalid_request_error"))
            return
        if self.chat_replies:
            reply = self.chat_replies.popleft()
        elif self.chat_handler is not None:
            reply = self.chat_handler(body)
        else:
            await out.send_json(500, _error("fake OpenAI: no reply scripted for this request", "server_error"))
            return
        record = StreamRecord(request)
        self.chat_streams.append(record)
        await self._notify()
        try:
            if reply.stall_before_headers:
                await out.hold(until=self.release)
            if reply.status != 200:
                await out.send_json(reply.status, {"error": reply.error},
                                    {"x-request-id": f"req_{uuid.uuid4().hex}"})
                record.finished.set()
                return
            await out.begin(200, "text/event-stream; charset=utf-8",
                            {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "42"})
            cid, created = f"chatcmpl-{uuid.uuid4().hex[:29]}", int(time.time())
            for n, choice in enumerate(reply.chunks):
                if reply.stall_after is not None and n == reply.stall_after:
                    await out.hold(until=self.release)
                event = {"id": cid, "object": "chat.completion.chunk", "created": created,
                         "model": body.get("model"), "service_tier": "default",
                         "system_fingerprint": "fp_fake", "choices": [
                             {"index": 0, "delta": choice["delta"], "logprobs": None,
                              "finish_reason": choice.get("finish_reason")}],
                         "obfuscation": "x" * (n % 7)}
                data = b"data: " + json.dumps(event).encode() + b"\n\n"
                await out.chunk(data)
                record.chunks.append(data)
            await out.chunk(b"data: [DONE]\n\n")
            await out.end()
            record.finished.set()
        except ClientGone:
            record.closed_early.set()
            raise

    # --- speech ----------------------------------------------------------------------------
    async def _speech(self, request: HttpRequest, out: ResponseWriter) -> None:
        body = request.json()
        self.speech_requests.append(body)
        await self._notify()
        missing = [k for k in ("model", "input", "voice") if not body.get(k)]
        if missing:
            await out.send_json(400, _error(f"Missing required parameter: '{missing[0]}'.",
                                            "invalid_request_error"))
            return
        if body.get("response_format") != "pcm":
            await out.send_json(400, _error("the fake only makes response_format 'pcm'", "invalid_request_error"))
            return
        if self.speech_errors:
            status, message = self.speech_errors.popleft()
            await out.send_json(status, _error(message, "server_error"))
            return
        record = StreamRecord(request)
        self.speech_streams.append(record)
        await self._notify()
        audio = self.speech_audio(body["input"], self.speech_seconds_per_char)
        await out.begin(200, "application/octet-stream", {"x-request-id": f"req_{uuid.uuid4().hex}"})
        try:
            await stream_chunks(out, record, audio, self.speech_chunk_sizes, self.speech_bytes_per_s,
                                self.speech_hold_after, self.release)
        finally:
            await self._notify()


def check_chat_request(body: Any) -> str | None:
    """What the API would reject in a chat request, as its message; None when it is fine."""
    if not isinstance(body, dict) or not body.get("model"):
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Invalid 'messages': empty array."
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            return "Invalid 'tools': each tool needs type 'function' and a function name."
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value for 'messages[{i}].role': {role!r}."
        if open_calls and role != "tool":
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'.")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if not calls and not message.get("content"):
                return f"Invalid 'messages[{i}]': an assistant message needs content or tool_calls."
            for call in calls:
                fn = call.get("function") or {}
                if call.get("type") != "function" or not call.get("id") or not fn.get("name") \
                        or not isinstance(fn.get("arguments"), str):
                    return f"Invalid 'messages[{i}].tool_calls': malformed tool call."
                open_calls.add(call["id"])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return ("Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.")
            open_calls.discard(call_id)
            if not isinstance(message.get("content"), str):
                return f"Invalid 'messages[{i}].content': expected a string."
    if open_calls:
        return ("An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'.")
    return None


def _error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
