"""Sentences in, mu-law frames out: synthesis runs one sentence ahead of sending, so each
sentence's first audio leaves as early as possible.

A sentence is never silence because one voice failed: when the main voice fails before the
sentence's first audio byte (an error, or nothing within the first-byte bound), the fallback voice
says the same sentence; when no voice can, the caller hears a short pre-rendered apology, once per
reply. A voice that breaks off mid-sentence is not repeated: the next sentence follows. The call
log hears of each through `on_event`: this module never writes to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from services.audio.codec import FRAME_BYTES, TWILIO_RATE, OutboundEncoder
from services.llm.base import Message
from services.orchestrator.latency import TurnLatency
from services.receptionist.lines import APOLOGY_LINE
from services.storage.vocabulary import EventKind
from services.telephony.media_streams import StreamSender
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.speaker")

MAX_MESSAGE_FRAMES = 50  # one media message carries at most 1 s of audio
# A reply's marks are `<gen>.<sentence index>` after each sentence, and `<gen>.start` after its
# first frame: Twilio echoes that one once the caller has begun to hear the reply.
START_MARK = "start"
# A voice with no audio this long after a sentence was asked of it has failed that sentence.
# Aura answers in ~0.3 s and OpenAI's speech in ~0.5-1.5 s; past 3 s the caller hears dead air.
TTS_FIRST_BYTE_TIMEOUT_S = 3.0


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


@dataclass(slots=True)
class SpeechFallback:
    """What speaks when the main voice cannot. One per process, shared by every call; the
    apology is filled in at start-up (Runtime.warm_up), before it can be needed."""
    tts: SpeechSynthesizer | None = None   # says a sentence the main voice failed before its first byte
    apology: bytes | None = None           # APOLOGY_LINE, mu-law 8 kHz: heard when no voice can speak
    quality: str = "HQ"                    # soxr quality for resampling the fallback voice
    first_byte_timeout_s: float = TTS_FIRST_BYTE_TIMEOUT_S


class SpeechFailed(Exception):
    """No voice produced a byte of the sentence; the message says why, voice by voice."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("; ".join(failures))


def voice_name(tts: SpeechSynthesizer) -> str:
    """'deepgram', 'openai' or 'mock': the provider part of the voice's cache key."""
    return tts.cache_key.partition(":")[0]


def describe(exc: BaseException) -> str:
    """A log-safe reason: the error's kind and status, never headers, bodies or keys."""
    if isinstance(exc, TimeoutError):
        return "no audio within the first-byte timeout"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def failure(tts: SpeechSynthesizer, exc: BaseException) -> str:
    """'deepgram: HTTP 500': which voice failed and why, safe to log and to record."""
    return f"{voice_name(tts)}: {describe(exc)}"


class Synthesis:
    """One sentence's TTS request, pulling audio into a queue as soon as it is started. The
    voices are tried in order until one gives a first byte within the bound."""

    def __init__(self, voices: tuple[SpeechSynthesizer, ...], text: str, message: Message | None,
                 first_byte_timeout_s: float = TTS_FIRST_BYTE_TIMEOUT_S) -> None:
        self.text = text
        self.message = message
        self.requested_at = time.monotonic()
        self.first_byte_at: float | None = None
        self.voice: SpeechSynthesizer | None = None   # whose audio this is, once it has some
        self.failures: list[str] = []                 # the voices that failed before a byte, and why
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pull(voices, first_byte_timeout_s))

    async def _pull(self, voices: tuple[SpeechSynthesizer, ...], first_byte_timeout_s: float) -> None:
        try:
            for tts in voices:
                if await self._speak(tts, first_byte_timeout_s):
                    return
            self._queue.put_nowait(SpeechFailed(self.failures))
        finally:
            self._queue.put_nowait(None)

    async def _speak(self, tts: SpeechSynthesizer, first_byte_timeout_s: float) -> bool:
        """Stream `tts`'s audio into the queue; False when it failed before its first byte."""
        stream = tts.synthesize(self.text)
        try:
            try:
                async with asyncio.timeout(first_byte_timeout_s):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return True  # nothing to say
            except Exception as exc:
                self.failures.append(failure(tts, exc))  # a reason, not the error: no frames kept
                return False
            self.first_byte_at = time.monotonic()
            self.voice = tts
            self._queue.put_nowait(chunk)
            async for chunk in stream:
                self._queue.put_nowait(chunk)
        except Exception as exc:
            self._queue.put_nowait(exc)  # broke off mid-sentence: the speaker goes on
        finally:
            await stream.aclose()  # cancellation or a stall closes the provider's HTTP stream now
        return True

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        self._task.cancel()


@dataclass(slots=True)
class Speaker:
    """Speaks one reply: `say()` sentences as the brain writes them, `finish()`, await `run()`.
    `encoder` is built for the main voice's format; the fallback's audio gets its own encoder."""
    tts: SpeechSynthesizer
    encoder: OutboundEncoder
    sender: StreamSender
    gen: int
    latency: TurnLatency
    fallback: SpeechFallback | None = None
    on_event: Callable[..., None] | None = None   # (kind, **detail): the call log's event
    gate: asyncio.Event | None = None   # a speculative reply: synthesize now, send once it is set
    sentences: list[SpokenSentence] = field(default_factory=list)
    _inbox: asyncio.Queue[tuple[str, Message | None] | None] = field(default_factory=asyncio.Queue)
    _jobs: asyncio.Queue[Synthesis | None] = field(default_factory=asyncio.Queue)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    _live: list[Synthesis] = field(default_factory=list)
    _fallback_encoder: OutboundEncoder | None = None
    _apologized: bool = False

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
            if self._fallback_encoder is not None:
                self._fallback_encoder.reset()

    async def _start_syntheses(self) -> None:
        fallback = self.fallback
        voices = (self.tts,) if fallback is None or fallback.tts is None else (self.tts, fallback.tts)
        bound = TTS_FIRST_BYTE_TIMEOUT_S if fallback is None else fallback.first_byte_timeout_s
        while (item := await self._inbox.get()) is not None:
            await self._slots.acquire()
            job = Synthesis(voices, *item, first_byte_timeout_s=bound)
            if self.latency.tts_request_at is None:
                self.latency.tts_request_at = job.requested_at
            self._live.append(job)
            self._jobs.put_nowait(job)
        self._jobs.put_nowait(None)

    async def _send(self, job: Synthesis) -> None:
        sentence = SpokenSentence(job.text, f"{self.gen}.{len(self.sentences)}", job.message)
        chunks = job.chunks()
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            return  # nothing to say
        except SpeechFailed as failed:
            await self._unspoken(sentence, failed)
            return
        voice = job.voice
        assert voice is not None  # a voice is set before its first byte is queued
        encoder = self.encoder if voice is self.tts else self._taken_over(job)
        if self.latency.tts_first_at is None:
            self.latency.tts_first_at = job.first_byte_at
        try:
            await self._send_audio(sentence, encoder.push(first))
            async for chunk in chunks:
                await self._send_audio(sentence, encoder.push(chunk))
        except Exception as exc:  # what was sent stays sent (and marked); the next sentence follows
            reason = failure(voice, exc)
            log.error("speech synthesis broke off mid-sentence (%s); going on with the next", reason)
            self._report(EventKind.PROVIDER_ERROR, provider="tts", heard="part", error=reason)
        await self._send_audio(sentence, encoder.flush())
        if sentence.audio_bytes:
            self.sentences.append(sentence)
            await self.sender.mark(sentence.mark)

    def _taken_over(self, job: Synthesis) -> OutboundEncoder:
        """The fallback voice took the sentence over: the call log hears of it, and its audio gets
        an encoder of its own, as its rate and encoding may differ from the main voice's (Aura
        mu-law 8 kHz, OpenAI PCM 24 kHz)."""
        voice, reason, fallback = job.voice, "; ".join(job.failures), self.fallback
        assert voice is not None and fallback is not None  # only a fallback voice takes a sentence over
        log.warning("the main voice failed a sentence (%s); %s says it", reason, voice_name(voice))
        self._report(EventKind.TTS_FALLBACK, provider=voice_name(self.tts), error=reason,
                     spoken_by=voice_name(voice))
        if self._fallback_encoder is None:
            self._fallback_encoder = OutboundEncoder(voice.sample_rate, voice.encoding, fallback.quality)
        return self._fallback_encoder

    async def _unspoken(self, sentence: SpokenSentence, failed: SpeechFailed) -> None:
        """No voice could say the sentence: the caller hears the apology, once per reply."""
        apology = self.fallback.apology if self.fallback is not None else None
        heard = "apology" if apology and not self._apologized else "nothing"
        log.error("no voice could say a sentence (%s); the caller hears %s", failed, heard)
        self._report(EventKind.PROVIDER_ERROR, provider="tts", error=str(failed), heard=heard)
        if apology is None or heard == "nothing":  # (no apology: heard is "nothing")
            return
        self._apologized = True
        if self.latency.tts_first_at is None:
            self.latency.tts_first_at = time.monotonic()  # the voices' share of the wait ends here
        said = SpokenSentence(APOLOGY_LINE, sentence.mark, None)
        await self._send_audio(said, apology)
        self.sentences.append(said)
        await self.sender.mark(said.mark)

    def _report(self, kind: EventKind, **detail: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, **detail)

    async def _send_audio(self, sentence: SpokenSentence, ulaw: bytes) -> None:
        if not ulaw:
            return
        if self.gate is not None and not self.gate.is_set():
            await self.gate.wait()
        first = self.latency.first_audio_at is None
        await send_frames(self.sender, ulaw, start_mark(self.gen) if first else None)
        now = time.monotonic()
        if sentence.first_sent_at is None:
            sentence.first_sent_at = now
        if self.latency.first_audio_at is None:
            self.latency.first_audio_at = now
        sentence.audio_bytes += len(ulaw)


def start_mark(gen: int) -> str:
    return f"{gen}.{START_MARK}"


async def send_frames(sender: StreamSender, ulaw: bytes, start: str | None = None) -> None:
    """`ulaw` in media messages of up to a second; with `start`, a reply's first audio: its first
    frame goes alone, followed by that mark."""
    if start is not None:
        await sender.media(ulaw[:FRAME_BYTES])
        await sender.mark(start)
        ulaw = ulaw[FRAME_BYTES:]
    step = MAX_MESSAGE_FRAMES * FRAME_BYTES
    for start_at in range(0, len(ulaw), step):
        await sender.media(ulaw[start_at:start_at + step])
