"""A local OpenAI Realtime API: the WebSocket (`GET /v1/realtime?model=...`) that FakeOpenAI mounts,
speaking the GA interface's events as the real service does.

On open the session sends `session.created`; `session.update` is checked and answered with
`session.updated`; `response.create` speaks the text of its `input` (or of the conversation) as a
tone of natural length in the session's output format (mu-law or A-law 8 kHz, or PCM16 24 kHz),
with the events a real response carries: `response.created`, `response.output_item.added`,
`response.content_part.added`, `response.output_audio.delta` and
`response.output_audio_transcript.delta` in turn, `response.output_audio.done`,
`response.output_audio_transcript.done`, `response.content_part.done`,
`response.output_item.done`, then `response.done` with a status and `usage`. `response.cancel`
ends the active response with `response.done` status "cancelled".

What the real service refuses is refused with an `error` event carrying the refused client
event's id (docs/providers.md lists each rule with the public report it comes from): a voice the
Realtime API does not have, an output format outside audio/pcm (24 kHz), audio/pcmu and
audio/pcma, a new voice once audio was produced (`cannot_update_voice`), a response while one is
active (`conversation_already_has_active_response`), a cancel with none (`response_cancel_not_active`),
unknown event types, unknown models. The key is checked at the upgrade by FakeOpenAI's middleware
(401 with OpenAI's error body).

Knobs (on `FakeRealtime`): `reword` (the transcript differs from the text), `hold_created`
(`response.created` waits for it), `first_audio_delay_s`,
`delta_interval_s` (pacing), `stall_after` (deltas, then wait for `release`), `refuse_status`
(refuse upgrades with that HTTP status), `concurrent_out_of_band`; per session `drop()`,
`expire()` (session_expired, then close) and `close()`. Every client event is recorded per
session, and the tests await `wait_*` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.deepgram_server import tone
from tests.fakes.server import RecordedRequest, json_response

try:  # stdlib up to 3.12, the audioop-lts package from 3.13
    import audioop
except ModuleNotFoundError:  # pragma: no cover
    import audioop_lts as audioop  # type: ignore[no-redef]

REALTIME_MODELS = ("gpt-realtime-2.1-mini", "gpt-realtime-2.1", "gpt-realtime-2", "gpt-realtime",
                   "gpt-realtime-mini")
REALTIME_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create", "conversation.item.retrieve",
                 "conversation.item.truncate", "conversation.item.delete", "response.create",
                 "response.cancel", "output_audio_buffer.clear")
SECONDS_PER_CHAR = 0.06
DELTA_SECONDS = 0.1                    # each audio delta carries this much audio
SESSION_MINUTES = 60                   # a session's longest life (session_expired after it)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def realtime_audio(text: str, fmt: str = "audio/pcmu") -> bytes:
    """The audio the fake speaks `text` with, in `fmt`: a tone as long as the text would take."""
    rate = 24000 if fmt == "audio/pcm" else 8000
    pcm = tone(max(int(len(text) * SECONDS_PER_CHAR * rate), rate // 10), rate)
    if fmt == "audio/pcmu":
        return audioop.lin2ulaw(pcm, 2)
    if fmt == "audio/pcma":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def delta_bytes(fmt: str) -> int:
    return int(DELTA_SECONDS * (48000 if fmt == "audio/pcm" else 8000))


@dataclass
class Refusal:
    """An `error` event's error object."""
    code: str | None
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


@dataclass
class FakeResponse:
    """One response as the fake made it."""
    id: str
    text: str
    transcript: str
    conversation: str
    metadata: dict | None
    format: str
    voice: str
    status: str = "in_progress"
    deltas: int = 0
    audio: bytearray = field(default_factory=bytearray)
    usage: dict | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class RealtimeSession:
    """One Realtime WebSocket as the fake sees it."""

    def __init__(self, fake: FakeRealtime, request: RecordedRequest, ws: web.WebSocketResponse,
                 transport: asyncio.Transport | None, model: str) -> None:
        self.fake = fake
        self.request = request
        self.model = model
        self.id = _id("sess")
        self.events: list[dict] = []                # every client event, in order
        self.sent: list[dict] = []                  # every server event, in order
        self.responses: list[FakeResponse] = []
        self.active: list[FakeResponse] = []        # responses in progress
        self.conversation: list[dict] = []          # items conversation.item.create added
        self.max_active = 0                         # the most responses ever in progress at once
        self.audio_produced = False
        self.closed = asyncio.Event()
        self.config: dict[str, Any] = {
            "type": "realtime", "object": "realtime.session", "id": self.id, "model": model,
            "output_modalities": ["audio"], "instructions": "You are a helpful assistant.",
            "expires_at": int(time.time()) + SESSION_MINUTES * 60,
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                   "prefix_padding_ms": 300, "silence_duration_ms": 200,
                                                   "create_response": True, "interrupt_response": True}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                                 "speed": 1.0}},
        }
        self._ws = ws
        self._transport = transport
        self._send_lock = asyncio.Lock()
        self._closing = False

    # --- what the tests read and await ----------------------------------------------------------
    @property
    def types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    def sent_of_type(self, kind: str) -> list[dict]:
        return [e for e in self.sent if e.get("type") == kind]

    @property
    def output_format(self) -> str:
        return self.config["audio"]["output"]["format"]["type"]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        await self.fake.wait_until(predicate, timeout)

    async def wait_event(self, kind: str, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.types.count(kind) >= count, timeout)

    async def wait_sent(self, kind: str, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.sent_of_type(kind)) >= count, timeout)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    # --- the server side's moves --------------------------------------------------------------
    async def send(self, event: dict) -> None:
        if self.closed.is_set() or self._closing:
            return
        event = {"type": event.pop("type"), "event_id": _id("event"), **event}
        self.sent.append(event)
        try:
            async with self._send_lock:
                await self._ws.send_str(json.dumps(event))
        except ConnectionResetError:
            pass
        await self.fake.notify()

    async def error(self, refusal: Refusal, client_event: dict | None = None) -> None:
        await self.send({"type": "error", "error": {
            "type": refusal.type, "code": refusal.code, "message": refusal.message, "param": refusal.param,
            "event_id": (client_event or {}).get("event_id")}})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed.is_set() or self._closing:
            return
        self._closing = True
        try:
            await self._ws.close(code=code, message=reason.encode())
        finally:
            self._end()

    async def drop(self) -> None:
        """Lose the connection with no close frame, as a network drop would."""
        if self._transport is not None:
            self._transport.abort()
        self._end()

    async def expire(self) -> None:
        """What the service does when a session reaches its longest life."""
        await self.error(Refusal("session_expired", f"Your session hit the maximum duration of "
                                                    f"{SESSION_MINUTES} minutes."))
        await self.close(1000)

    # --- the connection ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.send({"type": "session.created", "session": self.config})
            if self.model not in self.fake.models:
                await self.error(Refusal("model_not_found", f"The model `{self.model}` does not exist or you "
                                                            "do not have access to it.", "model"))
                await self.close(1008, "model_not_found")
                return
            while not self.closed.is_set() and not self._closing:
                message = await self._ws.receive()
                if message.type != WSMsgType.TEXT:
                    break
                await self._on_text(message.data)
        finally:
            for response in list(self.active):
                if response.task is not None:
                    response.task.cancel()
            self._end()

    async def _on_text(self, data: str) -> None:
        try:
            event = json.loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            await self.error(Refusal("invalid_json", "The server could not parse the event."))
            return
        self.events.append(event)
        await self.fake.notify()
        if kind not in CLIENT_EVENTS:
            listed = ", ".join(f"'{k}'" for k in CLIENT_EVENTS)
            await self.error(Refusal("invalid_value", f"Invalid value: '{kind}'. Supported values are: {listed}.",
                                     "type"), event)
        elif kind == "session.update":
            await self._session_update(event)
        elif kind == "response.create":
            await self._response_create(event)
        elif kind == "response.cancel":
            await self._response_cancel(event)
        elif kind == "conversation.item.create":
            item = dict(event.get("item") or {}, id=_id("item"))
            self.conversation.append(item)
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
            await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    def _audio_refusal(self, output: dict, param: str) -> Refusal | None:
        voice, fmt = output.get("voice"), output.get("format")
        if voice is not None:
            if isinstance(voice, str) and voice not in REALTIME_VOICES:
                listed = ", ".join(f"'{v}'" for v in REALTIME_VOICES)
                return Refusal("invalid_value", f"Invalid value: '{voice}'. Supported values are: {listed}.",
                               f"{param}.voice")
            if voice != self.config["audio"]["output"]["voice"] and self.audio_produced:
                return Refusal("cannot_update_voice",
                               "Cannot update a conversation's voice if assistant audio is present.",
                               f"{param}.voice")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else fmt
            if kind not in FORMATS:
                listed = ", ".join(f"'{f}'" for f in FORMATS)
                return Refusal("invalid_value", f"Invalid value: '{kind}'. Supported values are: {listed}.",
                               f"{param}.format.type")
            if kind == "audio/pcm" and fmt.get("rate", 24000) != 24000:
                return Refusal("invalid_value", f"Invalid value: {fmt.get('rate')}. Supported values are: 24000.",
                               f"{param}.format.rate")
        return None

    async def _session_update(self, event: dict) -> None:
        session = event.get("session") or {}
        if session.get("type") != "realtime":
            await self.error(Refusal("missing_required_parameter", "Missing required parameter: 'session.type'.",
                                     "session.type"), event)
            return
        audio = session.get("audio") or {}
        refusal = self._audio_refusal(audio.get("output") or {}, "session.audio.output")
        if refusal is not None:
            await self.error(refusal, event)
            return
        for key in ("instructions", "output_modalities"):
            if key in session:
                self.config[key] = session[key]
        for side in ("input", "output"):
            self.config["audio"][side].update(audio.get(side) or {})
        await self.send({"type": "session.updated", "session": self.config})

    async def _response_create(self, event: dict) -> None:
        params = event.get("response") or {}
        conversation = params.get("conversation", "auto")
        busy = [r for r in self.active if conversation == "auto" or not self.fake.concurrent_out_of_band]
        if busy:
            await self.error(Refusal("conversation_already_has_active_response",
                                     f"Conversation already has an active response in progress: {busy[0].id}. "
                                     "Wait until the response is finished before creating a new one."), event)
            return
        output = (params.get("audio") or {}).get("output") or {}
        refusal = self._audio_refusal(output, "response.audio.output")
        if refusal is not None:
            await self.error(refusal, event)
            return
        items = params.get("input") if "input" in params else self.conversation
        text = " ".join(part.get("text", "") for item in items or [] if isinstance(item, dict)
                        for part in item.get("content") or [] if isinstance(part, dict)
                        and part.get("type") in ("input_text", "text")).strip()
        fmt_param = output.get("format")
        fmt = fmt_param.get("type") if isinstance(fmt_param, dict) else self.output_format
        reword = self.fake.reword
        voice = output.get("voice") or self.config["audio"]["output"]["voice"]
        response = FakeResponse(_id("resp"), text, reword(text) if reword else text, conversation,
                                params.get("metadata"), fmt, voice)
        self.responses.append(response)
        self.active.append(response)
        self.max_active = max(self.max_active, len(self.active))
        response.task = asyncio.create_task(self._speak(response, params))

    def _response_object(self, response: FakeResponse, params: dict, usage: dict | None = None,
                         output: list | None = None) -> dict:
        details = None
        if response.status == "cancelled":
            details = {"type": "cancelled", "reason": "client_cancelled"}
        return {"object": "realtime.response", "id": response.id, "status": response.status,
                "status_details": details, "output": output or [],
                "conversation_id": None if response.conversation == "none" else f"conv_{self.id[5:]}",
                "output_modalities": params.get("output_modalities") or self.config["output_modalities"],
                "max_output_tokens": params.get("max_output_tokens", "inf"), "metadata": response.metadata,
                "audio": {"output": {"format": {"type": response.format}, "voice": response.voice}},
                "usage": usage}

    async def _speak(self, response: FakeResponse, params: dict) -> None:
        fake, rid, item_id = self.fake, response.id, _id("item")
        where = {"response_id": rid, "item_id": item_id, "output_index": 0}
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        audio = realtime_audio(response.transcript, response.format)
        words = response.transcript.split(" ")
        try:
            if fake.hold_created is not None:
                await fake.hold_created.wait()
            await self.send({"type": "response.created", "response": self._response_object(response, params)})
            await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
            await self.send({"type": "response.content_part.added", **where, "content_index": 0,
                             "part": {"type": "audio", "transcript": ""}})
            if fake.first_audio_delay_s:
                await asyncio.sleep(fake.first_audio_delay_s)
            step = delta_bytes(response.format)
            pieces = [audio[i:i + step] for i in range(0, len(audio), step)]
            for n, piece in enumerate(pieces):
                if fake.stall_after is not None and n == fake.stall_after:
                    await fake.release.wait()
                if n and fake.delta_interval_s:
                    await asyncio.sleep(fake.delta_interval_s)
                await self.send({"type": "response.output_audio.delta", **where, "content_index": 0,
                                 "delta": base64.b64encode(piece).decode()})
                response.deltas += 1
                response.audio += piece
                self.audio_produced = True
                share = words[n * len(words) // len(pieces):(n + 1) * len(words) // len(pieces)]
                if share:
                    await self.send({"type": "response.output_audio_transcript.delta", **where, "content_index": 0,
                                     "delta": (" " if n else "") + " ".join(share)})
            await self.send({"type": "response.output_audio.done", **where, "content_index": 0})
            await self.send({"type": "response.output_audio_transcript.done", **where, "content_index": 0,
                             "transcript": response.transcript})
            part = {"type": "audio", "transcript": response.transcript}
            await self.send({"type": "response.content_part.done", **where, "content_index": 0, "part": part})
            item = dict(item, status="completed", content=[{"type": "output_audio", "transcript": response.transcript}])
            await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item})
            await self._finish(response, params, "completed", [item])
        except asyncio.CancelledError:
            if not self.closed.is_set() and not self._closing:
                await self._finish(response, params, "cancelled", [])
            raise

    async def _finish(self, response: FakeResponse, params: dict, status: str, output: list) -> None:
        response.status = status
        if response in self.active:
            self.active.remove(response)
        text_in = max(1, len(response.text) // 4) + len(params.get("instructions") or "") // 4
        audio_out = len(response.audio) // (48 if response.format == "audio/pcm" else 16)  # ~ a token per 2 ms
        text_out = max(1, len(response.transcript) // 4) if response.audio else 0
        usage = {"total_tokens": text_in + audio_out + text_out, "input_tokens": text_in,
                 "output_tokens": audio_out + text_out,
                 "input_token_details": {"text_tokens": text_in, "audio_tokens": 0, "cached_tokens": 0,
                                         "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0}},
                 "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out}}
        response.usage = usage
        await self.send({"type": "response.done", "response": self._response_object(response, params, usage, output)})
        response.done.set()

    async def _response_cancel(self, event: dict) -> None:
        wanted = event.get("response_id")
        targets = [r for r in self.active if wanted in (None, r.id)]
        if not targets:
            await self.error(Refusal("response_cancel_not_active", "Cancellation failed: no active response found"),
                             event)
            return
        task = targets[0].task
        if task is not None:
            task.cancel()

    def _end(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.fake.sessions_closed += 1


class FakeRealtime:
    """The Realtime WebSocket's state across sessions; FakeOpenAI holds one as `realtime`."""

    def __init__(self, release: asyncio.Event, notify: Callable[[], Any]) -> None:
        self.models: tuple[str, ...] = REALTIME_MODELS
        self.sessions: list[RealtimeSession] = []
        self.sessions_closed = 0
        self.reword: Callable[[str], str] | None = None   # the transcript the model "said" for a text
        self.first_audio_delay_s = 0.0
        self.delta_interval_s = 0.0          # pacing between audio deltas
        self.stall_after: int | None = None  # send this many audio deltas, then wait for `release`
        self.refuse_status: int | None = None  # refuse every upgrade with this HTTP status
        self.concurrent_out_of_band = False  # True: out-of-band responses may overlap
        self.hold_created: asyncio.Event | None = None  # response.created waits until it is set
        self.release = release
        self._notify = notify
        self._changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        await self._notify()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_sessions(self, count: int, timeout: float = 5.0) -> RealtimeSession:
        await self.wait_until(lambda: len(self.sessions) >= count, timeout)
        return self.sessions[count - 1]

    async def handle(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if self.refuse_status is not None:
            status = self.refuse_status
            kind = "server_error" if status >= 500 else "invalid_request_error"
            return json_response(status, {"error": {"message": f"fake refusal ({status})", "type": kind,
                                                    "param": None, "code": None}})
        model = (recorded.query.get("model") or [""])[0]
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = RealtimeSession(self, recorded, ws, request.transport, model)
        self.sessions.append(session)
        await self.notify()
        try:
            await session.run()
        finally:
            await self.notify()
        return ws
