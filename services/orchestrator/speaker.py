"""Sentences in, mu-law frames out: synthesis runs one sentence ahead of sending, so each
sentence's first audio leaves as early as possible, and a fixed line (the phrase cache) leaves
within a few ms.

A sentence is never silence because one voice failed. The caller's silence is bounded by
TTS_MAX_GAP_MS: a voice that gives no audio for a sentence (an error, a dropped socket, or
nothing by the time the audio already sent has played out plus the give-up time) is dropped for
that sentence, and the call switches to the other voice, which says the sentence from its start
(also when the first voice broke off mid-sentence) and the rest of the call. When no voice can
speak, the caller hears a short pre-rendered apology, once per reply. The call log hears of each
switch and failure through `on_event`: this module never writes to it.
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
from services.orchestrator.phrases import PhraseCache
from services.receptionist.lines import APOLOGY_LINE
from services.storage.vocabulary import EventKind
from services.telephony.media_streams import StreamSender
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.speaker")

MAX_MESSAGE_FRAMES = 50  # one media message carries at most 1 s of audio
# A reply's marks are `<gen>.<sentence index>` after each sentence, and `<gen>.start` after its
# first frame: Twilio echoes that one once the caller has begun to hear the reply.
START_MARK = "start"
TTS_MAX_GAP_S = 1.5
# Of the bound, what the other voice needs for its first audio once the call switches to it (Aura
# streaming ~0.2 s, OpenAI Realtime ~0.4 s, both connected since the call began): a voice is given
# up this much before the caller's silence reaches the bound.
SWITCH_LEAD_S = 0.5
MIN_GIVE_UP_S = 0.3


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
    """What speaks when a call's voice cannot. One per process, shared by every call; the
    apology is filled in at start-up (Runtime.warm_up), before it can be needed."""
    tts: SpeechSynthesizer | None = None   # the other voice (a process voice: `for_call` gives a call's)
    apology: bytes | None = None           # APOLOGY_LINE, mu-law 8 kHz: heard when no voice can speak
    quality: str = "HQ"                    # soxr quality for resampling a voice's audio
    max_gap_s: float = TTS_MAX_GAP_S       # TTS_MAX_GAP_MS: the longest silence a failing voice may cause
    phrases: PhraseCache | None = None     # fixed lines, pre-rendered per voice


@dataclass(slots=True)
class CallVoices:
    """The voices one call speaks with, in the order they are tried: the main one until it fails
    a sentence, then the other for the rest of the call (and back, should that one fail)."""
    order: list[SpeechSynthesizer]
    apology: bytes | None = None
    quality: str = "HQ"
    max_gap_s: float = TTS_MAX_GAP_S
    phrases: PhraseCache | None = None
    switches: int = 0

    @classmethod
    def for_call(cls, main: SpeechSynthesizer, fallback: SpeechFallback | None,
                 on_event: Callable[..., None] | None = None) -> CallVoices:
        """A call's voices: each process voice's `for_call` (a streaming voice connects now)."""
        if fallback is None:
            return cls([main.for_call(on_event)])
        order = [main.for_call(on_event)]
        if fallback.tts is not None:
            order.append(fallback.tts.for_call(on_event))
        return cls(order, fallback.apology, fallback.quality, fallback.max_gap_s, fallback.phrases)

    @property
    def current(self) -> SpeechSynthesizer:
        return self.order[0]

    @property
    def give_up_s(self) -> float:
        """How long a voice may leave the caller in silence before the call moves on from it."""
        return max(MIN_GIVE_UP_S, self.max_gap_s - SWITCH_LEAD_S)

    def phrase(self, text: str) -> bytes | None:
        return self.phrases.audio(self.current, text) if self.phrases is not None else None

    def after(self, failed: SpeechSynthesizer, tried: list[SpeechSynthesizer]) -> SpeechSynthesizer | None:
        """The voice to try once `failed` failed a sentence (none of `tried` again). If `failed`
        was the call's voice, the call switches: it stays with the new one from now on."""
        following = next((v for v in self.order if all(v is not t for t in tried)), None)
        if following is not None and self.order[0] is failed:
            self.order.remove(following)
            self.order.insert(0, following)
            self.switches += 1
        return following

    async def close(self, keep: tuple[SpeechSynthesizer | None, ...]) -> None:
        """Close the call's own voices (not the process voices in `keep`, which `for_call` may
        have returned as they are)."""
        for voice in self.order:
            if all(voice is not k for k in keep):
                await voice.close()


def voice_name(tts: SpeechSynthesizer) -> str:
    """'deepgram', 'openai' or 'mock': the provider part of the voice's cache key."""
    return tts.cache_key.partition(":")[0].partition("-")[0]


def describe(exc: BaseException) -> str:
    """A log-safe reason: the error's kind and status, never headers, bodies or keys."""
    if isinstance(exc, TimeoutError):
        return "no audio in time"
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
    """One sentence asked of one voice, its audio pulled into a queue from the moment it is
    asked; or a phrase whose audio is ready (`ready`: mu-law 8 kHz, `voice` None)."""

    def __init__(self, voice: SpeechSynthesizer | None, text: str, message: Message | None,
                 ready: bytes | None = None) -> None:
        self.voice = voice
        self.text = text
        self.message = message
        self.requested_at = time.monotonic()
        self.first_byte_at: float | None = None
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        if ready is not None:
            self.first_byte_at = self.requested_at
            self._queue.put_nowait(ready)
            self._queue.put_nowait(None)
        else:
            assert voice is not None
            self._task = asyncio.create_task(self._pull(voice))

    async def _pull(self, voice: SpeechSynthesizer) -> None:
        stream = voice.synthesize(self.text)
        try:
            async for chunk in stream:
                if chunk:
                    if self.first_byte_at is None:
                        self.first_byte_at = time.monotonic()
                    self._queue.put_nowait(chunk)
        except Exception as exc:
            self._queue.put_nowait(exc)
        finally:
            await stream.aclose()  # a cancel (barge-in, a voice given up) tells the provider to stop
            self._queue.put_nowait(None)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class VoiceFailed(Exception):
    """A voice gave no (more) audio for a sentence; `reason` is log-safe, `part` says whether
    some of the sentence had been sent."""

    def __init__(self, reason: str, part: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.part = part


@dataclass(slots=True)
class Speaker:
    """Speaks one reply: `say()` sentences as the brain writes them, `finish()`, await `run()`."""
    voices: CallVoices
    sender: StreamSender
    gen: int
    latency: TurnLatency
    on_event: Callable[..., None] | None = None   # (kind, **detail): the call log's event
    gate: asyncio.Event | None = None   # a speculative reply: synthesize now, send once it is set
    sentences: list[SpokenSentence] = field(default_factory=list)
    _inbox: asyncio.Queue[tuple[str, Message | None] | None] = field(default_factory=asyncio.Queue)
    _jobs: asyncio.Queue[Synthesis | None] = field(default_factory=asyncio.Queue)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    _live: list[Synthesis] = field(default_factory=list)
    _encoders: dict[int, OutboundEncoder] = field(default_factory=dict)   # by id(voice): rates differ
    _played_out_at: float = 0.0     # when the audio sent so far will have played (monotonic)
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
                    await self._speak(job)
                finally:
                    self._slots.release()
        finally:
            starter.cancel()
            for job in self._live:
                job.cancel()
            for encoder in self._encoders.values():
                encoder.reset()

    async def _start_syntheses(self) -> None:
        while (item := await self._inbox.get()) is not None:
            await self._slots.acquire()
            text, message = item
            ready = self.voices.phrase(text)
            job = self._ask(None if ready else self.voices.current, text, message, ready)
            if self.latency.tts_request_at is None:
                self.latency.tts_request_at = job.requested_at
            self._jobs.put_nowait(job)
        self._jobs.put_nowait(None)

    def _ask(self, voice: SpeechSynthesizer | None, text: str, message: Message | None,
             ready: bytes | None = None) -> Synthesis:
        job = Synthesis(voice, text, message, ready)
        self._live.append(job)
        return job

    async def _speak(self, job: Synthesis) -> None:
        """One sentence, by the job's voice or, should it fail, by the call's next voice."""
        failures: list[str] = []
        tried: list[SpeechSynthesizer] = []
        while True:
            try:
                await self._send(job)
                return
            except VoiceFailed as failed:
                failures.append(failed.reason)
                voice = job.voice
                assert voice is not None  # a ready phrase cannot fail
                tried.append(voice)
                switched_from = self.voices.current is voice
                following = self.voices.after(voice, tried)
                if failed.part:
                    log.error("speech synthesis broke off mid-sentence (%s)", failed.reason)
                    self._report(EventKind.PROVIDER_ERROR, provider="tts", heard="part", error=failed.reason)
                    if following is None:
                        return  # no other voice: the next sentence follows
                if following is None:
                    await self._unspoken(failures)
                    return
                if switched_from:  # the call switched: it stays with `following`
                    log.warning("the voice failed (%s); the call goes on with %s", failed.reason,
                                voice_name(following))
                    self._report(EventKind.TTS_FALLBACK, provider=voice_name(voice), error=failed.reason,
                                 spoken_by=voice_name(following))
            finally:
                self._finish(job)
            job = self._ask(following, job.text, job.message)

    def _finish(self, job: Synthesis) -> None:
        job.cancel()
        if job in self._live:
            self._live.remove(job)

    def _give_up_at(self) -> float:
        """When a voice silent from now on has left the caller in silence too long: the audio
        already sent plays out first."""
        return max(time.monotonic(), self._played_out_at) + self.voices.give_up_s

    async def _send(self, job: Synthesis) -> None:
        sentence = SpokenSentence(job.text, f"{self.gen}.{len(self.sentences)}", job.message)
        voice = job.voice
        encoder = None if voice is None else self._encoder(voice)
        chunks = job.chunks()
        try:
            try:
                async with asyncio.timeout_at(self._give_up_at()):
                    first = await anext(chunks)
            except StopAsyncIteration:
                return  # nothing to say
            except Exception as exc:
                assert voice is not None
                raise VoiceFailed(failure(voice, exc), part=False) from None
            if self.latency.tts_first_at is None:
                self.latency.tts_first_at = job.first_byte_at
            await self._send_audio(sentence, encoder.push(first) if encoder else first)
            while True:
                try:
                    async with asyncio.timeout_at(self._give_up_at()):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # what was sent stays sent; the next voice says it all
                    assert voice is not None and encoder is not None
                    encoder.reset()
                    raise VoiceFailed(failure(voice, exc), part=True) from None
                await self._send_audio(sentence, encoder.push(chunk) if encoder else chunk)
            if encoder is not None:
                await self._send_audio(sentence, encoder.flush())
        finally:
            await chunks.aclose()
        if sentence.audio_bytes:
            self.sentences.append(sentence)
            await self.sender.mark(sentence.mark)

    def _encoder(self, voice: SpeechSynthesizer) -> OutboundEncoder:
        """Each voice's audio has its own encoder: rates and encodings differ (Aura and Realtime
        mu-law 8 kHz, OpenAI's Speech API PCM 24 kHz)."""
        encoder = self._encoders.get(id(voice))
        if encoder is None:
            encoder = OutboundEncoder(voice.sample_rate, voice.encoding, self.voices.quality)
            self._encoders[id(voice)] = encoder
        return encoder

    async def _unspoken(self, failures: list[str]) -> None:
        """No voice could say the sentence: the caller hears the apology, once per reply."""
        apology = self.voices.apology
        heard = "apology" if apology and not self._apologized else "nothing"
        reason = "; ".join(failures)
        log.error("no voice could say a sentence (%s); the caller hears %s", reason, heard)
        self._report(EventKind.PROVIDER_ERROR, provider="tts", error=reason, heard=heard)
        if apology is None or heard == "nothing":  # (no apology: heard is "nothing")
            return
        self._apologized = True
        if self.latency.tts_first_at is None:
            self.latency.tts_first_at = time.monotonic()  # the voices' share of the wait ends here
        said = SpokenSentence(APOLOGY_LINE, f"{self.gen}.{len(self.sentences)}", None)
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
        rest = ulaw
        if self.latency.first_audio_at is None:  # the reply's first frame goes alone, its start mark after it
            await send_frames(self.sender, ulaw[:FRAME_BYTES], start_mark(self.gen))
            self.latency.first_audio_at = time.monotonic()
            rest = ulaw[FRAME_BYTES:]
        if rest:
            await send_frames(self.sender, rest)
        now = time.monotonic()
        if sentence.first_sent_at is None:
            sentence.first_sent_at = self.latency.first_audio_at if rest is not ulaw else now
        sentence.audio_bytes += len(ulaw)
        self._played_out_at = max(self._played_out_at, now) + len(ulaw) / TWILIO_RATE


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
