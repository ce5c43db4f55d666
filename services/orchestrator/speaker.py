"""Sentences in, mu-law frames out: synthesis runs one sentence ahead of sending, so each
sentence's first audio leaves as early as possible."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from services.audio.codec import OutboundEncoder, TWILIO_RATE
from services.llm.base import Message
from services.orchestrator.latency import TurnLatency
from services.telephony.media_streams import StreamSender
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.speaker")

MAX_MESSAGE_FRAMES = 50  # one media message carries at most 1 s of audio


@dataclass(slots=True)
class SpokenSentence:
    text: str
    mark: str
    message: Message | None             # the assistant message this text belongs to
    audio_bytes: int = 0
    first_sent_at: float | None = None
    played_at: float | None = None      # Twilio echoed its mark

    @property
    def duration_s(self) -> float:
        return self.audio_bytes / TWILIO_RATE


class Synthesis:
    """One sentence's TTS request, pulling audio into a queue as soon as it is started."""

    def __init__(self, tts: SpeechSynthesizer, text: str, message: Message | None) -> None:
        self.text = text
        self.message = message
        self.requested_at = time.monotonic()
        self.first_byte_at: float | None = None
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pull(tts))

    async def _pull(self, tts: SpeechSynthesizer) -> None:
        stream = tts.synthesize(self.text)
        try:
            async for chunk in stream:
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self._queue.put_nowait(chunk)
        except Exception as exc:
            self._queue.put_nowait(exc)
        finally:
            await stream.aclose()  # cancellation closes the provider's HTTP stream now
            self._queue.put_nowait(None)

    async def chunks(self):
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        self._task.cancel()


@dataclass(slots=True)
class Speaker:
    """Speaks one reply: `say()` sentences as the brain writes them, `finish()`, await `run()`."""
    tts: SpeechSynthesizer
    encoder: OutboundEncoder
    sender: StreamSender
    gen: int
    latency: TurnLatency
    sentences: list[SpokenSentence] = field(default_factory=list)
    _inbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    _jobs: asyncio.Queue = field(default_factory=asyncio.Queue)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    _live: list[Synthesis] = field(default_factory=list)

    def say(self, text: str, message: Message | None = None) -> None:
        self._inbox.put_nowait((text, message))

    def finish(self) -> None:
        self._inbox.put_nowait(None)

    async def run(self) -> None:
        starter = asyncio.create_task(self._start_syntheses())
        try:
            while (job := await self._jobs.get()) is not None:
                try:
                    await self._send(job)
                finally:
                    job.cancel()
                    self._live.remove(job)
                    self._slots.release()
        finally:
            starter.cancel()
            for job in self._live:
                job.cancel()
            self.encoder.reset()

    async def _start_syntheses(self) -> None:
        while (item := await self._inbox.get()) is not None:
            await self._slots.acquire()
            job = Synthesis(self.tts, *item)
            if self.latency.tts_request_at is None:
                self.latency.tts_request_at = job.requested_at
            self._live.append(job)
            self._jobs.put_nowait(job)
        self._jobs.put_nowait(None)

    async def _send(self, job: Synthesis) -> None:
        sentence = SpokenSentence(job.text, f"{self.gen}.{len(self.sentences)}", job.message)
        try:
            async for chunk in job.chunks():
                if self.latency.tts_first_at is None:
                    self.latency.tts_first_at = job.first_byte_at
                await self._send_audio(sentence, self.encoder.push(chunk))
        except Exception as exc:
            log.error("speech synthesis failed for a sentence (%s); skipping it", exc)
            self.encoder.reset()
            return
        await self._send_audio(sentence, self.encoder.flush())
        if sentence.audio_bytes:
            self.sentences.append(sentence)
            await self.sender.mark(sentence.mark)

    async def _send_audio(self, sentence: SpokenSentence, ulaw: bytes) -> None:
        if not ulaw:
            return
        await send_frames(self.sender, ulaw)
        now = time.monotonic()
        if sentence.first_sent_at is None:
            sentence.first_sent_at = now
        if self.latency.first_audio_at is None:
            self.latency.first_audio_at = now
        sentence.audio_bytes += len(ulaw)


async def send_frames(sender: StreamSender, ulaw: bytes) -> None:
    step = MAX_MESSAGE_FRAMES * 160
    for start in range(0, len(ulaw), step):
        await sender.media(ulaw[start:start + step])
