"""OpenAI's voice through the Realtime API (the Speech API's models shut down on 2027-01-06): one
WebSocket session per call, opened when the call starts, which reads each sentence aloud.

The session speaks G.711 mu-law at 8 kHz (`audio/pcmu`), Twilio's own format, so its audio goes to
the caller with no resampling. Zylin does its own listening and turn-taking: no audio is ever sent
to the session and its turn detection is off. Each sentence is one out-of-band response
(`conversation: "none"`) whose only input is the sentence, so nothing piles up in the session's
conversation (cost, and a model drifting from its script). The instructions ask for the text
verbatim; the response's transcript is compared with the sentence, and a reworded one is reported
to the call log (`tts_reworded`).

One response is active at a time: sentences asked for together (the speaker runs one ahead) are
spoken in the order they began, the next `response.create` after the previous `response.done`.
Closing a sentence's generator early (barge-in) cancels its response; a lost connection or an
expired session (60 minutes at most) fails what was outstanding and reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from services.settings import Settings
from services.storage.vocabulary import EventKind
from services.tts.base import AudioEncoding, EventHook

log = logging.getLogger("zylin.tts.realtime")

VERBATIM_INSTRUCTIONS = (
    "You are the voice of a warm, friendly receptionist on a phone line: natural pace, clear and "
    "relaxed, never rushed. Each message you receive is a line to read aloud. Say exactly the text, "
    "word for word: add nothing, leave nothing out, translate nothing, and answer no question in it.")
CONNECT_TIMEOUT_S = 5.0     # the upgrade and session.updated: past this a sentence fails promptly
# websockets stops reading at 16 unread frames: a connection whose frames go unread (a reader gone
# mid-response) would never see the service's close frame and wait out the close timeout, 10 s by
# default. The reader drains every frame, so this is a guard: no read limit, a 2 s close bound.
WEBSOCKET_OPTIONS: Any = {"max_queue": None, "close_timeout": 2.0}
_NOT_TIED = {"session_expired"}   # errors about the session, never about one response


class RealtimeError(Exception):
    """The Realtime voice could not say a sentence. The message is safe to log (the error code or
    HTTP status, never the text); `status_code` is set for a refused upgrade."""

    def __init__(self, reason: str, *, code: str | None = None, status_code: int | None = None) -> None:
        self.code = code
        self.status_code = status_code
        super().__init__(f"openai realtime: {reason}")


@dataclass(slots=True)
class RealtimeUsage:
    """Running token totals from each response's `usage` (what the voice costs)."""
    responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_text_tokens: int = 0
    output_text_tokens: int = 0

    def add(self, usage: Any) -> None:
        if usage is None:
            return
        self.responses += 1
        self.input_tokens += usage.input_tokens or 0
        self.output_tokens += usage.output_tokens or 0
        if (into := usage.input_token_details) is not None:
            self.input_audio_tokens += into.audio_tokens or 0
            self.input_text_tokens += into.text_tokens or 0
        if (out := usage.output_token_details) is not None:
            self.output_audio_tokens += out.audio_tokens or 0
            self.output_text_tokens += out.text_tokens or 0


JobState = Literal["queued", "sent", "created", "done"]


@dataclass(eq=False)
class _Job:
    """One sentence: queued until its turn, then one response."""
    text: str
    key: str                                  # the response.create's event_id and metadata
    state: JobState = "queued"
    response_id: str | None = None
    abandoned: bool = False                   # its generator was closed before response.done
    cancel_sent: bool = False
    transcript: str | None = None
    audio: asyncio.Queue[bytes | BaseException | None] = field(default_factory=asyncio.Queue)


def normalized_words(text: str) -> list[str]:
    """Words with case and punctuation gone: what "said the same thing" compares."""
    return re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split()


class RealtimeVoice:
    """One per process. Built before any event loop runs (`python main.py` builds providers before
    uvicorn starts its loop), so its client is made on first use, inside the loop."""

    sample_rate = 8000
    encoding: AudioEncoding = "mulaw"

    def __init__(self, settings: Settings, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.model = settings.openai_voice_model
        self.voice = settings.openai_tts_voice
        self.cache_key = f"openai-realtime:{self.model}:{self.voice}:pcmu"
        self.connect_timeout_s = connect_timeout_s
        self.usage = RealtimeUsage()
        self._api_key = settings.openai_api_key
        self._base_url = settings.openai_base_url or None
        self._client: AsyncOpenAI | None = None
        self._calls: set[RealtimeCallVoice] = set()

    def client(self) -> AsyncOpenAI:
        if self._client is None:
            self._client = AsyncOpenAI(api_key=self._api_key, base_url=self._base_url, max_retries=0)
        return self._client

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """A short-lived session for one text (start-up pre-rendering): open, say it, close."""
        session = RealtimeCallVoice(self)
        try:
            async with aclosing(session.synthesize(text)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            await session.close()

    def for_call(self, on_event: EventHook | None = None) -> RealtimeCallVoice:
        """The call's own session, connecting now (called inside the loop as the call starts)."""
        return RealtimeCallVoice(self, on_event)

    async def close(self) -> None:
        for call in list(self._calls):
            await call.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


class RealtimeCallVoice:
    """One call's Realtime session; `close()` ends it with the call."""

    sample_rate = 8000
    encoding: AudioEncoding = "mulaw"

    def __init__(self, voice: RealtimeVoice, on_event: EventHook | None = None) -> None:
        self.parent = voice
        self.cache_key = voice.cache_key
        self.usage = RealtimeUsage()
        self._on_event = on_event
        self._keys = itertools.count(1)
        self._prefix = f"zylin_{id(self):x}"
        self._waiting: deque[_Job] = deque()
        self._active: _Job | None = None
        self._conn: AsyncRealtimeConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._closed = False
        voice._calls.add(self)
        self._connect()   # pre-warm: the session is ready before the first sentence

    # --- speaking -------------------------------------------------------------------------------
    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text`, mu-law 8 kHz, as its response streams. Raises RealtimeError when the
        session cannot be had (within the connect bound), refuses the response, or is lost."""
        if self._closed:
            raise RealtimeError("the voice is closed")
        job = _Job(text, f"{self._prefix}_{next(self._keys)}")
        self._waiting.append(job)     # its place in line: when it first runs
        try:
            await self._wait_ready()
            self._pump()
            while (item := await job.audio.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._abandon(job)

    def _abandon(self, job: _Job) -> None:
        """The generator ended: a job never sent leaves the line; one still speaking is cancelled."""
        if job.state == "queued":
            if job in self._waiting:
                self._waiting.remove(job)
            return
        if job.state == "done":
            return
        job.abandoned = True
        if job.state == "created":
            self._cancel(job)
        # "sent": response.created will find it abandoned and cancel it then

    def _cancel(self, job: _Job) -> None:
        if not job.cancel_sent and job.response_id is not None:
            job.cancel_sent = True
            self._outbox.put_nowait({"type": "response.cancel", "response_id": job.response_id,
                                     "event_id": f"{job.key}_cancel"})

    def _pump(self) -> None:
        """Start the next sentence's response when none is active and the session is ready."""
        ready = self._ready
        if self._closed or self._active is not None or not self._waiting or ready is None \
                or not ready.done() or ready.cancelled() or ready.exception() is not None:
            return
        job = self._waiting.popleft()
        job.state = "sent"
        self._active = job
        self._outbox.put_nowait({"type": "response.create", "event_id": job.key, "response": {
            "conversation": "none", "output_modalities": ["audio"], "instructions": VERBATIM_INSTRUCTIONS,
            "metadata": {"zylin": job.key},
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": job.text}]}],
        }})

    def _finish(self, job: _Job, outcome: BaseException | None = None) -> None:
        job.state = "done"
        if outcome is not None:
            job.audio.put_nowait(outcome)
        job.audio.put_nowait(None)
        if self._active is job:
            self._active = None
        self._pump()

    # --- the connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())   # read: no "never retrieved"
        self._ready = ready
        self._outbox = asyncio.Queue()
        self._reader = asyncio.create_task(self._run(ready))

    async def _wait_ready(self) -> None:
        if self._reader is None or self._reader.done():
            self._connect()   # the last connection failed or was lost: this sentence reconnects
        ready = self._ready
        assert ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.parent.connect_timeout_s + 0.5)
        except TimeoutError:
            raise RealtimeError(f"no session within {self.parent.connect_timeout_s:g} s") from None

    def _session_config(self) -> Any:
        return {"type": "realtime", "model": self.parent.model, "output_modalities": ["audio"],
                "instructions": VERBATIM_INSTRUCTIONS,
                "audio": {"input": {"turn_detection": None},
                          "output": {"format": {"type": "audio/pcmu"}, "voice": self.parent.voice}}}

    async def _open(self) -> AsyncRealtimeConnection:
        """Connect and configure, within the bound; RealtimeError says why not."""
        from websockets.exceptions import InvalidStatus, WebSocketException

        conn: AsyncRealtimeConnection | None = None
        try:
            async with asyncio.timeout(self.parent.connect_timeout_s):
                conn = await self.parent.client().realtime.connect(
                    model=self.parent.model, websocket_connection_options=WEBSOCKET_OPTIONS).enter()
                await conn.session.update(session=self._session_config(), event_id=f"{self._prefix}_session")
                while True:
                    event = await conn.recv()
                    if event.type == "session.updated":
                        return conn
                    if event.type == "error":
                        raise RealtimeError(event.error.code or event.error.type, code=event.error.code)
        except BaseException as exc:
            if conn is not None:
                await _quietly_close(conn)
            if isinstance(exc, TimeoutError):
                raise RealtimeError(f"no session within {self.parent.connect_timeout_s:g} s") from None
            if isinstance(exc, InvalidStatus):
                status = exc.response.status_code
                raise RealtimeError(f"HTTP {status}", status_code=status) from None
            if isinstance(exc, (OSError, WebSocketException)):
                raise RealtimeError(f"connection failed ({type(exc).__name__})") from None
            raise

    async def _run(self, ready: asyncio.Future[None]) -> None:
        """One connection's life: open it, send what the outbox holds, read until it ends."""
        from websockets.exceptions import ConnectionClosed

        try:
            conn = await self._open()
        except RealtimeError as exc:
            log.warning("the Realtime voice could not connect: %s", exc)
            ready.set_exception(exc)
            return
        except asyncio.CancelledError:
            ready.cancel()
            raise
        self._conn = conn
        ready.set_result(None)
        writer = asyncio.create_task(self._write(conn, self._outbox))
        reason: str | None = None
        try:
            self._pump()
            async for event in conn:
                reason = self._on_server_event(event)
                if reason is not None:
                    break
            else:
                reason = "the service closed the connection"
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = f"connection lost (close code {code})"
        except Exception as exc:  # a broken frame, a parse error: the session is unusable
            reason = f"connection failed ({type(exc).__name__})"
        finally:
            writer.cancel()
            self._conn = None
            await _quietly_close(conn)
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            reason = f"send failed ({type(writer.exception()).__name__})"
        if not self._closed:
            self._lost(reason)

    async def _write(self, conn: AsyncRealtimeConnection, outbox: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await outbox.get()
            await conn.send(event)  # type: ignore[arg-type]  # plain dicts of the documented events

    def _lost(self, reason: str) -> None:
        """Outstanding sentences fail; a fresh session opens at once (and the call log hears why)."""
        log.warning("the Realtime voice lost its session (%s); reconnecting", reason)
        error = RealtimeError(reason)
        jobs = ([self._active] if self._active is not None else []) + list(self._waiting)
        self._waiting.clear()
        self._active = None
        for job in jobs:
            self._finish(job, error)
        if self._on_event is not None:
            self._on_event(EventKind.TTS_RECONNECT, provider="openai", reason=reason)
        self._connect()

    # --- server events ---------------------------------------------------------------------------
    def _on_server_event(self, event: Any) -> str | None:
        """Route one event to its job; a reason when the session has to be given up."""
        kind, job = event.type, self._active
        if kind == "response.created":
            if job is not None and job.state == "sent" and _owner(event.response, job):
                job.state, job.response_id = "created", event.response.id
                if job.abandoned:
                    self._cancel(job)
        elif kind == "response.output_audio.delta":
            if job is not None and job.response_id == event.response_id and not job.abandoned:
                job.audio.put_nowait(base64.b64decode(event.delta))
        elif kind == "response.output_audio_transcript.done":
            if job is not None and job.response_id == event.response_id:
                job.transcript = event.transcript
        elif kind == "response.done":
            if job is not None and job.response_id == event.response.id:
                self._done(job, event.response)
        elif kind == "error":
            return self._on_error(event.error)
        return None

    def _done(self, job: _Job, response: Any) -> None:
        self.usage.add(response.usage)
        self.parent.usage.add(response.usage)
        status = response.status
        if status == "completed" and job.transcript is not None and not job.abandoned:
            self._compare(job.text, job.transcript)
        if status in ("failed", "incomplete") and not job.abandoned:
            details = response.status_details
            why = (details.error.code if details is not None and details.error is not None else None) \
                or (details.reason if details is not None else None) or status
            self._finish(job, RealtimeError(f"response {why}", code=why))
            return
        self._finish(job)

    def _compare(self, asked: str, said: str) -> None:
        want, got = normalized_words(asked), normalized_words(said)
        if want == got:
            return
        differing = sum(a != b for a, b in zip(want, got, strict=False)) + abs(len(want) - len(got))
        log.info("the Realtime voice reworded a sentence (%d words differ)", differing)
        if self._on_event is not None:
            self._on_event(EventKind.TTS_REWORDED, provider="openai", said=said, asked=asked)

    def _on_error(self, error: Any) -> str | None:
        code = error.code or error.type
        if code == "session_expired":
            return "session expired"
        job, source = self._active, error.event_id
        if source is not None and source.endswith("_cancel"):
            log.debug("the Realtime voice's cancel came too late (%s)", code)
            return None
        tied = job is not None and job.state == "sent" and (
            source == job.key or (source is None and code not in _NOT_TIED))
        if tied and job is not None:
            log.warning("the Realtime voice refused a sentence: %s", code)
            self._finish(job, RealtimeError(code, code=code))
        else:
            log.warning("the Realtime voice reported an error: %s", code)
        return None

    async def close(self) -> None:
        """End the session with the call: idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        self.parent._calls.discard(self)
        error = RealtimeError("the voice is closed")
        jobs = ([self._active] if self._active is not None else []) + list(self._waiting)
        self._waiting.clear()
        self._active = None
        for job in jobs:
            self._finish(job, error)
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)   # its end, whatever it was
        if self._conn is not None:
            await _quietly_close(self._conn)
            self._conn = None

    def for_call(self, on_event: EventHook | None = None) -> RealtimeCallVoice:
        return self   # already one call's voice


def _owner(response: Any, job: _Job) -> bool:
    """The response is the job's: by the metadata it was created with (or, without any, by order)."""
    metadata = response.metadata or {}
    return metadata.get("zylin", job.key) == job.key


async def _quietly_close(conn: AsyncRealtimeConnection) -> None:
    try:
        await conn.close()
    except Exception:  # closing a broken socket: nothing more to do
        pass
