"""WS /media-stream: one Twilio Media Stream per connection, handed to a CallSession.

This edge only validates and dispatches: malformed or unexpected frames are logged and dropped
(never ending the call), and whatever ends the socket ends the session cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TypeGuard

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.orchestrator.session import CallSession
from services.runtime import Runtime
from services.server import abort_of
from services.settings import Settings
from services.storage.vocabulary import EndReason
from services.telephony.media_streams import (
    Connected,
    Dtmf,
    Mark,
    Media,
    ProtocolError,
    Start,
    Stop,
    StreamSender,
    parse_event,
)

log = logging.getLogger("zylin.api.media")

POLICY_VIOLATION = 1008


class Drops:
    """Counts dropped frames; logs the first of each kind, the totals at the end."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def drop(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            log.warning("dropped a frame (%s): %s", kind, detail)


def _ours(session: CallSession | None, stream_sid: str, drops: Drops) -> TypeGuard[CallSession]:
    """Whether an event names this connection's stream; one for another is dropped."""
    if session is None:
        return False
    if stream_sid != session.info.stream_sid:
        drops.drop("wrong stream", stream_sid)
        return False
    return True


def _sender(websocket: WebSocket, stream_sid: str, settings: Settings) -> StreamSender:
    """Sends bounded by SEND_TIMEOUT_S; past it the connection is aborted (services/server.py)."""
    return StreamSender(websocket.send_text, stream_sid, websocket.close,
                        timeout_s=settings.send_timeout_s, abort=abort_of(websocket.scope))


async def _receive_before_start(websocket: WebSocket, deadline: float) -> Message | None:
    """The next message, or None once the `start` event's deadline has passed."""
    try:
        async with asyncio.timeout_at(deadline):
            return await websocket.receive()
    except TimeoutError:
        return None


async def _close_bounded(websocket: WebSocket, code: int, reason: str, timeout_s: float) -> None:
    """Close, or abort when the close frame cannot even be written (the peer reads nothing)."""
    try:
        async with asyncio.timeout(timeout_s):
            await websocket.close(code=code, reason=reason)
    except TimeoutError:
        if (abort := abort_of(websocket.scope)) is not None:
            abort()
    except Exception:
        pass  # already gone


def _end_reason(session: CallSession, reason: str) -> str:
    """The session's own reason if it ended the call, then a stuck socket, then the loop's."""
    if session.end_reason:
        return session.end_reason
    return EndReason.STUCK if session.sender.stuck else reason


async def media_stream(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    settings = runtime.settings
    signature = websocket.headers.get("x-twilio-signature")
    await websocket.accept()
    if not runtime.signatures.valid(settings.media_stream_url, {}, signature):
        log.warning("media stream: invalid Twilio signature; closing")
        await websocket.close(code=POLICY_VIOLATION, reason="invalid signature")
        return

    session: CallSession | None = None
    drops = Drops()
    reason = EndReason.SOCKET_CLOSED
    start_deadline = asyncio.get_running_loop().time() + settings.start_timeout_s
    try:
        while True:
            if session is not None:
                message = await websocket.receive()
            elif (before_start := await _receive_before_start(websocket, start_deadline)) is None:
                log.warning("media stream: no start event within %s s; closing", settings.start_timeout_s)
                await _close_bounded(websocket, POLICY_VIOLATION, "no start event", settings.send_timeout_s)
                return
            else:
                message = before_start
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                drops.drop("binary", "Media Streams frames are JSON text")
                continue
            if len(text) > settings.max_ws_message_bytes:
                drops.drop("oversize", f"{len(text)} bytes")
                continue
            try:
                event = parse_event(text)
            except ProtocolError as exc:
                drops.drop("malformed", str(exc))
                continue

            if isinstance(event, Media):
                if session is None:
                    drops.drop("before start", "media before the start event")
                elif event.stream_sid != session.info.stream_sid:
                    drops.drop("wrong stream", event.stream_sid)
                else:
                    await session.on_media(event.payload)
            elif isinstance(event, Mark):
                if _ours(session, event.stream_sid, drops):
                    session.on_mark(event.name)
            elif isinstance(event, Dtmf):
                if _ours(session, event.stream_sid, drops):
                    await session.on_dtmf(event.digit)
            elif isinstance(event, Start):
                if session is not None:
                    drops.drop("second start", event.stream_sid)
                    continue
                claim = await runtime.admit_stream(event)
                if isinstance(claim, str):
                    log.warning("media stream for %s refused: %s", event.call_sid, claim)
                    await websocket.close(code=POLICY_VIOLATION, reason=claim)
                    return
                sender = _sender(websocket, event.stream_sid, settings)
                session = await runtime.open_session(event, sender)
                await session.start()
            elif isinstance(event, Stop):
                if session is not None and not _ours(session, event.stream_sid, drops):
                    continue  # another stream's stop must not end this call
                reason = EndReason.STOP_EVENT
                break
            elif isinstance(event, Connected):
                continue
    except WebSocketDisconnect:
        reason = EndReason.SOCKET_CLOSED
    except Exception:
        log.exception("media stream failed")
        reason = EndReason.ERROR
    finally:
        if session is not None:
            await session.stop(_end_reason(session, reason))
            session.sender.release()
        if drops.counts:
            log.warning("media stream dropped frames: %s", dict(drops.counts))
