"""Deepgram Aura: mu-law 8 kHz with no container, which is Twilio's own format, so the audio
goes straight to 20 ms frames with no resampling and no transcoding. By REST (one request per
sentence) here; with DEEPGRAM_TTS_STREAMING each call speaks over a speak WebSocket of its own
(services/tts/aura_stream.py), which falls back to this REST path past Deepgram's flush limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
from deepgram import AsyncDeepgramClient

from services.asr.deepgram import deepgram_environment
from services.settings import Settings
from services.tts.aura_stream import AuraStream
from services.tts.base import AudioEncoding, EventHook, SpeechSynthesizer

log = logging.getLogger("zylin.tts.aura")


class AuraSynthesizer:
    """One per process: requests are independent and share the client's connection pool."""

    sample_rate = 8000
    encoding: AudioEncoding = "mulaw"

    def __init__(self, settings: Settings, *, timeout_s: float = 15.0, streaming: bool | None = None,
                 stream_options: Mapping[str, Any] | None = None) -> None:
        """`streaming` (default: DEEPGRAM_TTS_STREAMING) makes `for_call` open a speak socket per
        call; `stream_options` go to each AuraStream (timeouts, the flush budget)."""
        self.streaming = settings.deepgram_tts_streaming if streaming is None else streaming
        self._stream_options = dict(stream_options or {})
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

    @property
    def client(self) -> AsyncDeepgramClient:
        """The SDK client (key and host) a call's speak socket connects with."""
        return self._client

    def for_call(self, on_event: EventHook | None = None) -> SpeechSynthesizer:
        """Streaming: a new AuraStream, its socket opening now. REST: this one voice, shared
        (one request per sentence)."""
        if not self.streaming:
            return self
        return AuraStream(self, on_event=on_event, **self._stream_options)

    async def close(self) -> None:
        await self._http.aclose()
