"""The greeting is the same words on every call: synthesize it once, send it within a few ms.
The apology for a voice that fails is rendered the same way, at start-up."""

from __future__ import annotations

import asyncio

from services.audio.codec import OutboundEncoder
from services.orchestrator.speaker import TTS_FIRST_BYTE_TIMEOUT_S
from services.tts.base import SpeechSynthesizer


async def render(tts: SpeechSynthesizer, text: str, quality: str = "HQ",
                 first_byte_timeout_s: float | None = TTS_FIRST_BYTE_TIMEOUT_S) -> bytes:
    """All of `text` as mu-law 8 kHz. A voice that stalls before its first byte fails here
    within the bound, rather than holding start-up (or a call's start) for its HTTP timeout."""
    encoder = OutboundEncoder(tts.sample_rate, tts.encoding, quality)
    out = bytearray()
    stream = tts.synthesize(text)
    try:
        async with asyncio.timeout(first_byte_timeout_s):
            out += encoder.push(await anext(stream, b""))
        async for chunk in stream:
            out += encoder.push(chunk)
    finally:
        await stream.aclose()
    out += encoder.flush()
    if not out:
        raise ValueError("the voice returned no audio")
    return bytes(out)


class GreetingCache:
    def __init__(self, tts: SpeechSynthesizer, quality: str = "HQ",
                 first_byte_timeout_s: float | None = TTS_FIRST_BYTE_TIMEOUT_S) -> None:
        self._tts = tts
        self._quality = quality
        self._first_byte_timeout_s = first_byte_timeout_s
        self._audio: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    async def get(self, text: str) -> bytes:
        """Mu-law 8 kHz audio of `text`; concurrent first calls share one synthesis."""
        key = (self._tts.cache_key, text)
        future = self._audio.get(key)
        if future is None:
            future = asyncio.ensure_future(render(self._tts, text, self._quality, self._first_byte_timeout_s))
            self._audio[key] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            self._audio.pop(key, None)  # a provider hiccup must not be cached
            raise
