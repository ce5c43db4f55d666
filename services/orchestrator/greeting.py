"""The greeting is the same words on every call: synthesize it once, send it within a few ms."""

from __future__ import annotations

import asyncio

from services.audio.codec import OutboundEncoder
from services.tts.base import SpeechSynthesizer


class GreetingCache:
    def __init__(self, tts: SpeechSynthesizer, quality: str = "HQ") -> None:
        self._tts = tts
        self._quality = quality
        self._audio: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    async def get(self, text: str) -> bytes:
        """Mu-law 8 kHz audio of `text`; concurrent first calls share one synthesis."""
        key = (self._tts.cache_key, text)
        future = self._audio.get(key)
        if future is None:
            future = asyncio.ensure_future(self._render(text))
            self._audio[key] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            self._audio.pop(key, None)  # a provider hiccup must not be cached
            raise

    async def _render(self, text: str) -> bytes:
        encoder = OutboundEncoder(self._tts.sample_rate, self._tts.encoding, self._quality)
        out = bytearray()
        async for chunk in self._tts.synthesize(text):
            out += encoder.push(chunk)
        out += encoder.flush()
        return bytes(out)
