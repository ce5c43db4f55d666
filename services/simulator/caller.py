"""A simulated Twilio caller: Twilio's webhook + Media Streams side, and a person on the phone.

It places a call the way Twilio does (signed voice webhook, TwiML, signed WebSocket upgrade,
`connected`/`start`, a `media` frame every 20 ms whether anyone speaks or not), plays what the
server sends through a playout buffer as a phone would (marks echoed once the audio before them
has played, `clear` drops the buffer and echoes the pending marks at once), and follows a script
of caller lines: wait for the bot to finish, pause, speak — or barge in, or press a key.

Everything it saw and did is returned in a `CallResult`, with monotonic timestamps, for the demo,
the end-to-end tests and the benchmarks. `speed` > 1 runs the whole call faster than real time
(all pacing and script delays shrink by that factor; stream timestamps stay in audio time).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.audio.codec import FRAME_BYTES, FRAME_MS
from services.simulator.voice import speech_ulaw
from services.simulator.wav import write_ulaw_wav
from services.telephony import media_streams as wire

SILENCE_FRAME = b"\xff" * FRAME_BYTES  # mu-law of PCM 0
BOGUS_SIGNATURE = "c2lnbmVkIGJ5IG5vYm9keQ=="  # well-formed base64, signed by nobody
TWILIO_USER_AGENT = "Twilio.TmeWs/1.0"


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class CallerLine:
    """One thing the caller does: say `text`, or press `dtmf`."""

    text: str = ""                         # what the caller says (mock ASR reads it from mockScript)
    pause_before_ms: int = 500             # silence after the bot's reply finished, before speaking
    barge_in_after_ms: int | None = None   # speak this long after the bot's reply starts playing
    dtmf: str | None = None                # press this key instead of speaking
    wait_for_reply: bool = True            # False: go on after `pause_before_ms` whatever the bot does


class Received(NamedTuple):
    t: float            # monotonic arrival time
    event: str          # media | mark | clear
    nbytes: int         # media payload length (0 otherwise)
    mark: str           # mark name ("" otherwise)


class LineTiming(NamedTuple):
    text: str
    start: float        # monotonic: first voiced frame sent
    end: float          # monotonic: last voiced frame sent


@dataclass
class CallResult:
    call_sid: str
    stream_sid: str = ""
    webhook_status: int | None = None
    twiml: str = ""
    stream_url: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    handshake_status: int | None = None     # HTTP status when the WebSocket upgrade was refused
    received: list[Received] = field(default_factory=list)
    heard_ulaw: bytes = b""                 # the caller's ear: one 160-byte frame per 20 ms tick
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    lines: list[LineTiming] = field(default_factory=list)       # spoken lines only
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    closed_by_server: bool = False
    close_code: int | None = None           # the code the server closed with
    started_at: float | None = None         # monotonic: `start` sent
    ended_at: float | None = None           # monotonic: stream over (stop sent or socket closed)
    speed: float = 1.0

    @property
    def connected(self) -> bool:
        return self.started_at is not None

    def heard_wav(self, path: str | Path) -> Path:
        """8 kHz 16-bit mono WAV of what the caller heard, silence included (a true timeline)."""
        return write_ulaw_wav(path, self.heard_ulaw)

    def media_payloads(self) -> list[bytes]:
        return list(self._payloads)

    def audio_by_mark(self) -> dict[str, bytes]:
        """What each sentence sounded like: the audio received before its mark (a reply's
        `<gen>.start` mark, right after its first frame, splits no sentence)."""
        out: dict[str, bytes] = {}
        pending = bytearray()
        payloads = iter(self._payloads)
        for received in self.received:
            if received.event == "media":
                pending += next(payloads)
            elif received.event == "mark" and not received.mark.endswith(".start"):
                out[received.mark] = bytes(pending)
                pending.clear()
        return out

    def first_media_after(self, t: float) -> float | None:
        """Arrival time of the first media message received after monotonic time `t`."""
        return next((r.t for r in self.received if r.event == "media" and r.t > t), None)

    def reply_latencies_ms(self) -> list[float | None]:
        """Per spoken line: line end -> first reply media received (None: no reply came)."""
        out: list[float | None] = []
        for line in self.lines:
            first = self.first_media_after(line.end)
            out.append(None if first is None else (first - line.end) * 1000.0)
        return out

    # payloads are kept beside `received` so the record stays small to print
    _payloads: list[bytes] = field(default_factory=list, repr=False)


class SimulatedCaller:
    """Places calls against a Zylin server the way Twilio and a phone caller would."""

    def __init__(self, base_url: str, public_url: str, auth_token: str = "", *, speed: float = 1.0,
                 from_number: str = "+15551230001", to_number: str = "+15559870000",
                 account_sid: str | None = None, call_sid: str | None = None,
                 reply_timeout_s: float = 20.0, quiet_ms: int = 300) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.base_url = base_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.speed = speed
        self.from_number = from_number
        self.to_number = to_number
        self.account_sid = account_sid or _sid("AC")
        self.call_sid = call_sid
        self.reply_timeout_s = reply_timeout_s
        self.quiet_ms = quiet_ms

    # --- control plane ------------------------------------------------------------------------

    def _signature(self, url: str, params: dict[str, str], sign: bool) -> dict[str, str]:
        if not self.auth_token:
            return {}
        if not sign:
            return {"X-Twilio-Signature": BOGUS_SIGNATURE}
        return {"X-Twilio-Signature": RequestValidator(self.auth_token).compute_signature(url, params)}

    async def _webhook(self, result: CallResult, sign: bool) -> None:
        form = {
            "CallSid": result.call_sid, "AccountSid": self.account_sid,
            "From": self.from_number, "To": self.to_number, "Caller": self.from_number,
            "Called": self.to_number, "CallStatus": "ringing", "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        headers = self._signature(self.public_url + "/api/twilio/voice", form, sign)
        headers["User-Agent"] = "TwilioProxy/1.1"
        async with httpx.AsyncClient(timeout=self.reply_timeout_s) as http:
            response = await http.post(f"{self.base_url}/api/twilio/voice", data=form, headers=headers)
        result.webhook_status = response.status_code
        result.twiml = response.text
        if response.status_code == 200:
            result.stream_url, result.parameters = parse_stream_twiml(response.text)

    def _socket_url(self, stream_url: str) -> str:
        """Where the stream really goes: the server under test, at the TwiML's path."""
        base = urlsplit(self.base_url)
        scheme = "wss" if base.scheme == "https" else "ws"
        return f"{scheme}://{base.netloc}{urlsplit(stream_url).path or '/'}"

    # --- a call ---------------------------------------------------------------------------------

    async def call(self, lines: list[CallerLine], *, mock_script: bool = True, hang_up: bool = True,
                   sign: bool = True, until: asyncio.Future | None = None) -> CallResult:
        """Place one call and follow `lines`. What the server gets wrong (status, close, bad
        frames, no reply) is recorded in the result, not raised. When `until` completes, Twilio
        ends the stream as it does when new TwiML (a transfer's <Dial>) replaces it."""
        result = CallResult(call_sid=self.call_sid or _sid("CA"), speed=self.speed)
        await self._webhook(result, sign)
        if result.webhook_status != 200 or not result.stream_url:
            return result
        await self._stream(result, lines, mock_script=mock_script, hang_up=hang_up, sign=sign, until=until)
        return result

    async def rejoin(self, call_sid: str, twiml: str, lines: list[CallerLine], *, mock_script: bool = True,
                     hang_up: bool = True, until: asyncio.Future | None = None) -> CallResult:
        """The same call, back on a new stream: Twilio runs the <Connect><Stream> a webhook (a
        transfer's <Dial action>) answered."""
        result = CallResult(call_sid=call_sid, speed=self.speed, webhook_status=200, twiml=twiml)
        result.stream_url, result.parameters = parse_stream_twiml(twiml)
        if result.stream_url:
            await self._stream(result, lines, mock_script=mock_script, hang_up=hang_up, sign=True, until=until)
        return result

    async def post_signed(self, path: str, form: dict[str, str]) -> httpx.Response:
        """A Twilio callback (status, dial result) to the server, signed over PUBLIC_URL + path."""
        headers = {**self._signature(self.public_url + path, form, True),
                   "Content-Type": "application/x-www-form-urlencoded"}  # as Twilio, even for no fields
        async with httpx.AsyncClient(timeout=self.reply_timeout_s) as http:
            return await http.post(self.base_url + path, content=urlencode(form), headers=headers)

    async def _stream(self, result: CallResult, lines: list[CallerLine], *, mock_script: bool,
                      hang_up: bool, sign: bool, until: asyncio.Future | None) -> None:
        params = dict(result.parameters)
        if mock_script:
            params["mockScript"] = json.dumps([line.text for line in lines if line.dtmf is None])
        headers = self._signature(result.stream_url, {}, sign)  # Twilio signs the wss:// URL bare
        try:
            async with connect(self._socket_url(result.stream_url), additional_headers=headers,
                               user_agent_header=TWILIO_USER_AGENT, compression=None,
                               ping_interval=None, open_timeout=self.reply_timeout_s,
                               close_timeout=2.0, max_size=2 ** 20) as ws:
                session = _Session(self, ws, result)
                await session.run(lines, params, hang_up, until)
        except InvalidStatus as exc:
            result.handshake_status = exc.response.status_code


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """(Stream url, {Parameter name: value}) of a <Response><Connect><Stream>; ("", {}) if none."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return "", {}
    stream = root.find("./Connect/Stream")
    if stream is None:
        return "", {}
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


class _Session:
    """One live media stream: sender, receiver, player and script driver sharing one socket."""

    def __init__(self, caller: SimulatedCaller, ws: ClientConnection, result: CallResult) -> None:
        self.ws = ws
        self.result = result
        self.speed = caller.speed
        self.period = FRAME_MS / 1000.0 / caller.speed
        self.quiet_s = caller.quiet_ms / 1000.0 / caller.speed
        self.reply_timeout_s = caller.reply_timeout_s
        self.account_sid = caller.account_sid
        self.stream_sid = _sid("MZ")
        result.stream_sid = self.stream_sid

        self._seq = 0
        self._streaming = True       # sender and player run while this holds
        self._hanging_up = False     # we are ending the call: a close is ours, not the server's
        self._closed = asyncio.Event()
        self._tick = asyncio.Event()  # pulsed by every player tick and every socket event

        # the speaker (sender side)
        self._speech = b""
        self._speech_pos = 0
        self._speech_started: float | None = None
        self._speech_done: asyncio.Future[tuple[float, float]] | None = None

        # the ear (player side): audio chunks and mark names, in arrival order
        self._queue: deque[bytes | _Marker] = deque()
        self._queued_bytes = 0
        self._echo_next_tick: list[str] = []
        self._last_media_rx = float("-inf")
        self._last_played_mark = float("-inf")   # echoed because its audio played (not cleared)
        self._last_audio_played = float("-inf")

    # --- plumbing -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _pulse(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _send(self, text: str) -> bool:
        try:
            await self.ws.send(text)
            return True
        except ConnectionClosed:
            self._closed.set()
            return False

    async def _wait_until(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """True once `ready()` holds; False on timeout or when the socket closed."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed.is_set():
                return False
            try:
                await asyncio.wait_for(self._tick.wait(), min(remaining, 0.25))
            except TimeoutError:
                pass
        return True

    async def _pause(self, seconds: float) -> None:
        """A scripted delay that ends early if the call ends."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._closed.wait(), seconds)
            except TimeoutError:
                pass

    # --- the session ------------------------------------------------------------------------------

    async def run(self, lines: list[CallerLine], params: dict[str, str], hang_up: bool,
                  until: asyncio.Future | None = None) -> None:
        speech = [speech_ulaw(line.text, seed=i) if line.dtmf is None else b""
                  for i, line in enumerate(lines)]  # rendered up front: the sender only slices
        if not await self._send(wire.inbound_connected()):
            return await self._record_close()
        start = wire.inbound_start(self._next_seq(), self.stream_sid, self.result.call_sid,
                                   self.account_sid, params)
        self.result.started_at = time.monotonic()
        if not await self._send(start):
            return await self._record_close()

        workers = [asyncio.create_task(coro, name=name) for name, coro in (
            ("sender", self._sender()), ("player", self._player()), ("receiver", self._receiver()))]
        driver = asyncio.create_task(self._drive(lines, speech), name="driver")
        closed = asyncio.create_task(self._closed.wait(), name="closed")
        replaced = asyncio.ensure_future(until) if until is not None else asyncio.get_running_loop().create_future()
        try:
            pending = {driver, closed, replaced, *workers}
            while not (driver.done() or closed.done() or replaced.done()):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task not in (driver, closed, replaced) and not task.cancelled() and (exc := task.exception()):
                        raise exc  # a bug in the simulator: do not hide it
            if driver.done() and not replaced.done():
                driver.result()
                if not hang_up:  # the bot is expected to end the call (or move it elsewhere)
                    ended = lambda: self._closed.is_set() or replaced.done()  # noqa: E731
                    if not await self._wait_until(ended, self.reply_timeout_s):
                        self.result.timeouts.append("server did not end the call")
            if not self._closed.is_set():
                await self._hang_up(workers)  # the caller hangs up, or new TwiML took the call
        finally:
            self._streaming = False
            for task in (driver, closed, *workers):
                task.cancel()
            if until is None:
                replaced.cancel()
            await asyncio.gather(driver, closed, *workers, return_exceptions=True)
            await self._record_close()

    async def _hang_up(self, workers: list[asyncio.Task]) -> None:
        """Caller hangs up: media stops, Twilio sends `stop` and closes the socket."""
        self._streaming = False
        self._hanging_up = True
        await asyncio.gather(*workers[:2], return_exceptions=True)  # sender, player: finish a tick
        await self._send(wire.inbound_stop(self._next_seq(), self.stream_sid, self.result.call_sid,
                                           self.account_sid))
        self.result.ended_at = time.monotonic()
        await self.ws.close()

    async def _record_close(self) -> None:
        if self.result.ended_at is None:
            self.result.ended_at = time.monotonic()
        if self._hanging_up or not self._closed.is_set():
            return
        try:  # the server is closing: let the closing handshake finish to learn its code
            await asyncio.wait_for(self.ws.wait_closed(), 2.0)
        except TimeoutError:
            pass
        if self.ws.close_code is not None:
            self.result.closed_by_server = True
            self.result.close_code = self.ws.close_code

    # --- sender: Twilio's inbound media, every 20 ms ---------------------------------------------

    async def _sender(self) -> None:
        chunk = 0
        next_t = time.monotonic()
        while self._streaming:
            chunk += 1
            frame = SILENCE_FRAME
            speaking = self._speech_pos < len(self._speech)
            if speaking:
                frame = self._speech[self._speech_pos:self._speech_pos + FRAME_BYTES]
                self._speech_pos += FRAME_BYTES
            message = wire.inbound_media(self._next_seq(), self.stream_sid, chunk,
                                         (chunk - 1) * FRAME_MS, frame)
            if not await self._send(message):
                return
            if speaking:
                now = time.monotonic()
                if self._speech_started is None:
                    self._speech_started = now
                if self._speech_pos >= len(self._speech) and self._speech_done is not None:
                    self._speech_done.set_result((self._speech_started, now))
                    self._speech_done = None
            next_t += self.period
            delay = next_t - time.monotonic()
            await asyncio.sleep(delay if delay > 0 else 0)

    async def _say(self, audio: bytes) -> tuple[float, float] | None:
        """Hand `audio` to the sender; (first, last voiced frame sent), or None if the call ended."""
        done: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._speech, self._speech_pos, self._speech_started = audio, 0, None
        self._speech_done = done
        closed = asyncio.ensure_future(self._closed.wait())
        either: set[asyncio.Future[Any]] = {done, closed}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        return done.result() if done.done() else None

    # --- receiver: what the server sends ----------------------------------------------------------

    async def _receiver(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.result.protocol_errors.append(f"binary frame of {len(message)} bytes")
                    continue
                try:
                    out = wire.parse_outbound(message)
                except (wire.ProtocolError, ValueError, KeyError, TypeError) as exc:
                    self.result.protocol_errors.append(f"{type(exc).__name__}: {exc} in {message[:120]!r}")
                    continue
                if out.stream_sid != self.stream_sid:
                    self.result.protocol_errors.append(
                        f"{out.event} for streamSid {out.stream_sid!r}, expected {self.stream_sid!r}")
                    continue
                await self._on_outbound(out, now)
                self._pulse()
        except ConnectionClosed:
            pass
        finally:
            self._closed.set()
            self._pulse()

    async def _on_outbound(self, out: wire.Outbound, now: float) -> None:
        if out.event == "media":
            self.result.received.append(Received(now, "media", len(out.payload), ""))
            self.result._payloads.append(out.payload)
            if out.payload:
                self._queue.append(out.payload)
                self._queued_bytes += len(out.payload)
            self._last_media_rx = now
        elif out.event == "mark":
            self.result.received.append(Received(now, "mark", 0, out.name))
            self._queue.append(_Marker(out.name))
        elif out.event == "clear":
            self.result.received.append(Received(now, "clear", 0, ""))
            self.result.clears.append(now)
            pending = self._echo_next_tick + [i.name for i in self._queue if isinstance(i, _Marker)]
            self._queue.clear()
            self._queued_bytes = 0
            self._echo_next_tick = []
            for name in pending:  # Twilio echoes the marks of dropped audio at once
                await self._echo(name, played=False)

    async def _echo(self, name: str, played: bool) -> None:
        if await self._send(wire.inbound_mark(self._next_seq(), self.stream_sid, name)):
            now = time.monotonic()
            self.result.marks_echoed.append((now, name))
            if played:
                self._last_played_mark = now

    # --- player: the caller's ear, one frame per 20 ms ------------------------------------------

    async def _player(self) -> None:
        heard = bytearray()
        next_t = time.monotonic()
        try:
            while self._streaming:
                # marks whose audio finished playing in the previous tick, or that lead the queue
                due, self._echo_next_tick = self._echo_next_tick, []
                while self._queue and isinstance(head := self._queue[0], _Marker):
                    self._queue.popleft()
                    due.append(head.name)
                for name in due:
                    await self._echo(name, played=True)
                frame = self._take_frame()
                if frame is not None:
                    self._last_audio_played = time.monotonic()
                    heard += frame
                else:
                    heard += SILENCE_FRAME
                self._pulse()
                next_t += self.period
                delay = next_t - time.monotonic()
                await asyncio.sleep(delay if delay > 0 else 0)
        finally:
            self.result.heard_ulaw = bytes(heard)

    def _take_frame(self) -> bytes | None:
        """Up to 160 bytes of queued audio (silence-padded); marks passed on the way are due next."""
        if not self._queued_bytes:
            return None
        frame = bytearray()
        while self._queue and len(frame) < FRAME_BYTES:
            head = self._queue[0]
            if isinstance(head, _Marker):
                self._queue.popleft()
                self._echo_next_tick.append(head.name)
                continue
            need = FRAME_BYTES - len(frame)
            if len(head) <= need:
                self._queue.popleft()
                frame += head
            else:
                frame += head[:need]
                self._queue[0] = head[need:]
        self._queued_bytes -= len(frame)
        return bytes(frame) + SILENCE_FRAME[len(frame):]

    # --- script driver: the person on the phone -------------------------------------------------

    def _bot_done(self, since: float) -> Callable[[], bool]:
        """The bot finished: a mark played since `since`, nothing left to play, and no media
        arrived for the quiet window."""
        def ready() -> bool:
            return (self._last_played_mark > since and not self._queue and not self._echo_next_tick
                    and time.monotonic() - self._last_media_rx >= self.quiet_s)
        return ready

    def _bot_playing(self, since: float) -> Callable[[], bool]:
        return lambda: self._last_audio_played > since

    async def _drive(self, lines: list[CallerLine], speech: list[bytes]) -> None:
        since = self.result.started_at or time.monotonic()
        for i, line in enumerate(lines):
            what = f"line {i + 1} ({'dtmf ' + line.dtmf if line.dtmf is not None else repr(line.text[:40])})"
            if line.barge_in_after_ms is not None:
                if not await self._wait_until(self._bot_playing(since), self.reply_timeout_s):
                    if self._closed.is_set():
                        return
                    self.result.timeouts.append(f"{what}: bot audio never started playing")
                await self._pause(line.barge_in_after_ms / 1000.0 / self.speed)
            elif not line.wait_for_reply:  # the same sentence after a pause: no reply to wait for
                await self._pause(line.pause_before_ms / 1000.0 / self.speed)
            else:
                if not await self._wait_until(self._bot_done(since), self.reply_timeout_s):
                    if self._closed.is_set():
                        return
                    self.result.timeouts.append(f"{what}: bot did not finish its reply")
                await self._pause(line.pause_before_ms / 1000.0 / self.speed)
            if self._closed.is_set():
                return
            if line.dtmf is not None:
                for digit in line.dtmf:
                    if not await self._send(wire.inbound_dtmf(self._next_seq(), self.stream_sid, digit)):
                        return
                    since = time.monotonic()
                    self.result.dtmf_sent.append((since, digit))
                continue
            spoken = await self._say(speech[i])
            if spoken is None:
                return
            self.result.lines.append(LineTiming(line.text, *spoken))
            since = spoken[1]
        if not await self._wait_until(self._bot_done(since), self.reply_timeout_s):
            if not self._closed.is_set():
                self.result.timeouts.append("after the last line: bot did not finish its reply")


@dataclass(frozen=True, slots=True)
class _Marker:
    name: str
