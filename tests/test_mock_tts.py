"""The mock synthesizer sounds like speech of natural length and streams like a real provider."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from services.audio import codec
from services.tts.mock import MockSynthesizer

SENTENCE = "Thanks for calling Bright Smile Dental. How can I help you today?"


async def say(tts: MockSynthesizer, text: str) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in tts.synthesize(text)]

    return await asyncio.wait_for(collect(), timeout=10)


async def test_speech_lasts_about_as_long_as_the_text_at_the_speaking_rate() -> None:
    for rate, chars_per_s in ((24000, 15.0), (8000, 10.0)):
        tts = MockSynthesizer(chars_per_s=chars_per_s, sample_rate=rate)
        audio = b"".join(await say(tts, SENTENCE))
        seconds = len(audio) / 2 / rate
        assert seconds == pytest.approx(len(SENTENCE) / chars_per_s, rel=0.05)
        assert tts.duration_s(SENTENCE) == pytest.approx(seconds, rel=0.05)


async def test_the_caller_hears_voiced_audio_after_the_phone_line_encoding() -> None:
    tts = MockSynthesizer()
    audio = b"".join(await say(tts, SENTENCE))
    encoder = codec.OutboundEncoder(tts.sample_rate, tts.encoding)
    ulaw = encoder.push(audio) + encoder.flush()
    heard = codec.ulaw_to_pcm(ulaw)

    assert codec.rms(heard) > 2000
    frames = [heard[i:i + 320] for i in range(0, len(heard) - 319, 320)]
    voiced = sum(codec.rms(f) >= 500 for f in frames)
    assert 0.6 < voiced / len(frames) < 0.98  # mostly voice, with pauses between words
    peak = int(np.max(np.abs(np.frombuffer(audio, dtype="<i2"))))
    assert 8000 <= peak <= 12000


async def test_different_words_get_different_pitches() -> None:
    tts = MockSynthesizer(sample_rate=8000)
    pitch = {}
    for word in ("hello", "thanks", "appointment", "tuesday", "cleaning", "goodbye"):
        pcm = np.frombuffer(b"".join(await say(tts, word)), dtype="<i2").astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)), n=8000 * 4))
        band = spectrum[80 * 4:240 * 4]  # where the fundamental lives
        pitch[word] = (np.argmax(band) + 80 * 4) / 4
    assert all(95 <= f0 <= 225 for f0 in pitch.values())
    assert len({round(f0) for f0 in pitch.values()}) >= 3


async def test_the_same_text_always_sounds_the_same() -> None:
    first = b"".join(await say(MockSynthesizer(), SENTENCE))
    again = b"".join(await say(MockSynthesizer(), SENTENCE))
    other = b"".join(await say(MockSynthesizer(), "Goodbye and thank you for calling!"))
    assert first == again
    assert first[:len(other)] != other


async def test_chunks_split_samples_like_real_http_chunks() -> None:
    chunks = await say(MockSynthesizer(), SENTENCE)
    assert len(chunks) > 2
    assert all(len(c) % 2 == 1 for c in chunks[:-1])
    assert sum(len(c) for c in chunks) % 2 == 0  # whole samples overall


async def test_the_first_chunk_waits_for_the_time_to_first_byte() -> None:
    tts = MockSynthesizer(delay_ms=200)
    stream = tts.synthesize(SENTENCE)
    started = time.monotonic()
    await asyncio.wait_for(anext(stream), timeout=5)
    assert time.monotonic() - started >= 0.19
    await stream.aclose()


async def test_a_reply_can_be_cut_off_mid_stream() -> None:
    tts = MockSynthesizer()
    stream = tts.synthesize(SENTENCE)
    first = await asyncio.wait_for(anext(stream), timeout=5)
    await stream.aclose()  # barge-in
    assert len(first) == 4801
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_nothing_to_say_yields_no_audio() -> None:
    assert await say(MockSynthesizer(), "   ") == []


def test_the_cache_key_names_the_voice_settings() -> None:
    assert MockSynthesizer(sample_rate=24000).cache_key != MockSynthesizer(sample_rate=8000).cache_key
    assert MockSynthesizer(chars_per_s=15).cache_key != MockSynthesizer(chars_per_s=20).cache_key
    assert MockSynthesizer().encoding == "pcm16"


async def test_rendered_lines_are_cached_but_the_cache_stays_small() -> None:
    tts = MockSynthesizer()
    for i in range(200):
        await say(tts, f"Line number {i}.")
    assert len(tts._cache) <= 64
    assert "Line number 199." in tts._cache and "Line number 0." not in tts._cache
