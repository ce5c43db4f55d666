"""Twilio Media Streams wire format, both directions, in one place.

Inbound JSON text frames become typed, frozen dataclasses (numbers that Twilio sends as strings
become ints; the base64 payload becomes mu-law bytes). Outbound messages are built here only, so
the rest of Zylin never touches a raw dict. The `inbound_*` builders are what Twilio would send;
the simulated caller uses them.

Reading is strict because anything but a ProtocolError escaping `parse_event` would end a live
call: numbers are whole, finite and at most 18 digits (NaN and Infinity are not JSON at all),
tracks are a list of names, and any other failure inside the parser is a ProtocolError too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import reprlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class ProtocolError(ValueError):
    """A frame that is not a well-formed Media Streams event; it is logged and dropped."""


MAX_DIGITS = 18  # Twilio's counters and rates fit a signed 64-bit int with room to spare
_INT_LIMIT = 10 ** MAX_DIGITS
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes  # mu-law 8 kHz


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    call_sid: str


InboundEvent = Connected | Start | Media | Dtmf | Mark | Stop


def _section(msg: dict, key: str) -> dict:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"'{msg.get('event')}' event without a '{key}' object")
    return value


def _str(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"missing or non-string field '{key}'")
    return value


def _int(obj: dict, key: str) -> int:
    """A whole number: ASCII digits in a string, as Twilio sends them, or a JSON integer.

    Not a float (1.5 would pass as 1, Infinity would raise OverflowError), nor a bool, nor the
    signs, spaces, underscores and non-ASCII digits that int() would take from a string.
    """
    value = obj.get(key)
    if value.__class__ is str:
        if value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
            return int(value)
    elif value.__class__ is int and 0 <= value < _INT_LIMIT:
        return value
    raise ProtocolError(f"field '{key}' is not a whole number: {_shown(value)}")


def _tracks(start: dict) -> tuple[str, ...]:
    """The tracks this stream carries: a list of names (tuple() of a string would split it)."""
    tracks = start.get("tracks")
    if tracks is None or tracks == []:
        return ("inbound",)
    if tracks.__class__ is list and all(t.__class__ is str and t for t in tracks):
        return tuple(tracks)
    raise ProtocolError(f"field 'tracks' is not a list of track names: {_shown(tracks)}")


def _shown(value: object) -> str:
    """A bad value for an error message: shortened, since a frame may be 16 KB of it."""
    return _REPR.repr(value)


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"frame is not valid JSON ({name} is not a number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON text, but no number Twilio could mean
        raise ProtocolError(f"frame is not valid JSON ({_shown(text)} overflows)")
    return value


# Only NaN/Infinity and floats reach these hooks: frames without them decode at full speed.
_decode = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def _media(msg: dict) -> Media:
    """50 times a second per call: the same checks as _section/_str, inlined (bench/frame_cost)."""
    media = msg.get("media")
    if not isinstance(media, dict):
        raise ProtocolError("'media' event without a 'media' object")
    payload = media.get("payload")
    if not isinstance(payload, str) or not payload:
        raise ProtocolError("missing or non-string field 'payload'")
    try:  # what base64.b64decode(validate=True) does, minus its wrappers
        ulaw = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:  # binascii.Error, or a payload that is not even ASCII
        raise ProtocolError("media payload is not valid base64") from None
    stream_sid = msg.get("streamSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise ProtocolError("missing or non-string field 'streamSid'")
    return Media(stream_sid, str(media.get("track", "inbound")), _int(media, "chunk"),
                 _int(media, "timestamp"), ulaw)


def _start(msg: dict) -> Start:
    start = _section(msg, "start")
    fmt = start.get("mediaFormat") or {}
    params = start.get("customParameters") or {}
    if not isinstance(fmt, dict) or not isinstance(params, dict):
        raise ProtocolError("start event with malformed mediaFormat or customParameters")
    return Start(
        stream_sid=_str(start, "streamSid"),
        call_sid=_str(start, "callSid"),
        account_sid=str(start.get("accountSid", "")),
        tracks=_tracks(start),
        encoding=str(fmt.get("encoding", "audio/x-mulaw")),
        sample_rate=_int(fmt, "sampleRate") if "sampleRate" in fmt else 8000,
        channels=_int(fmt, "channels") if "channels" in fmt else 1,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def parse_event(text: str) -> InboundEvent:
    """Parse one inbound text frame or raise ProtocolError saying what is wrong with it."""
    try:
        msg = _decode(text)
    except ProtocolError:
        raise
    except Exception:  # JSONDecodeError, RecursionError, an integer of over 4,300 digits
        raise ProtocolError("frame is not valid JSON") from None
    if msg.__class__ is not dict:
        raise ProtocolError("frame is not a JSON object")
    try:  # free in CPython 3.11+ unless something raises
        event = msg.get("event")
        if event == "media":
            return _media(msg)
        return _event(msg, event)
    except ProtocolError:
        raise
    except Exception as exc:  # a reader's oversight must drop the frame, not end the call
        raise ProtocolError(f"frame could not be read ({type(exc).__name__})") from exc


def _event(msg: dict, event: object) -> InboundEvent:
    """Every event but media, which parse_event reads first (50 a second)."""
    if event == "mark":
        return Mark(stream_sid=_str(msg, "streamSid"), name=_str(_section(msg, "mark"), "name"))
    if event == "dtmf":
        return Dtmf(stream_sid=_str(msg, "streamSid"), digit=_str(_section(msg, "dtmf"), "digit"))
    if event == "start":
        return _start(msg)
    if event == "stop":
        stop = msg.get("stop")
        if not isinstance(stop, dict):
            stop = {}
        return Stop(stream_sid=_str(msg, "streamSid"), call_sid=str(stop.get("callSid", "")))
    if event == "connected":
        return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))
    raise ProtocolError(f"unknown event {event!r}")


# --- outbound: what Zylin sends to Twilio ---------------------------------------------------

def media_message(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


# --- inbound builders: what Twilio sends (used by the simulated caller) ----------------------

def inbound_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def inbound_start(seq: int, stream_sid: str, call_sid: str, account_sid: str,
                  custom_parameters: dict[str, str]) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": str(seq), "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid, "streamSid": stream_sid, "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom_parameters,
        },
    })


def inbound_media(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return (f'{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}",'
            f'"media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}",'
            f'"payload":"{payload}"}}}}')


def inbound_dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return json.dumps({"event": "dtmf", "sequenceNumber": str(seq), "streamSid": stream_sid,
                       "dtmf": {"track": "inbound_track", "digit": digit}})


def inbound_mark(seq: int, stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid,
                       "mark": {"name": name}})


def inbound_stop(seq: int, stream_sid: str, call_sid: str, account_sid: str) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid,
                       "stop": {"accountSid": account_sid, "callSid": call_sid}})


# --- outbound parsing: what the simulated caller reads --------------------------------------

@dataclass(frozen=True, slots=True)
class Outbound:
    event: str          # media | mark | clear
    stream_sid: str
    payload: bytes = b""
    name: str = ""


def parse_outbound(text: str) -> Outbound:
    """Strict reading of a message Zylin sent, as Twilio would reject anything malformed."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError("outbound frame is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("outbound frame is not a JSON object")
    event = msg.get("event")
    sid = msg.get("streamSid")
    if not isinstance(sid, str) or not sid:
        raise ProtocolError(f"outbound {event!r} without streamSid")
    try:
        if event == "media":
            return Outbound("media", sid, payload=base64.b64decode(msg["media"]["payload"], validate=True))
        if event == "mark":
            return Outbound("mark", sid, name=str(msg["mark"]["name"]))
    except (KeyError, TypeError, binascii.Error):
        raise ProtocolError(f"outbound {event!r} is malformed") from None
    if event == "clear":
        return Outbound("clear", sid)
    raise ProtocolError(f"Twilio does not accept outbound event {event!r}")


log = logging.getLogger("zylin.telephony.media")

SEND_TIMEOUT_S = 5.0  # Settings.send_timeout_s's default
_now = time.monotonic


class StreamSender:
    """Zylin's side of one Media Stream: well-formed messages only, one writer at a time.

    A dead socket flips `closed` instead of raising, so the conversation engine winds down
    through its normal path rather than through a stack of send errors.

    Every send, the close included, is bounded by `timeout_s`: a send waits while the socket's
    write buffer is full, and a peer that stopped reading never empties it. Past the bound the
    sender gives up for good (`stuck`) and calls `abort`, which drops the connection: the waiting
    send then fails as on any dead socket, and the receive loop sees the stream end. (Without an
    `abort`, a stuck send waits until the session ends; the close is bounded either way.)

    The sends' bound is one timer per sender, not one per send: a send only stamps when it
    began, and the timer, armed at most once per `timeout_s`, looks at the stamp. An
    `asyncio.timeout` per send costs ~4.5 µs, this ~0.1 µs (docs/security.md, "Limits and their
    settings").
    """

    def __init__(self, send_text: Callable[[str], Awaitable[None]], stream_sid: str,
                 close: Callable[[], Awaitable[None]] | None = None, *,
                 timeout_s: float = SEND_TIMEOUT_S, abort: Callable[[], None] | None = None) -> None:
        self._send_text = send_text
        self._close = close
        self._abort = abort
        self._timeout_s = timeout_s
        self.stream_sid = stream_sid
        self.closed = False
        self.stuck = False                  # a send outlived timeout_s: the peer stopped reading
        self._close_sent = False
        self._lock = asyncio.Lock()
        self._since: float | None = None    # when the pending send began (time.monotonic)
        self._watch: asyncio.TimerHandle | None = None

    async def _send(self, text: str) -> bool:
        if self.closed:
            return False
        async with self._lock:
            if self.closed:  # the send we queued behind found the socket dead
                return False
            self._began()
            try:
                await self._send_text(text)
            except Exception:
                self.closed = True
                return False
            finally:
                self._since = None
        return True

    async def media(self, ulaw: bytes) -> bool:
        return await self._send(media_message(self.stream_sid, ulaw))

    async def mark(self, name: str) -> bool:
        return await self._send(mark_message(self.stream_sid, name))

    async def clear(self) -> bool:
        return await self._send(clear_message(self.stream_sid))

    async def close(self) -> None:
        """End the stream from our side; with nothing after </Connect> Twilio hangs up."""
        self.closed = True
        if self._close_sent:
            return
        self._close_sent = True
        if self._close is not None:
            try:  # once per call: a plain timeout, so the close is bounded even without `abort`
                async with asyncio.timeout(self._timeout_s):
                    await self._close()
            except TimeoutError:
                self._give_up()
            except Exception:
                pass

    # --- the bound ------------------------------------------------------------------------

    def _began(self) -> None:
        self._since = _now()
        if self._watch is None:
            self._arm(self._timeout_s)

    def _arm(self, delay_s: float) -> None:
        self._watch = asyncio.get_running_loop().call_later(delay_s, self._check)

    def _check(self) -> None:
        """The timer: give up on a send older than the bound, else look again when it would be."""
        self._watch = None
        since = self._since
        if since is None or self.stuck:
            return  # idle: the next send arms the timer again
        waited = _now() - since
        if waited >= self._timeout_s:
            self._give_up()
        else:
            self._arm(self._timeout_s - waited)

    def release(self) -> None:
        """The stream is over: its timer goes (it would keep the sender alive until it fired)."""
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _give_up(self) -> None:
        """The peer has read nothing for `timeout_s`: drop the connection, once."""
        self.closed = True
        if self.stuck:
            return
        self.stuck = True
        self._close_sent = True  # a close frame would wait behind the same full buffer
        log.warning("media stream %s: a send waited %s s (Twilio stopped reading); dropping the "
                    "connection", self.stream_sid, self._timeout_s)
        if self._abort is not None:
            self._abort()
