"""The Aura streaming half of the fake Deepgram: the `/v1/speak` WebSocket (speak v1), its refusals.

A SpeakSession answers as Deepgram documents the socket: Metadata on open; `Speak` text is
buffered; `Flush` generates the buffered text's audio (the tone `speak_audio` renders for REST,
so the bytes match the REST voice's) in odd-sized binary chunks, then `Flushed` with a
`sequence_id` counting the connection's flushes from 0; `Clear` drops the buffered text and the
audio not yet sent and answers `Cleared`; `Close` closes 1000. The 21st Flush within 60 s is not
processed and gets the `Warning` Deepgram sends (warn_code EXCESSIVE_FLUSH, as the Python SDK
found in the field). An unknown message type (such as `Reset`) closes 1008; so does a Speak
longer than 2000 characters (the documented REST limit: the socket's own is unpublished, and the
shape of that refusal is this fake's choice). Refused at the upgrade with 400: an encoding the
socket does not stream, a sample rate it does not offer (mu-law and A-law: 8000 or 16000), a
`container` (REST only).

Knobs (on FakeDeepgram, `speak_ws_*`): the first audio's delay after a Flush, pacing, a stall
after N chunks of each flush until `release`, an idle timeout (off by default: Deepgram documents
none for this socket, and says KeepAlive does not apply to it), Clear left unanswered. A session can be dropped (with a
close code or abruptly) like a listen session; `refuse()` refuses upgrades here too.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from aiohttp import WSMsgType

from tests.fakes.deepgram_server import MODEL_UUID, ListenSession, _error, speak_audio

SPEAK_ENCODINGS = {"linear16", "mulaw", "alaw"}
SPEAK_RATES = {8000, 16000, 24000, 32000, 48000}
MAX_SPEAK_CHARS = 2000
FLUSH_LIMIT = 20              # Flush messages per FLUSH_WINDOW_S per connection
FLUSH_WINDOW_S = 60.0
EXCESSIVE_FLUSH = {"type": "Warning", "warn_code": "EXCESSIVE_FLUSH",
                   "warn_msg": "Rate limit exceeded for flushes. Please try again later."}
NET0001 = ("Deepgram did not receive a text message within the timeout window. "
           "See https://dpgr.am/net0001")


def check_speak_query(query: dict[str, list[str]]) -> str | None:
    """Why the speak socket would refuse this query with 400 at the upgrade, or None."""
    one = {name: values[0] for name, values in query.items() if values}
    if "container" in one:
        return "container is not supported on the streaming socket"
    encoding = one.get("encoding", "linear16")
    if encoding not in SPEAK_ENCODINGS:
        return f"encoding {encoding!r} cannot be streamed"
    try:
        rate = int(one.get("sample_rate", "24000" if encoding == "linear16" else "8000"))
    except ValueError:
        return "sample_rate is not a number"
    if rate not in SPEAK_RATES:
        return f"sample_rate {rate} is not offered"
    if encoding in ("mulaw", "alaw") and rate not in (8000, 16000):
        return f"{encoding} needs sample_rate 8000 or 16000"
    return None


def refusal(query: dict[str, list[str]]) -> dict[str, str] | None:
    problem = check_speak_query(query)
    return None if problem is None else _error("INVALID_QUERY_PARAMETER", problem)


class SpeakSession(ListenSession):
    """One /v1/speak WebSocket as the fake sees it (the socket handling, waits and drops of a
    ListenSession; its own messages)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._ears = None
        self.buffer: list[str] = []               # Speak text not yet flushed
        self.speaks: list[str] = []               # every Speak text received
        self.flushes = 0                          # Flush messages received (refused ones too)
        self.clears = 0
        self.warnings = 0
        self.generated: list[bytes] = []          # each processed flush's audio, in full, in order
        self.audio_sent = bytearray()             # binary audio actually sent
        self._flush_times: deque[float] = deque()
        self._sequence = 0                        # the next Flushed's sequence_id
        self._work: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()   # (epoch, seq, audio)
        self._epoch = 0                           # bumped by each Clear: older work is dropped
        self._cleared = asyncio.Event()
        self._write = asyncio.Lock()              # a chunk is never split by a Cleared

    @property
    def encoding(self) -> str:
        return self.param("encoding") or "linear16"

    @property
    def rate(self) -> int:
        return int(self.param("sample_rate") or (24000 if self.encoding == "linear16" else 8000))

    async def run(self) -> None:
        await self.send_json({"type": "Metadata", "request_id": self.request_id,
                              "model_name": self.param("model") or "aura-asteria-en",
                              "model_version": "2025-01-01.0", "model_uuid": MODEL_UUID})
        generator = asyncio.create_task(self._generate())
        loop = asyncio.get_running_loop()
        last_text = loop.time()
        try:
            while not self.closed.is_set() and not self._closing:
                idle = self.fake.speak_ws_idle_timeout_s
                wait = None if idle is None else idle - (loop.time() - last_text)
                if wait is not None and wait <= 0:
                    await self.close(1011, NET0001)
                    break
                try:
                    message = await self._ws.receive(timeout=wait)
                except TimeoutError:
                    continue
                if message.type == WSMsgType.TEXT:
                    last_text = loop.time()
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._fatal("binary messages are not accepted")
                else:
                    if message.type == WSMsgType.CLOSE and self.close_code is None:
                        self.close_code = message.data or 1005
                    break
            if self._closing:
                await self.closed.wait()
        finally:
            generator.cancel()
            await asyncio.gather(generator, return_exceptions=True)
            self._end()

    async def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            await self._fatal("could not parse the client message")
            return
        self.messages.append(message)
        self.controls.append(kind)
        if kind == "Speak":
            text = str(message.get("text", ""))
            self.speaks.append(text)
            self.fake.speak_ws_speaks += 1
            if len(text) > MAX_SPEAK_CHARS:
                await self._fatal(f"text exceeds {MAX_SPEAK_CHARS} characters")
                return
            self.buffer.append(text)
        elif kind == "Flush":
            await self._flush()
        elif kind == "Clear":
            await self._clear()
        elif kind == "Close":
            await self.close(1000)
        else:
            await self._fatal(f"unknown message type {kind!r}")
        await self._notify()
        await self.fake._notify()

    async def _flush(self) -> None:
        self.flushes += 1
        self.fake.speak_ws_flushes += 1
        now = asyncio.get_running_loop().time()
        while self._flush_times and now - self._flush_times[0] >= self.fake.speak_ws_flush_window_s:
            self._flush_times.popleft()
        if len(self._flush_times) >= self.fake.speak_ws_flush_limit:
            self.warnings += 1
            await self.send_json(dict(EXCESSIVE_FLUSH))   # not processed: the text stays buffered
            return
        self._flush_times.append(now)
        text, self.buffer = "".join(self.buffer), []
        audio = speak_audio(text, self.encoding, self.rate, self.fake.speak_seconds_per_char) if text else b""
        self.generated.append(audio)
        self._work.put_nowait((self._epoch, self._sequence, audio))
        self._sequence += 1

    async def _clear(self) -> None:
        self.clears += 1
        self.fake.speak_ws_clears += 1
        self.buffer = []
        self._epoch += 1
        while not self._work.empty():
            self._work.get_nowait()
        self._cleared.set()
        self._cleared = asyncio.Event()
        if self.fake.speak_ws_answer_clear:
            async with self._write:
                await self.send_json({"type": "Cleared", "sequence_id": self._sequence})

    async def _generate(self) -> None:
        """Flushes' audio in order, then their Flushed; a Clear cuts the current one short."""
        fake = self.fake
        loop = asyncio.get_running_loop()
        while True:
            epoch, sequence, audio = await self._work.get()
            cleared = self._cleared
            if fake.speak_ws_first_audio_delay_s and not await self._pause(fake.speak_ws_first_audio_delay_s, cleared):
                continue
            started, offset, n = loop.time(), 0, 0
            sizes = fake.speak_chunk_sizes
            while offset < len(audio) and epoch == self._epoch:
                if fake.speak_ws_hold_after is not None and n == fake.speak_ws_hold_after:
                    if not await self._hold(cleared):
                        break
                piece = audio[offset:offset + sizes[n % len(sizes)]]
                if fake.speak_ws_bytes_per_s:
                    ahead = (offset + len(piece)) / fake.speak_ws_bytes_per_s - (loop.time() - started)
                    if ahead > 0 and not await self._pause(ahead, cleared):
                        break
                async with self._write:
                    if epoch != self._epoch:
                        break
                    try:
                        await self._ws.send_bytes(piece)
                    except ConnectionResetError:
                        return
                    self.audio_sent += piece
                offset += len(piece)
                n += 1
            async with self._write:
                if epoch == self._epoch:
                    await self.send_json({"type": "Flushed", "sequence_id": sequence})

    async def _pause(self, seconds: float, cleared: asyncio.Event) -> bool:
        """Sleep; False when a Clear came meanwhile."""
        try:
            await asyncio.wait_for(cleared.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _hold(self, cleared: asyncio.Event) -> bool:
        """Stall until the fake's `release`; False when a Clear came first."""
        release = asyncio.ensure_future(self.fake.release.wait())
        clear = asyncio.ensure_future(cleared.wait())
        await asyncio.wait({release, clear}, return_when=asyncio.FIRST_COMPLETED)
        for task in (release, clear):
            task.cancel()
        return not cleared.is_set()

    async def _fatal(self, description: str) -> None:
        """Deepgram's answer to a message it cannot take: the connection closes with 1008."""
        await self.close(1008, description[:100])
