"""An offline stand-in for a TTS provider: speech-like audio of natural length, streamed in chunks.

The audio is voiced (harmonic tones per word, pauses between words) so a VAD or the mock
recognizer on the far end hears speech; chunks have an odd byte size, as real HTTP chunks
split samples, so the engine's odd-byte carry is exercised on every call.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import AsyncGenerator

import numpy as np

from services.tts.base import AudioEncoding, EventHook

CHUNK_BYTES = 4801
WORD_GAP_S = 0.06
MIN_WORD_S = 0.05
PEAK = 10000.0
HARMONICS = (1.0, 0.7, 0.45, 0.3, 0.2, 0.12)
CACHE_SIZE = 64


class MockSynthesizer:
    """A SpeechSynthesizer that renders deterministic synthetic speech locally."""

    encoding: AudioEncoding = "pcm16"

    def __init__(self, chars_per_s: float = 15.0, delay_ms: float = 0.0, sample_rate: int = 24000) -> None:
        if chars_per_s <= 0:
            raise ValueError("chars_per_s must be positive")
        self.chars_per_s = chars_per_s
        self.delay_s = delay_ms / 1000
        self.sample_rate = sample_rate
        self.cache_key = f"mock:{sample_rate}:{chars_per_s}"
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    def duration_s(self, text: str) -> float:
        """How long `text` takes to say at this speaking rate."""
        return len(text.strip()) / self.chars_per_s

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # time to first byte
        audio = self._audio(text)
        for at in range(0, len(audio), CHUNK_BYTES):
            yield audio[at:at + CHUNK_BYTES]
            await asyncio.sleep(0)  # stream, do not hog the loop

    def for_call(self, on_event: EventHook | None = None) -> MockSynthesizer:
        return self  # stateless: every call shares it

    async def close(self) -> None:
        self._cache.clear()

    def _audio(self, text: str) -> bytes:
        """Rendered PCM16 for `text`, cached: benchmarks say the same lines over and over."""
        audio = self._cache.get(text)
        if audio is not None:
            self._cache.move_to_end(text)
            return audio
        audio = self._render(text)
        self._cache[text] = audio
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return audio

    def _render(self, text: str) -> bytes:
        words = text.split()
        if not words:
            return b""
        rate = self.sample_rate
        total = self.duration_s(text)
        gap = np.zeros(round(WORD_GAP_S * rate), dtype=np.float32)
        speaking = max(total - WORD_GAP_S * (len(words) - 1), MIN_WORD_S * len(words))
        letters = sum(len(w) for w in words)
        pieces: list[np.ndarray] = []
        for i, word in enumerate(words):
            if i:
                pieces.append(gap)
            seconds = max(speaking * len(word) / letters, MIN_WORD_S)
            pieces.append(self._word(word, round(seconds * rate)))
        return np.concatenate(pieces).astype("<i2").tobytes()

    def _word(self, word: str, n: int) -> np.ndarray:
        """A vowel-like tone: a few harmonics over a pitch from the word, gently falling."""
        f0 = 100.0 + zlib.crc32(word.lower().encode()) % 121
        t = np.arange(n, dtype=np.float32) / self.sample_rate
        phase = 2 * np.pi * f0 * (t - 0.1 * t * t)  # slight pitch declination, as in speech
        wave: np.ndarray = np.zeros(n, dtype=np.float32)
        for k, a in enumerate(HARMONICS, start=1):
            wave = wave + a * np.sin(k * phase)
        attack = min(n, round(0.015 * self.sample_rate))
        decay = min(n - attack, round(0.04 * self.sample_rate))
        envelope = np.ones(n, dtype=np.float32)
        envelope[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)
        if decay:
            envelope[n - decay:] = np.linspace(1.0, 0.0, decay)
        wave = wave * envelope
        peak = float(np.max(np.abs(wave))) or 1.0
        return (wave * (PEAK / peak)).astype(np.float32)
