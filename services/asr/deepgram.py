"""Deepgram live transcription for one call: the stream machinery, and listen v1 (Nova-3) on it.

`send()` is on the per-frame path, so it only appends to a bounded backlog; one sender task per
connection drains it (and sends KeepAlive when nothing went out for a while), one receiver task
maps Deepgram's messages to events. A dropped connection is reopened with back-off while the
backlog keeps the audio that arrives meanwhile; Deepgram's times restart at zero on every
connection, so each connection's times are shifted to stay seconds since the call's first frame.
Flux (listen v2) runs on the same machinery: services/asr/deepgram_flux.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from services.asr.base import AsrEvent, RecognizerFailed, SpeechStarted, Transcript, UtteranceEnd
from services.handshake import enter_within

log = logging.getLogger("zylin.asr.deepgram")

SAMPLE_RATE = 8000
BYTES_PER_S = SAMPLE_RATE * 2          # linear16 mono
MAX_KEYTERMS = 50

_FINALIZE = "Finalize"
_CLOSE = "CloseStream"
_END = object()
_idle_http: httpx.AsyncClient | None = None


def _unused_http_client() -> httpx.AsyncClient:
    """The SDK client wants an HTTP client even for a WebSocket; building one costs ~20 ms of CPU
    (an SSL context) on the event loop at every call start, so all recognizers share one idle one."""
    global _idle_http
    if _idle_http is None:
        _idle_http = httpx.AsyncClient(timeout=10.0)
    return _idle_http


def deepgram_environment(base_url: str) -> DeepgramClientEnvironment:
    """The SDK environment for DEEPGRAM_BASE_URL (any of http/https/ws/wss); production if unset."""
    if not base_url:
        return DeepgramClientEnvironment.PRODUCTION
    parts = urlsplit(base_url.rstrip("/"))
    secure = parts.scheme in ("https", "wss")
    host = parts.netloc + parts.path.removesuffix("/v1")
    default = DeepgramClientEnvironment.PRODUCTION
    return DeepgramClientEnvironment(base=f"{'https' if secure else 'http'}://{host}",
                                     production=f"{'wss' if secure else 'ws'}://{host}",
                                     agent=default.agent, agent_rest=default.agent_rest)


class DeepgramStream:
    """One call's Deepgram stream, reconnecting on its own; see the module docstring. What differs
    between listen v1 and v2 (Flux) is the connection, the keep-alive and the messages: the
    subclasses say those."""

    bytes_per_s = BYTES_PER_S   # of the audio `send()` takes

    def __init__(self, *, api_key: str, base_url: str, params: dict[str, Any], call_sid: str = "",
                 retry_delays_s: Sequence[float] = (0.1, 0.3, 1.0, 2.0),
                 give_up_after_s: float = 5.0, connect_timeout_s: float = 3.0,
                 keepalive_s: float = 4.0, backlog_s: float = 10.0, close_timeout_s: float = 1.0) -> None:
        self._client = AsyncDeepgramClient(api_key=api_key, environment=deepgram_environment(base_url),
                                           httpx_client=_unused_http_client())
        self.params = params
        self._retry_delays = tuple(retry_delays_s) or (1.0,)
        self._give_up_after_s = give_up_after_s
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._backlog_limit = int(backlog_s * self.bytes_per_s)
        self._max_message_bytes = self.bytes_per_s // 4   # a backlog goes out in messages of up to 250 ms
        self._close_timeout_s = close_timeout_s
        self._who = f" on {call_sid}" if call_sid else ""

        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._backlog: deque[bytes | str] = deque()   # audio, and Finalize / CloseStream in order
        self._wake = asyncio.Event()
        self._received = 0          # bytes of audio given to send(), ever
        self._queued = 0            # bytes of audio in the backlog
        self._last_sent = 0.0
        self._runner: asyncio.Task | None = None
        self._connected = False
        self._closing = False
        self._failed = False

        # What happened, for logs and tests.
        self.connections = 0
        self.keepalives_sent = 0
        self.dropped_audio_s = 0.0

    # --- what the listen version decides ------------------------------------------------------
    def _connect(self) -> Any:
        """The SDK's connect context manager for this stream's version and query."""
        raise NotImplementedError

    async def _keep_alive(self, socket) -> None:
        await socket.send_keep_alive()

    def _on_message(self, message: object, offset: float) -> None:
        raise NotImplementedError

    # --- the contract ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connects in the background: audio sent before the socket opens waits in the backlog."""
        if self._runner is None:
            self._last_sent = asyncio.get_running_loop().time()
            self._runner = asyncio.create_task(self._run(), name="deepgram-stream")

    async def send(self, audio: bytes) -> None:
        if self._closing or self._failed or not audio:
            return
        self._backlog.append(audio)
        self._received += len(audio)
        self._queued += len(audio)
        if self._queued > self._backlog_limit:
            self._trim_backlog()
        self._wake.set()

    async def finalize(self) -> None:
        """Local VAD heard the caller stop: ask Deepgram to flush (answered with from_finalize)."""
        if not (self._closing or self._failed):
            self._backlog.append(_FINALIZE)
            self._wake.set()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        runner = self._runner
        try:
            if runner is not None and not runner.done() and self._connected:
                self._backlog.append(_CLOSE)   # after the audio already queued
                self._wake.set()
                await asyncio.wait({runner}, timeout=self._close_timeout_s)
        finally:
            if runner is not None and not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            self._events.put_nowait(_END)

    async def events(self) -> AsyncIterator[AsrEvent]:
        """Recognition events until close(); a RecognizerFailed means no more will come."""
        while True:
            event = await self._events.get()
            if event is _END:
                return
            yield event

    # --- connection lifecycle ------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        outage_since = loop.time()   # not connected since (the start counts as an outage)
        attempt = 0
        while not self._closing:
            stack = AsyncExitStack()
            try:   # not asyncio.timeout: the SDK's connect ignores cancellation (services/handshake.py)
                socket = await enter_within(stack, self._connect(), self._connect_timeout_s,
                                            name="deepgram-connect")
            except Exception as exc:
                reason = _describe(exc)
                delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
                attempt += 1
                refused = getattr(exc, "status_code", None) in (400, 401, 402, 403, 404)
                if refused or loop.time() + delay - outage_since > self._give_up_after_s:
                    self._give_up(reason, attempt)
                    return
                log.warning("cannot connect to Deepgram%s (%s); retrying in %.1f s", self._who, reason, delay)
                await asyncio.sleep(delay)
                continue
            try:
                if self.connections:
                    log.info("reconnected to Deepgram%s after %.2f s; sending %.2f s of buffered audio",
                             self._who, loop.time() - outage_since, self._queued / self.bytes_per_s)
                self.connections += 1
                attempt = 0
                dropped = await self._serve(socket)
            finally:
                self._connected = False
                await _quietly(asyncio.wait_for(stack.aclose(), self._close_timeout_s))
            if dropped:
                outage_since = loop.time()
                log.warning("Deepgram connection dropped%s (%s); reconnecting, audio is kept meanwhile",
                            self._who, dropped)

    async def _serve(self, socket) -> str:
        """Carry audio and events over one connection until it ends; why it dropped, or ""."""
        offset = (self._received - self._queued) / self.bytes_per_s   # call time of the next byte sent
        self._connected = True
        sender = asyncio.create_task(self._pump(socket))
        receiver = asyncio.create_task(self._receive(socket, offset))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not sender.cancelled() and sender.exception() is None:
                # CloseStream went out: Deepgram flushes its last results, then closes.
                await asyncio.wait({receiver}, timeout=self._close_timeout_s)
                return ""
            if self._closing:
                return ""
            if receiver.done() and not receiver.cancelled() and receiver.exception() is None:
                return receiver.result()
            failed = sender if sender.done() else receiver
            return _describe(failed.exception()) if not failed.cancelled() else "cancelled"
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    def _give_up(self, reason: str, attempts: int) -> None:
        self._failed = True
        self._backlog.clear()
        self._queued = 0
        log.error("giving up on Deepgram%s after %d attempts: %s", self._who, attempts, reason)
        self._events.put_nowait(RecognizerFailed(f"speech recognition unavailable: {reason}"))

    # --- sending -----------------------------------------------------------------------------------
    async def _pump(self, socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._backlog:
                self._wake.clear()
                idle = loop.time() - self._last_sent
                if idle >= self._keepalive_s:
                    await self._keep_alive(socket)
                    self.keepalives_sent += 1
                    self._last_sent = loop.time()
                    continue
                try:
                    async with asyncio.timeout(self._keepalive_s - idle):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            item = self._backlog.popleft()
            if item is _FINALIZE:
                await socket.send_finalize()
            elif item is _CLOSE:
                await socket.send_close_stream()
                return
            elif not isinstance(item, str):   # audio, sent together with the audio right after it
                self._queued -= len(item)
                while self._backlog and len(item) < self._max_message_bytes:
                    more = self._backlog[0]
                    if isinstance(more, str):       # a Finalize or CloseStream goes out on its own
                        break
                    self._backlog.popleft()
                    self._queued -= len(more)
                    item += more
                try:
                    await socket.send_media(item)
                except BaseException:
                    self._backlog.appendleft(item)   # not (surely) sent: resend after reconnecting
                    self._queued += len(item)
                    raise
            self._last_sent = loop.time()

    def _trim_backlog(self) -> None:
        """Keep the newest `backlog_s` of audio; older audio (and stale Finalizes) go."""
        dropped = 0
        while self._queued > self._backlog_limit and self._backlog:
            item = self._backlog.popleft()
            if isinstance(item, str):
                continue
            self._queued -= len(item)
            dropped += len(item)
        if dropped:
            if not self.dropped_audio_s:
                log.warning("Deepgram backlog full%s: dropping the oldest audio", self._who)
            self.dropped_audio_s += dropped / self.bytes_per_s

    # --- receiving ---------------------------------------------------------------------------------
    async def _receive(self, socket, offset: float) -> str:
        """Map messages to events until the socket ends; returns how it ended."""
        try:
            async for message in socket:
                try:
                    self._on_message(message, offset)
                except Exception:  # one odd message must not cost the connection
                    log.exception("could not map a Deepgram message%s", self._who)
        except Exception as exc:  # the connection went away under us
            return _describe(exc)
        return "closed by Deepgram"

class DeepgramRecognizer(DeepgramStream):
    """listen v1 (Nova-3 and older): PCM16 in; Results, SpeechStarted and UtteranceEnd out."""

    def __init__(self, *, api_key: str, base_url: str, model: str, endpointing_ms: int,
                 utterance_end_ms: int, keyterms: Sequence[str] = (), **stream: Any) -> None:
        """`endpointing_ms` and `utterance_end_ms` of 0 turn each off; `keyterms` go to Nova-3 models only."""
        super().__init__(api_key=api_key, base_url=base_url,
                         params=self._query(model, endpointing_ms, utterance_end_ms, keyterms), **stream)
        self._finals_open = False   # final words heard since the caller's turn last closed
        self._interim_open = False  # interim words not yet made final
        self._last_word_end = 0.0   # call time of the end of the last final word

    @staticmethod
    def _query(model: str, endpointing_ms: int, utterance_end_ms: int, keyterms: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model, "encoding": "linear16", "sample_rate": SAMPLE_RATE,
            "channels": 1, "interim_results": True, "vad_events": True, "smart_format": True,
            "endpointing": endpointing_ms if endpointing_ms > 0 else False,
        }
        if utterance_end_ms > 0:
            if utterance_end_ms < 1000:
                log.warning("DEEPGRAM_UTTERANCE_END_MS=%d is below Deepgram's minimum; using 1000",
                            utterance_end_ms)
            params["utterance_end_ms"] = max(1000, utterance_end_ms)
        if model.startswith("nova-3"):  # keyterm prompting is Nova-3 only
            params["keyterm"] = list(keyterms)[:MAX_KEYTERMS]
        if model.startswith("nova"):
            # Without it Deepgram strips "uh" and "um" from transcripts, and a turn ending on one
            # ("I'd like to book, um") looks finished (services/receptionist/endings.py). The
            # SDK's connect has no such argument: it goes as an additional query parameter.
            params["request_options"] = {"additional_query_parameters": {"filler_words": "true"}}
        return params

    def _connect(self) -> Any:
        return self._client.listen.v1.connect(**self.params)

    def _on_message(self, message: object, offset: float) -> None:
        if isinstance(message, ListenV1Results):
            self._on_results(message, offset)
        elif isinstance(message, ListenV1SpeechStarted):
            self._events.put_nowait(SpeechStarted(offset + message.timestamp))
        elif isinstance(message, ListenV1UtteranceEnd):
            self._on_utterance_end(message, offset)
        elif isinstance(message, ListenV1Metadata):
            log.info("Deepgram stream metadata%s: request %s, %.1f s of audio",
                     self._who, message.request_id, message.duration)
        elif isinstance(message, ListenV1Error):
            log.warning("Deepgram error%s: %s: %s", self._who, message.variant, message.description)
        else:
            log.debug("ignored Deepgram message%s: %s", self._who, type(message).__name__)

    def _on_results(self, message: ListenV1Results, offset: float) -> None:
        alternatives = message.channel.alternatives if message.channel else []
        best = alternatives[0] if alternatives else None
        text = best.transcript.strip() if best else ""
        is_final = bool(message.is_final)
        # The answer to our Finalize closes the turn just as an endpoint does.
        speech_final = bool(message.speech_final) or (is_final and bool(message.from_finalize))
        if is_final:
            self._interim_open = False
            self._finals_open = self._finals_open or bool(text)
        elif text:
            self._interim_open = True
        if best is not None and is_final and best.words:
            self._last_word_end = offset + best.words[-1].end
        if speech_final:
            if not (text or self._finals_open or self._interim_open):
                return  # nothing was said since the turn last closed: nothing to close
            self._finals_open = self._interim_open = False
            if not text:
                # The endpoint came after the words were already final. An empty transcript
                # carries nothing to act on, so say what happened: the utterance is over.
                self._events.put_nowait(UtteranceEnd(self._last_word_end or offset + message.start))
                return
        elif not text:
            return
        start = offset + message.start
        self._events.put_nowait(Transcript(
            text=text, is_final=is_final, speech_final=speech_final,
            confidence=float(best.confidence) if best else 0.0,
            start_s=start, end_s=start + message.duration))

    def _on_utterance_end(self, message: ListenV1UtteranceEnd, offset: float) -> None:
        if not (self._finals_open or self._interim_open):
            return  # a speech_final already closed this utterance: a turn closes once
        self._finals_open = self._interim_open = False
        self._events.put_nowait(UtteranceEnd(offset + message.last_word_end))


def _describe(exc: BaseException | None) -> str:
    """A log-safe reason: the error's kind and status or close code, never headers or keys."""
    if exc is None:
        return "unknown"
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return f"closed with code {rcvd.code}" + (f" ({rcvd.reason})" if rcvd.reason else "")
    if type(exc).__name__.startswith("ConnectionClosed"):
        return "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception:
        pass
