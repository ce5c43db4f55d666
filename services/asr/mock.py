"""An offline stand-in for Deepgram: the audio decides *when* (energy VAD), a script decides *what*.

Each speech segment consumes the next script line, and events come out in Deepgram's order and
stream-time timestamps, so the conversation engine runs exactly as it would against the network.

With no script at all (no `mockScript` and MOCK_ASR_SCRIPT empty) the caller is a real person on
a demo line: each thing they say becomes a SpeechNotUnderstood carrying what to tell them, so they
hear why nobody answers rather than "Are you still there?" and a hang-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping

from services.asr.base import AsrEvent, SpeechNotUnderstood, SpeechStarted, Transcript, UtteranceEnd
from services.audio.codec import TWILIO_RATE, rms

log = logging.getLogger("zylin.asr.mock")

FRAME_BYTES = TWILIO_RATE * 20 // 1000 * 2  # 20 ms of PCM16 at 8 kHz -> 320
FRAME_SAMPLES = FRAME_BYTES // 2
START_FRAMES = 2                # voiced frames in a row before SpeechStarted
MIN_SEGMENT_SAMPLES = 800       # 100 ms of voice before a segment counts as words
INTERIM_SAMPLES = 2400          # an interim result every 300 ms of voice
CHARS_PER_S = 15.0              # assumed speaking rate for revealing interim words

_CLOSED = object()


def script_for_call(call_params: Mapping[str, str], default: list[str]) -> list[str]:
    """The call's `mockScript` parameter (a JSON list of lines) if usable, else the default script."""
    raw = call_params.get("mockScript")
    if raw is None:
        return list(default)
    try:
        lines = json.loads(raw)
    except (TypeError, ValueError):
        log.warning("mockScript is not valid JSON; using the default script")
        return list(default)
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        log.warning("mockScript must be a JSON list of strings; using the default script")
        return list(default)
    return lines


class MockRecognizer:
    """A SpeechRecognizer that hears timing in the audio and reads the words from a script."""

    def __init__(self, script: list[str], endpointing_ms: int, delay_ms: float, threshold_rms: int,
                 utterance_end_ms: int = 1000, *, demo_notice: str, demo_reminder: str) -> None:
        """Without a script, the caller hears `demo_notice` the first time they speak, then `demo_reminder`."""
        self._script = deque(script)
        self._demo = not script       # nothing will ever be understood: say so to the caller
        self._demo_notice, self._demo_reminder = demo_notice, demo_reminder
        self._notices = 0
        self._endpoint_samples = endpointing_ms * TWILIO_RATE // 1000
        self._utterance_end_samples = utterance_end_ms * TWILIO_RATE // 1000
        self._delay_s = delay_ms / 1000
        self._threshold = threshold_rms
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._held: deque[tuple[float, AsrEvent]] = deque()  # delayed events, in release order
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._closed = False
        self._carry = b""
        self._samples = 0            # stream clock, in samples since the first frame
        self._run = 0                # voiced frames in a row, outside a segment
        self._run_start = 0
        # the current speech segment
        self._in_segment = False
        self._segment_start = 0
        self._voiced = 0             # voiced samples in the segment
        self._last_voice_end = 0
        self._line: str | None = None
        # words since the last UtteranceEnd
        self._words_pending = False
        self._last_word_end = 0

    async def start(self) -> None:
        self._started = True

    async def send(self, pcm16_8k: bytes) -> None:
        if self._closed:
            return  # the call is ending; late frames are dropped as a closed socket would
        if not self._started:
            raise RuntimeError("send() before start()")
        if self._carry:
            pcm16_8k, self._carry = self._carry + pcm16_8k, b""
        size = len(pcm16_8k)
        if size == FRAME_BYTES:
            self._frame(rms(pcm16_8k) >= self._threshold)
            return
        whole = size - size % FRAME_BYTES
        self._carry = pcm16_8k[whole:]
        for at in range(0, whole, FRAME_BYTES):
            self._frame(rms(pcm16_8k[at:at + FRAME_BYTES]) >= self._threshold)

    async def finalize(self) -> None:
        """The engine's VAD saw the end of speech: close the segment now, not at the endpoint."""
        if self._in_segment and not self._closed:
            self._end_segment()
        self._run = 0

    async def close(self) -> None:
        """Deliver what is still held back, then end `events()`."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._held:
            self._queue.put_nowait(self._held.popleft()[1])
        self._queue.put_nowait(_CLOSED)

    async def events(self) -> AsyncIterator[AsrEvent]:
        while True:
            event = await self._queue.get()
            if event is _CLOSED:
                return
            yield event  # type: ignore[misc]

    # --- per frame ------------------------------------------------------------------------

    def _frame(self, voiced: bool) -> None:
        start = self._samples
        self._samples = end = start + FRAME_SAMPLES
        if voiced:
            if self._in_segment:
                self._voice(end)
                return
            if self._run == 0:
                self._run_start = start
            self._run += 1
            if self._run >= START_FRAMES:
                self._begin_segment()
            return
        self._run = 0
        if self._in_segment:
            if end - self._last_voice_end >= self._endpoint_samples:
                self._end_segment()
        if self._words_pending and end - self._last_word_end >= self._utterance_end_samples \
                and not self._in_segment:
            self._words_pending = False
            self._emit(UtteranceEnd(self._last_word_end / TWILIO_RATE))

    def _begin_segment(self) -> None:
        self._in_segment = True
        self._segment_start = self._run_start
        self._voiced = self._samples - self._run_start
        self._last_voice_end = self._samples
        self._line = None
        self._run = 0
        self._emit(SpeechStarted(self._run_start / TWILIO_RATE))

    def _voice(self, end: int) -> None:
        before = self._voiced
        self._voiced += FRAME_SAMPLES
        self._last_voice_end = end
        if self._line is None and self._voiced >= MIN_SEGMENT_SAMPLES > before:
            if self._script:
                self._line = self._script.popleft()
            else:
                log.debug("mock ASR heard speech at %.2fs but the script is exhausted",
                          self._segment_start / TWILIO_RATE)
        if self._line and self._voiced // INTERIM_SAMPLES > before // INTERIM_SAMPLES:
            self._emit(Transcript(self._partial(self._line), is_final=False, speech_final=False,
                                  start_s=self._segment_start / TWILIO_RATE,
                                  end_s=end / TWILIO_RATE))

    def _partial(self, line: str) -> str:
        words = line.split()
        expected = max(len(line) / CHARS_PER_S, 0.3)
        shown = int(len(words) * (self._voiced / TWILIO_RATE) / expected)
        return " ".join(words[:max(1, min(len(words), shown))])

    def _end_segment(self) -> None:
        """Endpoint or finalize: the segment's one final result, after the recognition delay."""
        self._in_segment = False
        line, self._line = self._line, None
        if not line:
            if self._demo and self._voiced >= MIN_SEGMENT_SAMPLES:
                self._emit(self._not_understood(), delay_s=self._delay_s)
            return
        self._words_pending = True
        self._last_word_end = self._last_voice_end
        self._emit(Transcript(line, is_final=True, speech_final=True,
                              start_s=self._segment_start / TWILIO_RATE,
                              end_s=self._last_voice_end / TWILIO_RATE), delay_s=self._delay_s)

    def _not_understood(self) -> SpeechNotUnderstood:
        """The demo notice the first time; after that a short reminder."""
        self._notices += 1
        if self._notices == 1:
            log.info("mock ASR has no script: telling the caller this line runs in demo mode")
        return SpeechNotUnderstood(self._demo_notice if self._notices == 1 else self._demo_reminder,
                                   start_s=self._segment_start / TWILIO_RATE,
                                   end_s=self._last_voice_end / TWILIO_RATE)

    # --- delivery -------------------------------------------------------------------------

    def _emit(self, event: AsrEvent, delay_s: float = 0.0) -> None:
        """Queue an event; a delayed one holds back everything after it, keeping Deepgram's order."""
        if not delay_s and not self._held:
            self._queue.put_nowait(event)
            return
        loop = asyncio.get_running_loop()
        release_at = loop.time() + delay_s
        if self._held:
            release_at = max(release_at, self._held[-1][0])
        self._held.append((release_at, event))
        if self._timer is None:
            self._timer = loop.call_at(self._held[0][0], self._release)

    def _release(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # the loop may run a timer a hair early
        while self._held and self._held[0][0] <= now:
            self._queue.put_nowait(self._held.popleft()[1])
        if self._held:
            self._timer = loop.call_at(self._held[0][0], self._release)
