"""The speech synthesizer contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol


class SpeechSynthesizer(Protocol):
    sample_rate: int                      # 24000 for OpenAI PCM, 8000 for mu-law
    encoding: Literal["pcm16", "mulaw"]   # mu-law only at 8 kHz (Deepgram Aura)
    cache_key: str                        # provider + model + voice: what a cached greeting depends on

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Audio for `text` as it arrives; closing the iterator early cancels the request."""
        ...

    async def close(self) -> None: ...
