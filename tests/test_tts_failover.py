"""A sentence whose synthesis fails is never silence: the fallback voice says it, else the caller
hears the pre-rendered apology. Whole calls run with the real Aura and OpenAI adapters talking,
through their SDKs, to the wire-level fakes on 127.0.0.1 (mock ASR and brain)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from main import create_app
from services.audio.codec import OutboundEncoder, rms, ulaw_to_pcm
from services.orchestrator.latency import TurnLatency
from services.orchestrator.phrases import PhraseCache, render
from services.orchestrator.speaker import CallVoices, Speaker
from services.providers import build_fallback_synthesizer, build_synthesizer, fallback_tts_provider
from services.receptionist.lines import APOLOGY_LINE, LET_ME_CHECK
from services.runtime import Runtime
from services.settings import ConfigError
from services.simulator.caller import CallerLine, CallResult
from services.telephony.media_streams import StreamSender, parse_outbound
from services.tts.deepgram_aura import AuraSynthesizer
from services.tts.mock import CHUNK_BYTES, MockSynthesizer
from services.tts.openai_realtime import RealtimeVoice
from services.tts.openai_tts import OpenAISynthesizer
from tests.conftest import Running, running_zylin
from tests.factories import make_settings, plain_settings
from tests.fakes.deepgram_server import FakeDeepgram, speak_audio
from tests.fakes.openai_realtime import realtime_audio
from tests.fakes.openai_server import FakeOpenAI

KEY = "secret-test-key-42"
HOURS = "What are your opening hours?"   # the offline brain answers in several sentences
OPENAI_DOWN = [(500, "The server had an error")] * 40


@contextlib.asynccontextmanager
async def voices() -> AsyncIterator[tuple[FakeDeepgram, FakeOpenAI]]:
    async with FakeDeepgram(api_key=KEY) as deepgram, FakeOpenAI(api_key=KEY) as openai:
        yield deepgram, openai


@contextlib.asynccontextmanager
async def zylin(deepgram: FakeDeepgram, openai: FakeOpenAI,
                **overrides) -> AsyncIterator[tuple[Running, Runtime]]:
    """A real server whose voices are the fakes; both keys set, so the automatic choice is Aura
    with OpenAI as the fallback. Here both speak one HTTP request per sentence (Aura's REST path,
    OpenAI's Speech API); tests/test_voice_calls.py runs the streaming voices."""
    values: dict[str, Any] = dict(use_mock_streaming=False, asr_provider="mock", llm_provider="mock",
                                  deepgram_api_key=KEY, openai_api_key=KEY, deepgram_base_url=deepgram.url,
                                  openai_base_url=openai.base_url, deepgram_tts_streaming=False,
                                  openai_tts_api="speech")
    values.update(overrides)
    async with running_zylin(**values) as running:
        assert running.runtime is not None
        if running.runtime._phrases_task is not None:
            await running.runtime._phrases_task   # the fixed lines, rendered at start-up: not the call's
        yield running, running.runtime


async def call(running: Running, *lines: str, **caller) -> tuple[CallResult, dict]:
    result = await running.caller(speed=4.0, **caller).call([CallerLine(t) for t in lines])
    return result, await running.recorder.wait_ended(result.call_sid)


def reply_marks(result: CallResult, gen: int = 2) -> list[str]:
    return [m for m in result.audio_by_mark() if m.startswith(f"{gen}.")]


def aura_texts(deepgram: FakeDeepgram) -> list[str]:
    return [r.json()["text"] for r in deepgram.speak_requests]


def openai_texts(openai: FakeOpenAI) -> list[str]:
    return [r["input"] for r in openai.speech_requests]


def in_reply(texts: list[str], record: dict) -> list[str]:
    """Those of `texts` that are sentences of Zylin's last reply, in the order it said them
    (two sentences are synthesized at once, so the requests may arrive in either order)."""
    reply = [t for t in record["turns"] if t.speaker == "zylin"][-1].text
    return sorted((t for t in texts if t in reply), key=reply.index)


def sounds_like_openai(heard: bytes, text: str) -> bool:
    """`heard` is OpenAI's pcm for `text`, resampled from 24 to 8 kHz and mu-law encoded: the same
    length and the same waveform (resampling stream chunks as the network cut them may differ
    from resampling the whole by a least significant bit here and there)."""
    encoder = OutboundEncoder(24000, "pcm16")
    expected = encoder.push(FakeOpenAI.speech_audio(text)) + encoder.flush()
    if len(heard) != len(expected):
        return False
    a = np.frombuffer(ulaw_to_pcm(heard), dtype="<i2").astype(np.float64)
    b = np.frombuffer(ulaw_to_pcm(expected), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2))) < 0.02 * float(np.sqrt(np.mean(b ** 2)))


def events(record: dict, kind: str) -> list[dict]:
    return [e.detail for e in record["events"] if e.kind == kind]


def voiced(ulaw: bytes) -> bool:
    return rms(ulaw_to_pcm(ulaw)) > 1000


# --- whole calls ------------------------------------------------------------------------------

async def test_after_aura_answers_500_the_call_switches_to_the_openai_voice_which_says_every_sentence():
    async with voices() as (deepgram, openai), zylin(deepgram, openai) as (running, runtime):
        assert APOLOGY_LINE in aura_texts(deepgram) and not openai.speech_requests  # start-up: Aura
        deepgram.speak_error = (500, "Aura is down")
        started = len(deepgram.speak_requests)
        result, record = await call(running, "How much is a cleaning?", HOURS)

    sentences = in_reply(openai_texts(openai), record)
    assert len(sentences) >= 2
    assert " ".join(sentences) == [t for t in record["turns"] if t.speaker == "zylin"][-1].text
    # Aura was asked only for what was in flight when it failed (a sentence, and the one after it);
    # from then on the call speaks with OpenAI's voice.
    asked_of_aura = aura_texts(deepgram)[started:]
    assert 1 <= len(asked_of_aura) <= 2 and all(t in openai_texts(openai) for t in asked_of_aura)
    heard = result.audio_by_mark()
    assert len(reply_marks(result, gen=3)) == len(sentences)
    for mark, sentence in zip(reply_marks(result, gen=3), sentences, strict=True):
        assert sounds_like_openai(heard[mark], sentence) and voiced(heard[mark])
    [switch] = events(record, "tts_fallback")            # the call switched once
    assert switch == {"provider": "deepgram", "error": "deepgram: HTTP 500", "spoken_by": "openai"}
    assert not events(record, "provider_error")          # nothing was lost: the call did not fail


async def test_when_both_voices_fail_the_caller_hears_the_apology_once_and_an_error_is_recorded(caplog):
    caplog.set_level(logging.DEBUG)
    async with voices() as (deepgram, openai), zylin(deepgram, openai) as (running, runtime):
        apology = runtime.speech.apology
        deepgram.speak_error = (500, "Aura is down")
        openai.speech_errors.extend(OPENAI_DOWN)
        started = len(deepgram.speak_requests)
        result, record = await call(running, HOURS)

    sentences = in_reply(aura_texts(deepgram)[started:], record)
    assert len(sentences) >= 2
    # Rendered at start-up by Aura: the fake's own mu-law for the line, byte for byte.
    assert apology == speak_audio(APOLOGY_LINE, "mulaw", 8000, deepgram.speak_seconds_per_char)
    marks = reply_marks(result)
    assert len(marks) == 1, "every sentence failed, the apology is heard once"
    heard = result.audio_by_mark()[marks[0]]
    assert heard == apology and voiced(heard)
    errors = events(record, "provider_error")
    assert [(e["provider"], e["heard"]) for e in errors] == [("tts", "apology")] + [("tts", "nothing")] * (
        len(sentences) - 1)
    assert errors[0]["error"].startswith("deepgram: HTTP 500; openai: ")
    assert record["ended"] and not result.timeouts      # the call went on: the caller hung up
    assert KEY not in caplog.text and KEY not in repr(record["events"])


async def test_when_aura_works_openai_is_never_called():
    async with voices() as (deepgram, openai), zylin(deepgram, openai) as (running, runtime):
        started = len(deepgram.speak_requests)
        result, record = await call(running, HOURS, "How much is a cleaning?")

    assert not openai.requests, "the fallback voice was not asked for anything"
    heard = result.audio_by_mark()
    marks = [m for m in heard if m != "1.0"]
    sentences = aura_texts(deepgram)[started:]
    assert len(marks) == len(sentences) >= 3            # every sentence of both replies, in Aura's voice
    assert sorted(heard[m] for m in marks) == sorted(
        speak_audio(s, "mulaw", 8000, deepgram.speak_seconds_per_char) for s in sentences)
    assert not events(record, "tts_fallback") and not events(record, "provider_error")


async def test_an_aura_stall_before_the_first_byte_is_given_up_and_openai_says_the_sentence():
    async with voices() as (deepgram, openai), zylin(deepgram, openai) as (running, runtime):
        runtime.speech.max_gap_s = 0.8           # given up after 0.3 s of silence
        deepgram.speak_hold_after = 0                     # headers, then nothing until released
        started = len(deepgram.speak_streams)
        result, record = await call(running, "How much is a cleaning?")
        stalled = deepgram.speak_streams[started:]
        for stream in stalled:
            await asyncio.wait_for(stream.closed_early.wait(), 5)

    assert stalled and not any(s.finished.is_set() for s in stalled)   # hung up on, not waited out
    [sentence] = openai_texts(openai)
    assert sounds_like_openai(result.audio_by_mark()[reply_marks(result)[0]], sentence)
    [fallback] = events(record, "tts_fallback")
    assert fallback["error"] == "deepgram: no audio in time"


async def test_openai_as_the_main_voice_falls_back_to_aura_mulaw_which_needs_no_resampling():
    async with voices() as (deepgram, openai), \
            zylin(deepgram, openai, tts_provider="openai", tts_fallback_provider="deepgram") as (running, runtime):
        openai.speech_errors.extend(OPENAI_DOWN)
        started = len(deepgram.speak_requests)
        result, record = await call(running, HOURS)

    sentences = in_reply(aura_texts(deepgram)[started:], record)
    assert len(sentences) >= 2 and len(reply_marks(result)) == len(sentences)
    heard = result.audio_by_mark()
    for mark, sentence in zip(reply_marks(result), sentences, strict=True):
        assert heard[mark] == speak_audio(sentence, "mulaw", 8000, deepgram.speak_seconds_per_char)
    assert [e["provider"] for e in events(record, "tts_fallback")] == ["openai"]   # one switch, for the call


async def test_with_aura_down_at_start_up_the_apology_is_rendered_in_the_openai_voice():
    async with voices() as (deepgram, openai):
        deepgram.speak_error = (503, "Aura is down")
        async with zylin(deepgram, openai) as (running, runtime):
            assert openai_texts(openai)[-1] == APOLOGY_LINE and not runtime.greeting_ready
            openai.speech_errors.extend(OPENAI_DOWN)
            result, record = await call(running, HOURS)

    assert sounds_like_openai(runtime.speech.apology, APOLOGY_LINE)
    # The greeting could not be pre-rendered and no voice could say it live: the apology it is.
    assert result.audio_by_mark()["1.0"] == runtime.speech.apology
    assert result.audio_by_mark()[reply_marks(result)[0]] == runtime.speech.apology


async def test_with_no_voice_at_start_up_a_failed_sentence_is_silence_until_a_later_call_renders_the_apology(
        caplog):
    async with voices() as (deepgram, openai):
        deepgram.speak_error = (500, "Aura is down")
        openai.speech_errors.extend(OPENAI_DOWN * 3)
        async with zylin(deepgram, openai) as (running, runtime):
            assert runtime.speech.apology is None
            assert "no voice could render the apology" in caplog.text
            started = len(deepgram.speak_requests)
            result, record = await call(running, HOURS, reply_timeout_s=3.0)
            assert not result.media_payloads(), "nothing could be said, so nothing was sent"
            failed = in_reply(aura_texts(deepgram)[started:], record)
            assert len(failed) >= 2
            # the greeting (said live, as it could not be pre-rendered), then each sentence
            assert [e["heard"] for e in events(record, "provider_error")] == ["nothing"] * (1 + len(failed))

            deepgram.speak_error = None                   # Aura is back: the next call renders it
            result, record = await call(running, "How much is a cleaning?")
            await runtime._apology_task

    assert runtime.speech.apology == speak_audio(APOLOGY_LINE, "mulaw", 8000, deepgram.speak_seconds_per_char)
    assert not events(record, "provider_error")


# --- the speaker on its own: breaking off mid-sentence ------------------------------------------

class BreaksOff(MockSynthesizer):
    """The mock voice, but one sentence stops after its first chunk with a dropped connection."""

    def __init__(self, breaking: str) -> None:
        super().__init__()
        self.breaking = breaking
        self.asked: list[str] = []

    async def synthesize(self, text: str):
        self.asked.append(text)
        async for chunk in super().synthesize(text):
            yield chunk
            if text == self.breaking:
                raise ConnectionResetError(104, "Connection reset by peer")


def speaker_on(voices: CallVoices, recorded: list[tuple[str, dict]], sent: list[str], gen: int = 1) -> Speaker:
    async def send_text(text: str) -> None:
        sent.append(text)

    return Speaker(voices, StreamSender(send_text, "MZ1"), gen, TurnLatency(),
                   lambda kind, **detail: recorded.append((kind, detail)))


def marks_sent(sent: list[str]) -> list[str]:
    return [out.name for out in map(parse_outbound, sent) if out.event == "mark"]


async def speak(speaker: Speaker, *sentences: str) -> None:
    for text in sentences:
        speaker.say(text)
    speaker.finish()
    await asyncio.wait_for(speaker.run(), 10)


async def test_a_voice_that_breaks_off_mid_sentence_hands_the_whole_sentence_and_the_call_to_the_other():
    main, other = BreaksOff("First, this one breaks."), BreaksOff("")
    voices = CallVoices([main, other], apology=b"\xff" * 800)
    recorded: list[tuple[str, dict]] = []
    sent: list[str] = []
    speaker = speaker_on(voices, recorded, sent)
    await speak(speaker, "First, this one breaks.", "Then this one is whole.")

    # The other voice says the broken sentence from its start; the next one was already being
    # synthesized by the first voice (one ahead) and is heard from it. The call is the other's now.
    assert other.asked == ["First, this one breaks."]
    assert main.asked == ["First, this one breaks.", "Then this one is whole."] and voices.current is other
    assert [s.text for s in speaker.sentences] == ["First, this one breaks.", "Then this one is whole."]
    first, second = (s.audio_bytes for s in speaker.sentences)
    assert first == pytest.approx(other.duration_s("First, this one breaks.") * 8000, rel=0.05)
    assert second == pytest.approx(main.duration_s("Then this one is whole.") * 8000, rel=0.05)
    assert marks_sent(sent) == ["1.start", "1.0", "1.1"]
    broke = "mock: ConnectionResetError: Connection reset by peer"
    assert recorded == [("provider_error", {"provider": "tts", "heard": "part", "error": broke}),
                        ("tts_fallback", {"provider": "mock", "error": broke, "spoken_by": "mock"})]


async def test_with_no_other_voice_a_sentence_broken_off_is_not_repeated_and_the_next_follows():
    main = BreaksOff("First, this one breaks.")
    recorded: list[tuple[str, dict]] = []
    sent: list[str] = []
    speaker = speaker_on(CallVoices([main], apology=b"\xff" * 800), recorded, sent)
    await speak(speaker, "First, this one breaks.", "Then this one is whole.")

    assert main.asked == ["First, this one breaks.", "Then this one is whole."]
    assert [s.text for s in speaker.sentences] == ["Then this one is whole."]   # the part has no mark
    assert marks_sent(sent) == ["1.start", "1.0"]
    assert [kind for kind, _ in recorded] == ["provider_error"]


class Stalls(MockSynthesizer):
    """The mock voice, but after `chunks` chunks of a sentence it sends nothing more (a stalled
    stream); it notes when its stream is closed (the speaker gave up on it)."""

    def __init__(self, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.asked: list[str] = []
        self.closed: list[float] = []

    async def synthesize(self, text: str):
        self.asked.append(text)
        try:
            n = 0
            async for chunk in super().synthesize(text):
                if n == self.chunks:
                    await asyncio.Event().wait()   # never set: the stall
                yield chunk
                n += 1
        finally:
            self.closed.append(time.monotonic())


@pytest.mark.parametrize("chunks", [0, 2])
async def test_a_stalled_voice_is_given_up_so_the_caller_never_waits_longer_than_the_bound(chunks):
    """Before its first byte (0) or mid-sentence (2 chunks sent): the silence the caller hears,
    from the end of the audio already sent to the other voice's first audio, stays within
    TTS_MAX_GAP_MS, with the other voice's time to first byte inside it."""
    main, other = Stalls(chunks), MockSynthesizer(delay_ms=150)
    voices = CallVoices([main, other], max_gap_s=0.8)
    recorded: list[tuple[str, dict]] = []
    sent: list[str] = []
    speaker = speaker_on(voices, recorded, sent)
    started = time.monotonic()
    await speak(speaker, "A sentence that stalls.", "And the next one.")

    assert voices.current is other and main.asked[0] == "A sentence that stalls."
    assert main.closed, "the stalled stream was closed (the provider is told to stop)"
    # The audio the stalled voice had sent played out by `played_out`; the other voice's first
    # audio followed within the bound.
    part_s = chunks * CHUNK_BYTES / 2 / main.sample_rate   # PCM16 chunks: the audio the caller had
    resumed_at = speaker.sentences[0].first_sent_at
    assert resumed_at is not None
    gap_s = resumed_at - (started + part_s)
    assert gap_s <= voices.max_gap_s, f"the caller waited {gap_s:.2f} s"
    assert [s.text for s in speaker.sentences] == ["A sentence that stalls.", "And the next one."]
    [(kind, detail)] = [r for r in recorded if r[0] == "tts_fallback"]
    assert detail["error"] == "mock: no audio in time"


async def test_a_call_that_switched_voices_starts_its_next_reply_with_the_new_voice():
    main, other = BreaksOff("It breaks."), BreaksOff("")
    voices = CallVoices([main, other])
    recorded: list[tuple[str, dict]] = []
    await speak(speaker_on(voices, recorded, []), "It breaks.")
    await speak(speaker_on(voices, recorded, [], gen=2), "A later reply.")

    assert main.asked == ["It breaks."] and other.asked == ["It breaks.", "A later reply."]
    assert [kind for kind, _ in recorded].count("tts_fallback") == 1


async def test_a_phrase_in_the_cache_is_sent_without_asking_any_voice():
    main = BreaksOff("")
    phrases = PhraseCache()
    audio = await phrases.get(main, LET_ME_CHECK)
    main.asked.clear()
    sent: list[str] = []
    speaker = speaker_on(CallVoices([main], phrases=phrases), [], sent)
    await speak(speaker, LET_ME_CHECK, "Tuesday at ten is free.")

    assert main.asked == ["Tuesday at ten is free."]
    assert speaker.sentences[0].audio_bytes == len(audio)
    assert speaker.latency.tts_first_at is not None and speaker.latency.tts_request_at is not None
    assert speaker.latency.tts_first_at - speaker.latency.tts_request_at < 0.005


# --- start-up ----------------------------------------------------------------------------------

async def test_rendering_a_line_gives_up_on_a_stalled_voice_within_the_bound():
    async with FakeDeepgram(api_key=KEY) as deepgram:
        deepgram.speak_hold_after = 0
        aura = AuraSynthesizer(plain_settings(deepgram_api_key=KEY, deepgram_base_url=deepgram.url))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(render(aura, APOLOGY_LINE, first_byte_timeout_s=0.3), 5)
        await asyncio.wait_for(deepgram.speak_streams[0].closed_early.wait(), 5)
        await aura.close()


@contextlib.contextmanager
def fakes_in_a_thread() -> Iterator[tuple[FakeDeepgram, FakeOpenAI]]:
    """Both fakes served from a thread of their own, so this thread can stay without a loop."""
    ready, fakes = threading.Event(), []
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        stop = asyncio.Event()
        loop_box.append(asyncio.get_running_loop())
        async with FakeDeepgram(api_key=KEY) as deepgram, FakeOpenAI(api_key=KEY) as openai:
            fakes.extend([deepgram, openai, stop])
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fakes did not start"
    try:
        yield fakes[0], fakes[1]
    finally:
        loop_box[0].call_soon_threadsafe(fakes[2].set)
        thread.join(10)


def test_the_voices_are_built_with_no_event_loop_running_and_speak_in_the_loop_that_comes_later():
    """`python main.py` builds the app, so the voices' clients (AsyncDeepgramClient over an
    httpx.AsyncClient; the Realtime voice's AsyncOpenAI), before uvicorn starts its loop."""
    with fakes_in_a_thread() as (deepgram, openai):
        settings = plain_settings(deepgram_api_key=KEY, openai_api_key=KEY,
                                  deepgram_base_url=deepgram.url, openai_base_url=openai.base_url)
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        main, fallback = build_synthesizer(settings), build_fallback_synthesizer(settings)

        async def speak() -> list[bytes]:
            out = []
            for tts in (main, fallback):
                out.append(b"".join([chunk async for chunk in tts.synthesize("Hello there.")]))
                await tts.close()
            return out

        aura_audio, openai_audio = asyncio.run(speak())

    assert isinstance(main, AuraSynthesizer) and isinstance(fallback, RealtimeVoice)
    assert aura_audio == speak_audio("Hello there.", "mulaw", 8000, deepgram.speak_seconds_per_char)
    assert openai_audio == realtime_audio("Hello there.")


# --- which voice falls back ----------------------------------------------------------------------

def fallback_for(**values) -> str | None:
    return fallback_tts_provider(plain_settings(**values))


def test_with_both_keys_aura_speaks_and_openai_is_the_automatic_fallback():
    settings = plain_settings(deepgram_api_key="k", openai_api_key="k")
    assert settings.provider("tts") == "deepgram" and fallback_tts_provider(settings) == "openai"
    assert fallback_for(deepgram_api_key="k", openai_api_key="k", tts_provider="openai") == "deepgram"


def test_with_one_key_or_none_there_is_no_automatic_fallback_and_never_the_mock():
    assert fallback_for(deepgram_api_key="k") is None
    assert fallback_for(openai_api_key="k") is None
    assert fallback_for() is None
    assert fallback_for(deepgram_api_key="k", openai_api_key="k", tts_provider="mock") is None
    assert fallback_for(deepgram_api_key="k", openai_api_key="k", use_mock_streaming=True) is None


def test_with_only_a_deepgram_key_aura_streaming_falls_back_on_aura_by_rest():
    fallback = build_fallback_synthesizer(plain_settings(deepgram_api_key="k"))
    assert isinstance(fallback, AuraSynthesizer) and not fallback.streaming
    assert fallback.cache_key == build_synthesizer(plain_settings(deepgram_api_key="k")).cache_key  # same voice
    assert build_fallback_synthesizer(plain_settings(deepgram_api_key="k", deepgram_tts_streaming=False)) is None


def test_the_speech_api_is_used_only_when_asked_for_and_start_up_warns_of_its_shutdown():
    assert not any("2027-01-06" in w for w in plain_settings(openai_api_key="k").check())
    speech = plain_settings(openai_api_key="k", openai_tts_api="speech")
    assert isinstance(build_synthesizer(speech), OpenAISynthesizer)
    assert build_synthesizer(speech).model == "gpt-4o-mini-tts"
    [warning] = [w for w in speech.check() if "2027-01-06" in w]
    assert "OPENAI_TTS_API=realtime" in warning


def test_an_openai_voice_the_realtime_api_does_not_have_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="OPENAI_TTS_VOICE=fable is not a Realtime API voice"):
        plain_settings(openai_api_key="k", openai_tts_voice="fable").check()
    assert plain_settings(openai_api_key="k", openai_tts_voice="fable", openai_tts_api="speech").check()


def test_the_mock_is_a_fallback_only_when_named():
    assert fallback_for(deepgram_api_key="k", tts_fallback_provider="mock") == "mock"
    fallback = build_fallback_synthesizer(plain_settings(deepgram_api_key="k",
                                                         tts_fallback_provider="mock"))
    assert isinstance(fallback, MockSynthesizer)


def test_a_named_fallback_needs_its_key_and_is_never_the_main_voice_itself():
    with pytest.raises(ConfigError, match="TTS_FALLBACK_PROVIDER=openai needs OPENAI_API_KEY"):
        fallback_for(deepgram_api_key="k", tts_fallback_provider="openai")
    assert fallback_for(deepgram_api_key="k", openai_api_key="k", tts_fallback_provider="deepgram") is None


def test_the_server_does_not_start_with_a_fallback_voice_it_has_no_key_for(tmp_path):
    with pytest.raises(ConfigError):
        create_app(make_settings(use_mock_streaming=False, asr_provider="mock", llm_provider="mock",
                                 deepgram_api_key="k", tts_fallback_provider="openai",
                                 database_url=f"sqlite+aiosqlite:///{tmp_path}/zylin.db"))
