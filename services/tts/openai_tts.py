"""OpenAI Speech API, streamed as raw pcm: 24 kHz 16-bit little-endian mono, no header. Its models
shut down on 2027-01-06: Zylin uses it only with OPENAI_TTS_API=speech.

Chunks are passed on exactly as they arrive (odd lengths included: the engine's resampler carries
the odd byte), so the first audio of a sentence leaves as early as the network allows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from openai import AsyncOpenAI

from services.settings import OPENAI_VOICE_MODELS, Settings
from services.tts.base import AudioEncoding, EventHook

log = logging.getLogger("zylin.tts.openai")

VOICE_INSTRUCTIONS = ("Speak as a warm, friendly receptionist on a phone line: natural pace, "
                      "clear and relaxed, never rushed.")


class OpenAISynthesizer:
    """One per process: requests are independent and share the client's connection pool."""

    sample_rate = 24000
    encoding: AudioEncoding = "pcm16"

    def __init__(self, settings: Settings, *, timeout_s: float = 15.0, max_retries: int = 1) -> None:
        self.model = settings.openai_tts_model or OPENAI_VOICE_MODELS["speech"]
        self.voice = settings.openai_tts_voice
        self.cache_key = f"openai:{self.model}:{self.voice}"
        # Only the gpt-4o family of speech models takes style instructions; tts-1 rejects them.
        self._instructions = VOICE_INSTRUCTIONS if self.model.startswith("gpt-") else None
        self._client = AsyncOpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
                                   max_retries=max_retries, timeout=timeout_s)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text` as it arrives; closing this iterator closes the HTTP response."""
        extra: dict[str, Any] = {"instructions": self._instructions} if self._instructions else {}
        async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=self.voice, input=text, response_format="pcm", **extra) as response:
            # iter_bytes() is an async generator, though the SDK annotates it as an AsyncIterator
            chunks_gen = cast(AsyncGenerator[bytes, None], response.iter_bytes())
            async with aclosing(chunks_gen) as chunks:
                async for chunk in chunks:
                    if chunk:
                        yield chunk

    def for_call(self, on_event: EventHook | None = None) -> OpenAISynthesizer:
        return self  # one request per sentence: every call shares the client

    async def close(self) -> None:
        await self._client.close()
