"""Deepgram Aura over one speak WebSocket per call (speak v1): no TLS and HTTP set-up per sentence,
so a sentence's first audio comes a round trip sooner than by REST. Same voice, same bytes.

Each sentence is `Speak` + `Flush`; the socket answers with its audio, then `Flushed`. Sentences
may overlap (the speaker synthesizes one ahead), so audio is attributed in order: what arrives
before the first outstanding `Flushed` is the oldest sentence's. One sender task writes the
socket, so messages go out in the order they were asked for; one receiver task sorts what comes
back. A sentence closed before its `Flushed` (barge-in, a stall) sends `Clear`: Deepgram empties
its whole buffer, so every later sentence still on the socket fails at once (the speaker hands it
to the fallback voice), and audio is dropped until `Cleared`.

Deepgram processes 20 Flushes per 60 s per connection; past that a sentence goes by REST (the
AuraSynthesizer this stream was made from). A dropped socket fails what was on it and is reopened
at once in the background, so the next sentence finds it warm. Deepgram documents no KeepAlive
for this socket; a socket it closes while idle is simply reopened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deepgram.speak.v1.types import SpeakV1Text

from services.handshake import enter_within
from services.storage.vocabulary import EventKind
from services.tts.base import AudioEncoding, EventHook

if TYPE_CHECKING:
    from services.tts.deepgram_aura import AuraSynthesizer

log = logging.getLogger("zylin.tts.aura")

FLUSH_LIMIT = 20          # Flush messages Deepgram processes per window, per connection
FLUSH_WINDOW_S = 60.0     # https://developers.deepgram.com/docs/tts-ws-flush

_FLUSH, _CLEAR, _CLOSE = "Flush", "Clear", "Close"


class AuraStreamError(ConnectionError):
    """The socket could not say a sentence; the message is log-safe (a reason, never text)."""


class VoiceUnavailable(AuraStreamError):
    """The speak socket cannot be opened (refused, unreachable, or timed out)."""


class VoiceDropped(AuraStreamError):
    """The socket closed or failed while the sentence was on it."""


class VoiceInterrupted(AuraStreamError):
    """Another sentence's Clear (barge-in) emptied Deepgram's buffer, this sentence with it."""


class FlushRefused(AuraStreamError):
    """Deepgram warned that it will process no more Flushes for now."""


@dataclass(eq=False)
class _Job:
    """One sentence on the socket: its audio as it comes, then None (or the error that ended it)."""
    sequence: int                     # the Flushed's sequence_id it expects
    audio: asyncio.Queue[bytes | BaseException | None] = field(default_factory=asyncio.Queue)
    done: bool = False

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.audio.put_nowait(error)


@dataclass(eq=False)
class _Connection:
    """One open speak socket and what is outstanding on it."""
    socket: Any                       # the SDK's AsyncV1SocketClient
    stack: AsyncExitStack             # closes it
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    jobs: deque[_Job] = field(default_factory=deque)
    flushes: int = 0                  # Flushes asked for on this connection
    clears_sent: int = 0
    clears_acked: int = 0
    closed: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def clearing(self) -> bool:
        """A Clear is unanswered: what arrives now belongs to sentences already given up."""
        return self.clears_acked < self.clears_sent


class AuraStream:
    """One call's Aura voice; made by `AuraSynthesizer.for_call`, ended by `close()`."""

    sample_rate = 8000
    encoding: AudioEncoding = "mulaw"

    def __init__(self, rest: AuraSynthesizer, *, on_event: EventHook | None = None,
                 connect_timeout_s: float = 5.0, retry_after_s: float = 1.0, clear_timeout_s: float = 2.0,
                 close_timeout_s: float = 1.0, flush_limit: int = FLUSH_LIMIT,
                 flush_window_s: float = FLUSH_WINDOW_S) -> None:
        """`retry_after_s`: after a failed connect, sentences fail at once for this long rather
        than each waiting on a new attempt; `clear_timeout_s`: a Clear not answered by then
        means the socket is broken, and it is reopened."""
        self._rest = rest
        self.model = rest.model
        self.cache_key = rest.cache_key               # the same voice and bytes as the REST path
        self._on_event = on_event
        self._connect_timeout_s = connect_timeout_s
        self._retry_after_s = retry_after_s
        self._clear_timeout_s = clear_timeout_s
        self._close_timeout_s = close_timeout_s
        self._flush_limit = flush_limit
        self._flush_window_s = flush_window_s
        self._flush_times: deque[float] = deque()     # Flushes sent in the current window
        self._overflow_logged_at: float | None = None
        self._conn: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._closed = False
        # What happened, for logs and tests.
        self.connections = 0
        self.reconnects = 0
        self.rest_sentences = 0
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return                                    # made outside a loop: opens on first use
        self._open_soon()                             # pre-warm: open before the first sentence

    def for_call(self, on_event: EventHook | None = None) -> AuraStream:
        return self  # already one call's voice

    # --- speaking ------------------------------------------------------------------------------
    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text` as it arrives; closing early sends Clear. Raises an AuraStreamError
        when the socket cannot say it (the speaker then tries its fallback voice)."""
        stamp = self._take_flush()
        if stamp is None:
            self.rest_sentences += 1
            async with aclosing(self._rest.synthesize(text)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        try:
            conn = await self._connection()
        except BaseException:
            with suppress(ValueError):        # never sent: it does not count
                self._flush_times.remove(stamp)
            raise
        job = _Job(conn.flushes)
        conn.flushes += 1
        conn.jobs.append(job)
        conn.outbox.put_nowait(SpeakV1Text(text=text))
        conn.outbox.put_nowait(_FLUSH)
        try:
            while (item := await job.audio.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not job.done:   # closed before its Flushed: no await here, it may be a cancellation
                self._abandon(conn, job)

    def _take_flush(self) -> float | None:
        """Count a Flush against the rolling window (its time); None when none is left in it."""
        now = asyncio.get_running_loop().time()
        while self._flush_times and now - self._flush_times[0] >= self._flush_window_s:
            self._flush_times.popleft()
        if len(self._flush_times) >= self._flush_limit:
            if self._overflow_logged_at is None or now - self._overflow_logged_at >= self._flush_window_s:
                self._overflow_logged_at = now
                log.info("Deepgram's flush limit (%d per %.0f s) is reached on this call's socket; "
                         "sentences go by REST until the window frees up", self._flush_limit, self._flush_window_s)
            return None
        self._flush_times.append(now)
        return now

    def _abandon(self, conn: _Connection, job: _Job) -> None:
        """A sentence closed before its Flushed: Clear empties Deepgram's whole buffer, so every
        other sentence still on the socket fails now, and audio is dropped until Cleared."""
        job.done = True
        if conn.closed:
            return
        others = [other for other in conn.jobs if other is not job]
        conn.jobs.clear()
        for other in others:
            other.finish(VoiceInterrupted("cleared with an earlier sentence"))
        self._clear(conn)

    def _clear(self, conn: _Connection) -> None:
        conn.clears_sent += 1
        conn.outbox.put_nowait(_CLEAR)
        asyncio.get_running_loop().call_later(self._clear_timeout_s, self._check_cleared, conn, conn.clears_sent)

    def _check_cleared(self, conn: _Connection, clears: int) -> None:
        if not conn.closed and conn.clears_acked < clears:
            self._lost(conn, f"no Cleared within {self._clear_timeout_s:.1f} s")

    # --- the connection --------------------------------------------------------------------------
    async def _connection(self) -> _Connection:
        """The open socket; waits for one being opened; raises VoiceUnavailable promptly."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise VoiceUnavailable("the call's voice is closed")
        opening = self._opening
        if opening is None or opening.done():
            loop = asyncio.get_running_loop()
            if self._failed_at is not None and loop.time() - self._failed_at < self._retry_after_s:
                raise VoiceUnavailable(f"Deepgram speak socket unavailable: {self._failure}")
            opening = self._open_soon()
        conn = await asyncio.shield(opening)   # a sentence given up on must not cancel the connect
        if conn.closed:
            raise VoiceDropped("Deepgram speak socket closed as it opened")
        return conn

    def _open_soon(self) -> asyncio.Task[_Connection]:
        if self._opening is None or self._opening.done():
            self._opening = asyncio.get_running_loop().create_task(self._open(), name="aura-stream-connect")
            self._opening.add_done_callback(_retrieve)
        return self._opening

    async def _open(self) -> _Connection:
        stack = AsyncExitStack()
        try:  # the SDK's handshake ignores a cancellation for up to 10 s: bounded by enter_within
            socket = await enter_within(stack, self._rest.client.speak.v1.connect(
                model=self.model, encoding="mulaw", sample_rate=8000), self._connect_timeout_s,
                name="aura-stream-handshake")
        except Exception as exc:
            self._failed_at, self._failure = asyncio.get_running_loop().time(), _reason(exc)
            log.warning("cannot open the Deepgram speak socket (%s)", self._failure)
            raise VoiceUnavailable(f"Deepgram speak socket unavailable: {self._failure}") from None
        conn = _Connection(socket, stack)
        if self._closed:
            await _quietly(stack.aclose())
            raise VoiceUnavailable("the call's voice is closed")
        self._conn, self._failed_at = conn, None
        self.connections += 1
        conn.tasks = [asyncio.create_task(self._send(conn), name="aura-stream-send"),
                      asyncio.create_task(self._receive(conn), name="aura-stream-receive")]
        return conn

    def _lost(self, conn: _Connection, reason: str) -> None:
        """The socket is gone: what was on it fails, and (unless the call is over) a new one opens."""
        if conn.closed:
            return
        conn.closed = True
        jobs = list(conn.jobs)
        conn.jobs.clear()
        for job in jobs:
            job.finish(VoiceDropped(f"Deepgram speak socket {reason}"))
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        if self._conn is conn:
            self._conn = None
        if self._closed:
            return
        self.reconnects += 1
        log.warning("Deepgram speak socket lost (%s) with %d sentence(s) on it; reopening", reason, len(jobs))
        if self._on_event is not None:
            try:
                self._on_event(EventKind.TTS_RECONNECT, provider="deepgram", reason=reason)
            except Exception:
                log.exception("could not report a speak socket reconnect")
        self._failed_at = None   # a drop is not a refusal: try again at once
        self._open_soon()

    async def _send(self, conn: _Connection) -> None:
        """Write the outbox in order; a failed write loses the socket."""
        try:
            while True:
                item = await conn.outbox.get()
                if item == _FLUSH:
                    await conn.socket.send_flush()
                elif item == _CLEAR:
                    await conn.socket.send_clear()
                elif item == _CLOSE:
                    await conn.socket.send_close()
                    return
                else:
                    await conn.socket.send_text(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(conn, _reason(exc))

    async def _receive(self, conn: _Connection) -> None:
        """Sort what comes back until the socket ends, then close it."""
        reason = "closed by Deepgram"
        try:
            async for message in conn.socket:
                try:
                    self._on_message(conn, message)
                except Exception:  # one odd message must not cost the connection
                    log.exception("could not handle a Deepgram speak message")
            code = getattr(getattr(conn.socket, "_websocket", None), "close_code", None)
            if code is not None:
                reason = f"closed with code {code}"
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as exc:
            reason = _reason(exc)
        finally:
            self._lost(conn, reason)
            await _quietly(asyncio.wait_for(conn.stack.aclose(), self._close_timeout_s))

    def _on_message(self, conn: _Connection, message: object) -> None:
        if isinstance(message, bytes):
            if conn.jobs and not conn.clearing:
                conn.jobs[0].audio.put_nowait(message)
            return   # audio of sentences already given up on
        # Dispatch on `type`: the SDK parses Cleared, and a Warning in Deepgram's real shape
        # (warn_code / warn_msg), as its Flushed model.
        kind = getattr(message, "type", None)
        if kind == "Flushed":
            self._flushed(conn, getattr(message, "sequence_id", None))
        elif kind == "Cleared":
            conn.clears_acked += 1
        elif kind == "Warning":
            self._warned(conn, message)
        elif kind == "Metadata":
            log.debug("Deepgram speak socket open: request %s", getattr(message, "request_id", "?"))
        else:
            log.debug("ignored Deepgram speak message: %s", kind)

    def _flushed(self, conn: _Connection, sequence: object) -> None:
        if conn.clearing or not conn.jobs:
            return   # the Flushed of a sentence already given up on
        job = conn.jobs[0]
        if isinstance(sequence, int) and sequence < job.sequence:
            log.debug("stale Flushed %d (expected %d)", sequence, job.sequence)
            return
        if sequence != job.sequence:
            log.debug("Flushed %s out of step (expected %d); attributing in order", sequence, job.sequence)
        conn.jobs.popleft()
        job.finish()

    def _warned(self, conn: _Connection, message: object) -> None:
        code = str(getattr(message, "warn_code", None) or getattr(message, "code", None) or "")
        about = str(getattr(message, "warn_msg", None) or getattr(message, "description", None) or "")
        log.warning("Deepgram speak warning: %s", code or "(no code)")
        if "FLUSH" not in code.upper() and "flush" not in about.lower():
            return
        # The refused Flush's text stays in Deepgram's buffer: clear it, fail what waits on it,
        # and send the rest of this window by REST.
        now = asyncio.get_running_loop().time()
        while len(self._flush_times) < self._flush_limit:
            self._flush_times.append(now)
        jobs = list(conn.jobs)
        conn.jobs.clear()
        for job in jobs:
            job.finish(FlushRefused("Deepgram refused a Flush (flush limit)"))
        if jobs:
            self._clear(conn)

    # --- the end ---------------------------------------------------------------------------------
    async def close(self) -> None:
        """Send Close and end the socket; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            opening = self._opening
            if opening is not None and not opening.done():
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)
            conn = self._conn
            if conn is not None and not conn.closed:
                conn.outbox.put_nowait(_CLOSE)
                await asyncio.wait(conn.tasks, timeout=self._close_timeout_s)
                self._lost(conn, "closed by Zylin")
                await asyncio.gather(*conn.tasks, return_exceptions=True)
        except Exception:
            log.exception("closing the Deepgram speak socket failed")


def _reason(exc: BaseException) -> str:
    """A log-safe reason: a status or close code, never headers, keys, text or close reasons."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return f"closed with code {rcvd.code}"
    if type(exc).__name__.startswith("ConnectionClosed"):
        return "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'connection failed'}"
    return type(exc).__name__


def _retrieve(task: asyncio.Task) -> None:
    """A pre-warm nobody awaited failed: its error is logged already; do not warn again."""
    if not task.cancelled():
        task.exception()


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        pass
