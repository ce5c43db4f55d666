"""Turn-taking with the neural VAD (the default) through the real server, on real sound.

What the caller's line carries while Zylin greets: pink noise, mains hum, a cough, Zylin's own
voice coming back as echo, or a person (espeak-ng) cutting in. Only the person may stop Zylin.

The mock recognizer finds speech by energy (services/asr/mock.py), so it takes loud noise for
speech too and would read it the next line of its script. A real recognizer hears no words in
noise: the calls without a person on them script one empty line, which is just that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection

from bench.turn_corpus import at_dbfs, cough, espeak_available, hum, pink, spoken_ulaw, to_ulaw
from services.audio.codec import FRAME_BYTES, FRAME_MS, TWILIO_RATE, pcm_to_ulaw, rms, ulaw_to_pcm
from services.orchestrator.record import MemoryRecorder, TurnRecord
from services.telephony import media_streams as wire
from tests.conftest import Running, running_zylin

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (CI installs it)")

SILENCE = b"\xff" * FRAME_BYTES
PERIOD_S = FRAME_MS / 1000          # real time: what the caller heard is timed on the wall clock
GREETING_END = "1.0"                # the greeting's one mark after its audio (reply 1, sentence 0)
NO_WORDS = json.dumps([""])         # the recognizer hears sounds but no words in them
INTERRUPTION = "Wait, sorry, I need to change that."

Source = Callable[[bytes], bytes]   # the frame the caller's ear just played -> the frame the line sends


class Line:
    """Twilio's side of one Media Stream at real time: each 20 ms one inbound frame goes out (from
    `source`) and one frame of Zylin's audio plays; a mark is echoed once the audio before it has
    played, and `clear` drops what is queued and echoes its marks at once, as Twilio does."""

    def __init__(self, ws: ClientConnection, call_sid: str, source: Source) -> None:
        self.ws, self.call_sid, self.source = ws, call_sid, source
        self.stream_sid = "MZ" + call_sid[2:]
        self.clears: list[float] = []
        self.cleared = asyncio.Event()
        self.played: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)  # marks heard to the end
        self.played_s = 0.0                # how much of it the ear has played
        self.loudest_sent = 0              # RMS of the loudest frame the line sent
        self._queue: deque[bytes | str] = deque()
        self._due: list[str] = []          # marks passed in the last tick: echoed at the next
        self._seq = 0
        self._tick = asyncio.Event()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(wire.inbound_connected())
        await self.ws.send(wire.inbound_start(self._next(), self.stream_sid, self.call_sid, "AC" + "1" * 32, params))

    async def stop(self) -> None:
        await self.ws.send(wire.inbound_stop(self._next(), self.stream_sid, self.call_sid, "AC" + "1" * 32))

    async def until(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Wait, a tick at a time, for `ready()`; fail the test after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not ready():
                await self._tick.wait()

    async def receive(self) -> None:
        async for message in self.ws:
            assert isinstance(message, str)
            out = wire.parse_outbound(message)
            if out.event == "media":
                self._queue.append(out.payload)
            elif out.event == "mark":
                self._queue.append(out.name)
            else:
                self.clears.append(time.monotonic())
                self.cleared.set()
                dropped = self._due + [m for m in self._queue if isinstance(m, str)]
                self._queue.clear()
                self._due = []
                for name in dropped:
                    await self.ws.send(wire.inbound_mark(self._next(), self.stream_sid, name))

    async def run(self) -> None:
        next_t = time.monotonic()
        for chunk in itertools.count(1):
            due, self._due = self._due, []
            while self._queue and isinstance(self._queue[0], str):
                due.append(self._queue.popleft())  # type: ignore[arg-type]
            for name in due:
                await self.ws.send(wire.inbound_mark(self._next(), self.stream_sid, name))
                self.played[name].set()
            heard = self._play()
            frame = self.source(heard)
            self.loudest_sent = max(self.loudest_sent, rms(ulaw_to_pcm(frame)))
            await self.ws.send(wire.inbound_media(self._next(), self.stream_sid, chunk, (chunk - 1) * FRAME_MS, frame))
            self._tick.set()
            self._tick = asyncio.Event()
            next_t += PERIOD_S
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    def _play(self) -> bytes:
        """One frame of Zylin's queued audio (silence-padded); marks passed on the way are due next tick."""
        frame = bytearray()
        while self._queue and len(frame) < FRAME_BYTES:
            head = self._queue.popleft()
            if isinstance(head, str):
                self._due.append(head)
                continue
            need = FRAME_BYTES - len(frame)
            frame += head[:need]
            if len(head) > need:
                self._queue.appendleft(head[need:])
        if frame:
            self.played_s += PERIOD_S
        return bytes(frame) + SILENCE[len(frame):]


@contextlib.asynccontextmanager
async def call(zylin: Running, call_sid: str, script: str, source: Source) -> AsyncIterator[Line]:
    """A call placed through the signed webhook, its stream driven by `source`; hung up (a `stop`)
    when the block ends."""
    _, params = await zylin.stream_twiml(call_sid)
    async with zylin.media_socket() as ws:
        line = Line(ws, call_sid, source)
        await line.start({**params, "mockScript": script})
        tasks = [asyncio.create_task(line.receive()), asyncio.create_task(line.run())]
        try:
            yield line
            await line.stop()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# --- what the line carries ------------------------------------------------------------------------

def frames_of(ulaw: bytes) -> Iterator[bytes]:
    return (ulaw[i:i + FRAME_BYTES] for i in range(0, len(ulaw) - FRAME_BYTES + 1, FRAME_BYTES))


def looped(ulaw: bytes) -> Source:
    """The same sound over and over, whatever Zylin says."""
    frames = itertools.cycle(list(frames_of(ulaw)))
    return lambda _heard: next(frames)


def floor(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A quiet line: pink noise at -60 dBFS, never digital zero."""
    return at_dbfs(pink(int(seconds * TWILIO_RATE), rng), -60.0)


def with_sound_at(background: np.ndarray, sound: np.ndarray, at_s: float) -> bytes:
    mixed = background.copy()
    start = int(at_s * TWILIO_RATE)
    mixed[start:start + len(sound)] += sound[:len(mixed) - start]
    return to_ulaw(mixed)


def echo_of_zylin(loss_db: float) -> Source:
    """Zylin's voice coming back down the line `loss_db` quieter, as it plays."""
    gain = 10 ** (-loss_db / 20)

    def source(heard: bytes) -> bytes:
        pcm = np.frombuffer(ulaw_to_pcm(heard), dtype=np.int16).astype(np.float64) * gain
        return pcm_to_ulaw(np.round(pcm).astype(np.int16).tobytes())
    return source


class Speaking:
    """Background sound until `say`, then the line's audio, then the background again."""

    def __init__(self, background: Source) -> None:
        self.background = background
        self.frames: Iterator[bytes] = iter(())
        self.started_at: float | None = None
        self.done = asyncio.Event()

    def say(self, ulaw: bytes) -> None:
        self.frames = frames_of(ulaw)
        self.started_at = time.monotonic()

    def __call__(self, heard: bytes) -> bytes:
        frame = next(self.frames, None)
        if frame is None:
            if self.started_at is not None:
                self.done.set()
            return self.background(heard)
        return frame


async def ended(zylin: Running, call_sid: str) -> dict[str, Any]:
    """The call's record, once the server has closed it (these servers keep calls in memory)."""
    assert isinstance(zylin.recorder, MemoryRecorder)
    return await zylin.recorder.wait_ended(call_sid)


# --- checks ---------------------------------------------------------------------------------------

def greeting_of(record: dict[str, Any]) -> TurnRecord:
    return next(t for t in record["turns"] if t.speaker == "zylin")


def barge_ins(record: dict[str, Any]) -> list[str]:
    return [e.detail["why"] for e in record["events"] if e.kind == "barge_in"]


async def greeting_over(source: Source, call_sid: str) -> tuple[Line, dict[str, Any]]:
    """A call with the neural VAD in which the line carries `source` all through the greeting; the
    call is hung up once the greeting's last mark has come back."""
    async with running_zylin(vad="neural") as zylin:
        async with call(zylin, call_sid, NO_WORDS, source) as line:
            await line.until(lambda: line.played[GREETING_END].is_set() or line.cleared.is_set(), 12)
        record = await ended(zylin, call_sid)
    return line, record


def assert_zylin_talked_on(line: Line, record: dict[str, Any]) -> None:
    assert not line.clears, "Zylin stopped: `clear` was sent"
    assert barge_ins(record) == []
    greeting = greeting_of(record)
    assert greeting.text.startswith("Thanks for calling") and not greeting.interrupted
    assert greeting.heard_text == greeting.text, "the whole greeting was heard"
    assert line.played[GREETING_END].is_set() and line.played_s > 4.0, "the greeting played to its end"


# --- the tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pink", "hum"])
async def test_steady_noise_at_minus_30_dbfs_over_the_greeting_stops_nothing(kind: str):
    rng = np.random.default_rng(11)
    n = 8 * TWILIO_RATE
    noise = pink(n, rng) if kind == "pink" else hum(n, 50.0, rng)  # hum: 50 Hz and its harmonics
    call_sid = "CA" + ("a1" if kind == "pink" else "a2") * 16
    line, record = await greeting_over(looped(to_ulaw(at_dbfs(noise, -30.0))), call_sid)

    assert line.loudest_sent > 800, "the noise was on the line, loud enough for the recognizer"
    assert_zylin_talked_on(line, record)


async def test_a_cough_over_the_greeting_stops_nothing():
    rng = np.random.default_rng(12)
    burst = at_dbfs(cough(0.3, rng), -14.0)
    line, record = await greeting_over(looped(with_sound_at(floor(10.0, rng), burst, 1.5)), "CA" + "a3" * 16)

    assert line.loudest_sent > 2000, "the cough was on the line"
    assert_zylin_talked_on(line, record)


async def test_zylins_own_voice_echoed_back_25_db_down_stops_nothing():
    # The mock voice 25 dB down stays under VAD_MIN_RMS (400), the floor that keeps echo from the
    # model; louder echo (-15 dB) does start speech (docs/benchmarks.md §6), as it does here.
    line, record = await greeting_over(echo_of_zylin(25.0), "CA" + "a4" * 16)

    assert line.loudest_sent > 100, "the echo was on the line"
    assert_zylin_talked_on(line, record)


async def test_a_caller_who_says_wait_sorry_over_the_greeting_stops_it_and_history_keeps_what_was_heard():
    call_sid = "CA" + "a5" * 16
    rng = np.random.default_rng(13)
    speaking = Speaking(looped(to_ulaw(floor(4.0, rng))))
    said = spoken_ulaw(INTERRUPTION)
    # espeak pauses at each comma about as long as the end of speech (300 ms): over the line's
    # noise floor such a pause now and then ended the caller's turn mid-line, and the rest of the
    # line cut Zylin's answer too. A longer end of speech keeps the line one turn; the barge-in on
    # "Wait" is what is tested.
    async with running_zylin(vad="neural", vad_end_silence_ms=600, mock_asr_endpointing_ms=600) as zylin:
        async with call(zylin, call_sid, json.dumps([INTERRUPTION]), speaking) as line:
            await line.until(lambda: line.played_s >= 1.0, 8)  # a second into the greeting
            speaking.say(said)
            await asyncio.wait_for(line.cleared.wait(), 5)
            await asyncio.wait_for(speaking.done.wait(), 5)
            await asyncio.wait_for(line.played["2.0"].wait(), 8)   # the answer's first sentence
        record = await ended(zylin, call_sid)

    assert speaking.started_at is not None
    [clear] = line.clears
    # 300 ms of speech, or the interim "Wait," that comes with it; then a loaded machine's slack.
    assert clear - speaking.started_at < 0.6, "Zylin stopped soon after the caller's first word"
    assert len(barge_ins(record)) == 1
    greeting = greeting_of(record)
    assert greeting.interrupted
    assert greeting.heard_text and len(greeting.heard_text) < len(greeting.text)
    assert greeting.heard_text.startswith("Thanks for calling")
    history = [(m.role, m.content) for m in record["history"]]
    assert history[0] == ("assistant", greeting.heard_text), "history holds only the heard part"
    assert history[1] == ("user", INTERRUPTION), "what the caller said is their turn"
