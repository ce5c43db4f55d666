"""The speech synthesizer contract."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal, Protocol

AudioEncoding = Literal["pcm16", "mulaw"]


class SpeechSynthesizer(Protocol):
    sample_rate: int                      # 24000 for OpenAI PCM, 8000 for mu-law
    encoding: AudioEncoding               # mu-law only at 8 kHz (Deepgram Aura)
    cache_key: str                        # provider + model + voice: what a cached greeting depends on

    def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text` as it arrives; closing the generator early (`aclose()`) cancels the request."""
        ...

    async def close(self) -> None: ...
