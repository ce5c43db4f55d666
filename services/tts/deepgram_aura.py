"""Deepgram Aura: mu-law 8 kHz with no container, which is Twilio's own format, so the audio
goes straight to 20 ms frames with no resampling and no transcoding."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import httpx
from deepgram import AsyncDeepgramClient

from services.asr.deepgram import deepgram_environment
from services.settings import Settings
from services.tts.base import AudioEncoding, EventHook

log = logging.getLogger("zylin.tts.aura")


class AuraSynthesizer:
    """One per process: requests are independent and share the client's connection pool."""

    sample_rate = 8000
    encoding: AudioEncoding = "mulaw"

    def __init__(self, settings: Settings, *, timeout_s: float = 15.0) -> None:
        self.model = settings.deepgram_tts_model
        self.cache_key = f"deepgram:{self.model}:mulaw8k"
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._client = AsyncDeepgramClient(api_key=settings.deepgram_api_key, httpx_client=self._http,
                                           environment=deepgram_environment(settings.deepgram_base_url))

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text` as it arrives; closing this iterator closes the HTTP response."""
        audio = self._client.speak.v1.audio.generate(
            text=text, model=self.model, encoding="mulaw", sample_rate=8000, container="none",
        )
        async with aclosing(audio) as chunks:
            async for chunk in chunks:
                if chunk:
                    yield chunk

    def for_call(self, on_event: EventHook | None = None) -> AuraSynthesizer:
        return self  # one request per sentence: every call shares the client

    async def close(self) -> None:
        await self._http.aclose()
