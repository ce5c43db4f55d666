"""A lean Twilio stand-in for many simultaneous calls: one process, one event loop, one ticker.

`SimulatedCaller` (services/simulator) is the faithful, validating caller the tests use; it runs
three tasks and a websockets client per call. Hundreds of those would make the *generator* the
bottleneck on a 2-core machine, so this module does the same protocol more cheaply:

- one shared ticker sends every call's 20 ms `media` frame; calls are spread over 4 phase slots
  per period (as real calls start at random instants), and the ticker records its own lateness;
- a minimal WebSocket client on a raw asyncio transport: text frames written with a zero masking
  key (RFC 6455 wants clients to pick unpredictable keys, but a server cannot tell and must unmask
  whatever key comes; with 0 the XOR is a no-op, so no per-byte work), the server's frames parsed
  by hand; pings answered;
- payloads pre-encoded: every caller line is rendered once (services.simulator.voice) and cut into
  base64 frames up front, so a tick only formats one short f-string per call;
- the caller's ear is a playout clock, not a player task: each `media` extends "buffer plays out
  until", a `mark` is echoed when the audio before it has played (a timer), a `clear` flushes and
  echoes at once, as Twilio does.

The control plane is the real one: a signed webhook POST per call (TwiML parsed for the stream URL
and parameters), a signed WebSocket upgrade, `connected` + `start` with the TwiML's parameters.

Outbound audio continuity: audio of one reply must arrive before its playout deadline. Within a
reply (same mark generation `<gen>.<i>`), a chunk that arrives after the buffer ran dry is a gap
the caller hears; the silence between replies (and before the first) is not.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import AUTH_TOKEN, PUBLIC_URL, Histogram

FRAME_MS = 20
FRAME_BYTES = 160
SLOTS = 4                        # phase slots per 20 ms period
DEFAULT_LINES = (                # replies of different lengths, one to several sentences, no tools
    "How much is a cleaning?",
    "Is there parking?",
    "What are your opening hours?",
)


def _ws_text_frame(text: str) -> bytes:
    """A client text frame, FIN set, masked with key 0 (the payload bytes stay as they are)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126, n >> 8, n & 0xFF))
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + data


def _ws_control(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


class Speech:
    """A caller line pre-cut into base64 frames (`voiced` = frames carrying the line)."""

    def __init__(self, text: str, seed: int) -> None:
        if os.environ.get("ZYLIN_BENCH_VOICE") == "espeak":  # real speech, for the neural VAD (docs/benchmarks.md §6)
            from bench.turn_corpus import spoken_ulaw
            ulaw = spoken_ulaw(text)
        else:
            from services.simulator.voice import speech_ulaw
            ulaw = speech_ulaw(text, seed=seed)
        self.text = text
        self.frames = [base64.b64encode(ulaw[i:i + FRAME_BYTES]).decode()
                       for i in range(0, len(ulaw), FRAME_BYTES)]


SILENCE_B64 = base64.b64encode(b"\xff" * FRAME_BYTES).decode()


@dataclass
class CallStats:
    """What one call saw, in the generator's clock (monotonic)."""
    started_at: float = 0.0               # `start` sent
    first_media_at: float | None = None
    line_ends: list[float] = field(default_factory=list)
    replies_ms: list[float] = field(default_factory=list)    # line end -> first reply audio
    gaps_ms: list[float] = field(default_factory=list)       # audible gaps inside replies
    late_ms: list[float] = field(default_factory=list)       # every dry-buffer arrival inside a reply
    marks_echoed: int = 0
    media_msgs: int = 0
    audio_bytes: int = 0
    clears: int = 0
    timeouts: int = 0
    error: str = ""
    closed_by_server: bool = False


class Call(asyncio.Protocol):
    """One Twilio Media Stream plus the person on the phone, driven by the shared ticker."""

    def __init__(self, gen: LoadGenerator, index: int) -> None:
        self.gen = gen
        self.index = index
        self.stats = CallStats()
        self.transport: asyncio.Transport | None = None
        self.call_sid = "CA" + os.urandom(16).hex()
        self.stream_sid = "MZ" + os.urandom(16).hex()
        self._handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._upgraded = False
        self._frag: list[bytes] = []
        self.closed = asyncio.Event()
        self.active = False          # the ticker sends our frames
        self.t0 = 0.0                # scheduled send time of frame 0
        self.seq = 0
        self.chunk = 0
        # the ear
        self.play_end = 0.0          # buffered audio plays out until then
        self.last_media_rx = float("-inf")
        self.last_played_mark = float("-inf")
        self.pending_echoes: dict[str, asyncio.TimerHandle] = {}
        self.audio_since_mark = 0
        self.last_mark_gen: str | None = None
        self.dry_gap: tuple[float, str | None] | None = None   # (silence, gen before it)
        # the person
        self.state = "greeting"      # greeting | pause | speaking | waiting | hangup | done
        self.since = 0.0
        self.until = 0.0
        self.line = 0
        self.speech: Speech | None = None
        self.speech_pos = 0
        self.hang_up_at = float("inf")
        self.lines_left: int | None = None   # hang up after this many lines were answered

    # --- connection ------------------------------------------------------------------------

    async def connect(self, host: str, port: int, path: str, params: dict[str, str],
                      signature: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        assert self.transport is not None
        self.transport.write((
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {signature}\r\nUser-Agent: Twilio.TmeWs/1.0\r\n\r\n").encode())
        status = await asyncio.wait_for(self._handshake, 30.0)
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {status[:40]!r}")
        self._send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        self.t0 = self.gen.ticker.first_slot_time(self.index % SLOTS)
        params = dict(params, benchT0=repr(self.t0), benchSpeed=repr(self.gen.speed))
        params["mockScript"] = json.dumps(self.gen.script)
        self._send(json.dumps({
            "event": "start", "sequenceNumber": str(self._next_seq()), "streamSid": self.stream_sid,
            "start": {"accountSid": self.gen.account_sid, "streamSid": self.stream_sid,
                      "callSid": self.call_sid, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": params}}))
        now = time.monotonic()
        self.stats.started_at = now
        self.since = now
        self.active = True

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError("closed during the upgrade"))
        if self.state not in ("hangup", "done"):
            self.stats.closed_by_server = True
        self._stop()

    def _stop(self) -> None:
        self.active = False
        self.state = "done"
        for timer in self.pending_echoes.values():
            timer.cancel()
        self.pending_echoes.clear()
        self.closed.set()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_ws_text_frame(text))

    # --- inbound bytes: HTTP upgrade, then WebSocket frames --------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            self._upgraded = True
            if not self._handshake.done():
                self._handshake.set_result(head)
        now = time.monotonic()
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                at = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                at = 10
            if b1 & 0x80:  # a server never masks; tolerate it anyway
                at += 4
            if len(buf) < at + n:
                return
            payload = bytes(buf[at:at + n])
            del buf[:at + n]
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode == 0x9:
                if self.transport is not None:
                    self.transport.write(_ws_control(0xA, payload))
            elif opcode == 0x8:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(_ws_control(0x8, payload[:2]))
                    self.transport.close()
            elif opcode in (0x1, 0x0):
                self._frag.append(payload)
                if fin:
                    text = b"".join(self._frag).decode()
                    self._frag = []
                    self._on_message(text, now)

    def _on_message(self, text: str, now: float) -> None:
        if text.startswith('{"event":"media"'):
            at = text.find('"payload":"') + 11
            end = text.find('"', at)
            b64 = end - at
            nbytes = b64 * 3 // 4 - (text[end - 2:end].count("="))
            self._on_media(nbytes, now)
            return
        msg = json.loads(text)
        event = msg.get("event")
        if event == "mark":
            self._on_mark(msg["mark"]["name"], now)
        elif event == "clear":
            self._on_clear(now)

    def _on_media(self, nbytes: int, now: float) -> None:
        st = self.stats
        st.media_msgs += 1
        st.audio_bytes += nbytes
        if st.first_media_at is None:
            st.first_media_at = now
        if st.line_ends and len(st.replies_ms) < len(st.line_ends) and now > st.line_ends[-1]:
            st.replies_ms.append((now - st.line_ends[-1]) * 1000.0)
        if self.play_end < now:               # the buffer ran dry before this arrived
            silence = now - self.play_end
            if self.audio_since_mark:         # mid-sentence: certainly inside a reply
                self._gap(silence * 1000.0)
            elif self.last_mark_gen is not None:
                self.dry_gap = (silence, self.last_mark_gen)   # decided by the next mark
            self.play_end = now
        self.play_end += nbytes / 8000.0 / self.gen.speed
        self.audio_since_mark += nbytes
        self.last_media_rx = now

    def _gap(self, ms: float) -> None:
        self.stats.late_ms.append(ms)
        if ms > self.gen.gap_tolerance_ms:
            self.stats.gaps_ms.append(ms)

    def _on_mark(self, name: str, now: float) -> None:
        gen = name.partition(".")[0]
        if self.dry_gap is not None:
            silence, before = self.dry_gap
            if before == gen:                 # the same reply went dry between two sentences
                self._gap(silence * 1000.0)
            self.dry_gap = None
        self.last_mark_gen = gen
        self.audio_since_mark = 0
        delay = max(0.0, self.play_end - now)
        loop = asyncio.get_running_loop()
        self.pending_echoes[name] = loop.call_later(delay, self._echo, name)

    def _echo(self, name: str, played: bool = True) -> None:
        self.pending_echoes.pop(name, None)
        self._send(json.dumps({"event": "mark", "sequenceNumber": str(self._next_seq()),
                               "streamSid": self.stream_sid, "mark": {"name": name}}))
        self.stats.marks_echoed += 1
        if played:
            self.last_played_mark = time.monotonic()

    def _on_clear(self, now: float) -> None:
        self.stats.clears += 1
        for name, timer in list(self.pending_echoes.items()):
            timer.cancel()
            self._echo(name, played=False)
        self.play_end = now
        self.dry_gap = None
        self.audio_since_mark = 0

    # --- the person on the phone, once per 20 ms (called by the ticker) ---------------------------

    def _bot_done(self, now: float) -> bool:
        return (self.last_played_mark > self.since and not self.pending_echoes
                and self.play_end <= now and now - self.last_media_rx >= self.gen.quiet_s)

    def tick(self, now: float) -> None:
        state = self.state
        payload = SILENCE_B64
        if state == "speaking":
            speech = self.speech
            assert speech is not None
            payload = speech.frames[self.speech_pos]
            self.speech_pos += 1
            if self.speech_pos >= len(speech.frames):
                self.stats.line_ends.append(now)
                self.state, self.since = "waiting", now
        elif state in ("greeting", "waiting"):
            if self._bot_done(now):
                if self.lines_left == 0:
                    self.hang_up()
                    return
                self.state, self.until = "pause", now + self.gen.pause_s
            elif now - self.since > self.gen.reply_timeout_s:
                self.stats.timeouts += 1
                self.state, self.until = "pause", now + self.gen.pause_s
        elif state == "pause" and now >= self.until and not self.gen.silent:
            if now >= self.hang_up_at:
                self.hang_up()
                return
            self.speech = self.gen.speech[self.line % len(self.gen.speech)]
            self.line += 1
            self.speech_pos = 0
            self.state = "speaking"
            if self.lines_left is not None:
                self.lines_left -= 1
        chunk = self.chunk = self.chunk + 1
        self._send(f'{{"event":"media","sequenceNumber":"{self._next_seq()}","streamSid":"{self.stream_sid}",'
                   f'"media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{(chunk - 1) * FRAME_MS}",'
                   f'"payload":"{payload}"}}}}')

    def hang_up(self) -> None:
        """Twilio's side of a caller hanging up: `stop`, then close the socket."""
        if self.state == "done":
            return
        self.active = False
        self.state = "hangup"
        self._send(json.dumps({"event": "stop", "sequenceNumber": str(self._next_seq()),
                               "streamSid": self.stream_sid,
                               "stop": {"accountSid": self.gen.account_sid, "callSid": self.call_sid}}))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_ws_control(0x8, (1000).to_bytes(2, "big")))
            asyncio.get_running_loop().call_later(2.0, self._force_close)

    def _force_close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Ticker:
    """One 20 ms clock for every call, in SLOTS phase slots; measures its own lateness."""

    def __init__(self, period_s: float) -> None:
        self.period = period_s
        self.slot_dt = period_s / SLOTS
        self.groups: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.lag = Histogram()
        self.frames = 0              # media frames sent (since the window began)
        self.start = 0.0
        self.i = 0
        self.running = False

    def first_slot_time(self, group: int) -> float:
        """The next tick time of `group` at least one slot from now (the call's frame 0)."""
        i = self.i + 1
        while i % SLOTS != group:
            i += 1
        return self.start + i * self.slot_dt

    def add(self, call: Call) -> None:
        self.groups[call.index % SLOTS].append(call)

    async def run(self) -> None:
        self.running = True
        self.start = time.monotonic()
        self.i = 0
        clock = time.monotonic
        while self.running:
            due = self.start + self.i * self.slot_dt
            now = clock()
            group = self.groups[self.i % SLOTS]
            if group:
                self.lag.add((now - due) * 1000.0)
                keep = []
                for call in group:
                    if call.active:
                        if now >= call.t0:
                            call.tick(now)
                            self.frames += 1
                        keep.append(call)
                    elif call.state not in ("done", "hangup"):
                        keep.append(call)   # connecting: not started yet
                group[:] = keep
            self.i += 1
            delay = self.start + self.i * self.slot_dt - clock()
            await asyncio.sleep(delay if delay > 0 else 0)


class LoadGenerator:
    """Places calls against one server and keeps them talking until told to hang up."""

    def __init__(self, base_url: str, *, speed: float = 1.0, lines: tuple[str, ...] = DEFAULT_LINES,
                 pause_ms: int = 500, quiet_ms: int = 300, reply_timeout_s: float = 20.0,
                 gap_tolerance_ms: float = 0.0, public_url: str = PUBLIC_URL,
                 auth_token: str = AUTH_TOKEN, silent: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        u = urlsplit(self.base_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.public_url = public_url
        self.auth_token = auth_token
        self.speed = speed
        self.pause_s = pause_ms / 1000.0 / speed
        self.quiet_s = quiet_ms / 1000.0 / speed
        self.reply_timeout_s = reply_timeout_s
        self.gap_tolerance_ms = gap_tolerance_ms
        self.silent = silent             # callers only listen: the per-frame cost alone
        self.account_sid = "AC" + os.urandom(16).hex()
        self.script = list(lines) * 50
        self.speech = [Speech(text, seed=i) for i, text in enumerate(lines)]
        self.ticker = Ticker(FRAME_MS / 1000.0 / speed)
        self.calls: list[Call] = []
        self.failed: list[str] = []
        self._ticker_task: asyncio.Task | None = None
        self._http: Any = None
        self._validator: Any = None
        self._count = 0

    async def __aenter__(self) -> LoadGenerator:
        import httpx
        from twilio.request_validator import RequestValidator
        self._http = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=20))
        self._validator = RequestValidator(self.auth_token)
        self._ticker_task = asyncio.create_task(self.ticker.run(), name="ticker")
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.hang_up_all()
        self.ticker.running = False
        if self._ticker_task is not None:
            await asyncio.gather(self._ticker_task, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def place(self, hang_up_at: float = float("inf"), lines: int | None = None) -> Call:
        """Webhook, upgrade, `start`: the call then lives on the ticker until `hang_up_at`, or
        until `lines` caller lines have been answered."""
        call = Call(self, self._count)
        self._count += 1
        call.hang_up_at = hang_up_at
        call.lines_left = lines
        form = {"CallSid": call.call_sid, "AccountSid": self.account_sid, "From": "+15551230001",
                "To": "+15559870000", "Caller": "+15551230001", "Called": "+15559870000",
                "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        try:
            url = self.public_url + "/api/twilio/voice"
            headers = {"X-Twilio-Signature": self._validator.compute_signature(url, form)}
            response = await self._http.post(self.base_url + "/api/twilio/voice", data=form, headers=headers)
            if response.status_code != 200:
                raise ConnectionError(f"webhook {response.status_code}")
            from services.simulator.caller import parse_stream_twiml
            stream_url, params = parse_stream_twiml(response.text)
            signature = self._validator.compute_signature(stream_url, {})
            self.ticker.add(call)
            self.calls.append(call)
            await call.connect(self.host, self.port, urlsplit(stream_url).path, params, signature)
        except Exception as exc:  # recorded, not raised: a refused call is a result
            call.stats.error = f"{type(exc).__name__}: {exc}"
            call.state = "done"
            self.failed.append(call.stats.error)
        return call

    async def ramp(self, n: int, over_s: float, hang_up_at: float = float("inf")) -> list[Call]:
        """Place `n` calls evenly spread over `over_s` seconds."""
        tasks = []
        start = time.monotonic()
        for i in range(n):
            delay = start + i * over_s / max(n, 1) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.place(hang_up_at)))
        return list(await asyncio.gather(*tasks))

    async def hang_up_all(self, timeout_s: float = 10.0) -> None:
        for call in self.calls:
            if call.state != "done":
                call.hang_up()
        deadline = time.monotonic() + timeout_s
        for call in self.calls:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(call.closed.wait(), remaining)
            except TimeoutError:
                pass

    def reset_window(self) -> float:
        """Start a measurement window: forget what the calls and the ticker saw so far."""
        now = time.monotonic()
        self.ticker.lag.reset()
        self.ticker.frames = 0
        for call in self.calls:
            st = call.stats
            st.gaps_ms.clear()
            st.late_ms.clear()
            st.replies_ms.clear()
            st.line_ends.clear()
            st.timeouts = 0
        return now

    def report(self) -> dict[str, Any]:
        calls = self.calls
        gaps = [g for c in calls for g in c.stats.gaps_ms]
        late = [g for c in calls for g in c.stats.late_ms]
        return {
            "calls": len(calls), "failed": len(self.failed), "failures": self.failed[:5],
            "closed_by_server": sum(c.stats.closed_by_server for c in calls),
            "gen_lag": self.ticker.lag.as_dict(), "frames_sent": self.ticker.frames,
            "gaps": len(gaps), "calls_with_gap": sum(1 for c in calls if c.stats.gaps_ms),
            "gap_max_ms": max(gaps) if gaps else 0.0,
            "dry_arrivals": len(late), "dry_max_ms": max(late) if late else 0.0,
            "timeouts": sum(c.stats.timeouts for c in calls),
            "clears": sum(c.stats.clears for c in calls),
            "replies_ms": [r for c in calls for r in c.stats.replies_ms],
            "greetings_ms": [(c.stats.first_media_at - c.stats.started_at) * 1000.0
                             for c in calls if c.stats.first_media_at is not None],
            "turns_spoken": sum(len(c.stats.line_ends) for c in calls),
        }


async def warm_up_call(server: Any, speed: float = 1.0) -> dict[str, Any]:
    """One call through a fresh server before measuring: the first call of a process pays for
    lazy set-up (first database writes, SQL compilation caches, imports on first use). Its
    greeting is reported on its own as the cold start. Several processes on one port get a few
    calls each (the kernel picks the process), so that each is likely warmed."""
    first: dict[str, Any] = {}
    async with LoadGenerator(server.base_url, speed=max(speed, 4.0)) as gen:
        for i in range(3 * len(server.pids) - 2):
            call = await gen.place(lines=1)
            if not call.stats.error:
                try:
                    await asyncio.wait_for(call.closed.wait(), 30.0)
                except TimeoutError:
                    call.hang_up()
            if i == 0:
                st = call.stats
                first = {"greeting_heard_ms": (st.first_media_at - st.started_at) * 1000.0
                         if st.first_media_at else None, "error": st.error}
    deadline = time.monotonic() + 10.0
    stats = await server.aget("/bench/stats")
    while stats["streams_open"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stats = await server.aget("/bench/stats")
    first["greeting_ms"] = max(stats["greetings"]) if stats["greetings"] else None
    return first


def _machine_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat: busy is what
    processes here used; steal is what the hypervisor gave other guests while we wanted it."""
    from bench.common import CLK_TCK
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:7])   # user nice system irq softirq
    return busy / CLK_TCK, fields[7] / CLK_TCK


async def run_load(server: Any, n: int, *, ramp_s: float | None = None, warm_s: float = 8.0,
                   window_s: float = 30.0, speed: float = 1.0, drain_s: float = 15.0,
                   profile: str | None = None, lines_per_call: int | None = None,
                   warm_up: bool = True, **gen_options: Any) -> dict[str, Any]:
    """Hold `n` calls on `server` (a bench.server.ServerProcess) and measure a steady window.

    Timeline: ramp the calls in (default 50 calls/s) -> `warm_s` for greetings to
    play and first lines to start -> measurement window of `window_s` (server stats reset at its
    start) -> hang up -> wait for the server to close every stream. With `lines_per_call`, each
    of the `n` lines hangs up after that many answered caller lines and dials again (churn), so
    greetings keep coming during the window.
    """
    from bench.common import CpuMeter, cpu_seconds, rss_mb

    ramp_s = n / 50.0 if ramp_s is None else ramp_s
    out: dict[str, Any] = {"n": n, "speed": speed, "ramp_s": ramp_s, "window_s": window_s}
    out["cold_call"] = await warm_up_call(server, speed) if warm_up else {
        "greeting_ms": None, "greeting_heard_ms": None, "error": "skipped"}
    await server.aget("/bench/stats?reset=all")
    baseline = await server.aget("/bench/gc")
    out["rss_idle_mb"] = baseline["rss_mb"]
    async with LoadGenerator(server.base_url, speed=speed, **gen_options) as gen:
        churning = lines_per_call is not None

        async def slot(delay: float) -> None:
            """One line of the switchboard: a call, and with churn the next call when it ends."""
            await asyncio.sleep(delay)
            while True:
                call = await gen.place(lines=lines_per_call)
                if call.stats.error or not churning:
                    return
                await call.closed.wait()
                if not churning:
                    return

        slots = [asyncio.create_task(slot(i * ramp_s / max(n, 1))) for i in range(n)]
        await asyncio.sleep(ramp_s + warm_s)
        await server.aget("/bench/stats?reset=1")
        gen.reset_window()
        gen_cpu = CpuMeter()
        (busy0, steal0), server0 = _machine_busy(), sum(cpu_seconds(pid) for pid in server.pids)
        loop0 = sum(cpu_seconds(pid, thread=pid) for pid in server.pids)  # the event-loop threads
        wall0 = time.monotonic()
        spy = _start_profiler(server.pids[0], window_s, profile) if profile else None
        peak_rss = 0.0
        end = time.monotonic() + window_s
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, left))
            peak_rss = max(peak_rss, sum(rss_mb(pid) for pid in server.pids))
        window = await server.aget("/bench/stats?reset=1")
        wall = time.monotonic() - wall0
        gen_pct = gen_cpu.read()
        busy1, steal1 = _machine_busy()
        machine_pct = 100.0 * (busy1 - busy0) / wall
        out["steal_pct"] = round(100.0 * (steal1 - steal0) / wall, 1)
        server_pct = 100.0 * (sum(cpu_seconds(pid) for pid in server.pids) - server0) / wall
        loop_total = 100.0 * (sum(cpu_seconds(pid, thread=pid) for pid in server.pids) - loop0) / wall
        out["loop_cpu_pct"] = round(loop_total / len(server.pids), 1)   # per process (one core each)
        out["loop_cpu_total_pct"] = round(loop_total, 1)
        out["gen_cpu_pct"] = round(gen_pct, 1)
        out["other_cpu_pct"] = round(max(0.0, machine_pct - server_pct - gen_pct), 1)
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
        out["gen_rss_mb"] = round(rss_mb(), 1)
        out["generator"] = gen.report()
        out["open_in_window"] = window["streams_open"]
        churning = False
        for task in slots:
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        await gen.hang_up_all()
    deadline = time.monotonic() + drain_s
    after = await server.aget("/bench/stats")
    out["profile"] = profile
    while after["streams_open"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        after = await server.aget("/bench/stats")
    ended = await server.aget("/bench/stats?reset=all")
    out["server"] = {
        "cpu_pct": window["cpu_pct"], "rss_mb": window["rss_mb"], "rss_peak_mb": round(peak_rss, 1),
        "frames": window["frames"], "lag": Histogram.from_json(window["lag"]).as_dict(),
        "handling": Histogram.from_json(window["handling"]).as_dict(),
        "gc_pause": window.get("gc_pause"), "db_writes": window.get("db_writes"),
        "turns": window["turns"], "greetings_ms": ended["greetings"],
        "calls_ended": ended["calls_ended"], "streams_left_open": after["streams_open"],
        "vad_runs": window.get("vad_runs"), "vad_windows": window.get("vad_windows"),
    }
    return out


def _start_profiler(pid: int, seconds: float, path: str):
    """py-spy on the server for the window (collapsed stacks; see bench.profile_report)."""
    import shutil
    import subprocess
    import sys
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
                             "--format", "raw", "-o", path, "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
