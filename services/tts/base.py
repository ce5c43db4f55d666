"""The speech synthesizer contract."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Literal, Protocol

AudioEncoding = Literal["pcm16", "mulaw"]
# (kind, **detail): what a voice reports to the call log (an EventKind and its detail)
EventHook = Callable[..., None]


class SpeechSynthesizer(Protocol):
    sample_rate: int                      # 24000 for OpenAI PCM, 8000 for mu-law
    encoding: AudioEncoding               # mu-law only at 8 kHz (Deepgram Aura, OpenAI Realtime)
    cache_key: str                        # provider + model + voice: what a cached phrase depends on

    def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Audio for `text` as it arrives; closing the generator early (`aclose()`) cancels the
        request (a streaming voice tells its provider to stop). Several may be open at once: each
        yields its own text's audio, and a streaming voice speaks them in the order they began."""
        ...

    def for_call(self, on_event: EventHook | None = None) -> SpeechSynthesizer:
        """The voice one call speaks with. A stateless voice (one HTTP request per sentence)
        returns itself; a streaming voice returns a new per-call voice whose connection opens now
        (pre-warmed before the first sentence) and which `close()` ends with the call."""
        ...

    async def close(self) -> None: ...
