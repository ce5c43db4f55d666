"""The speech recognizer contract: one per call, PCM16 8 kHz in, recognition events out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    speech_final: bool  # closes the caller's turn (endpoint, or the answer to finalize())
    confidence: float = 1.0
    start_s: float = 0.0  # stream time: seconds since the call's first frame
    end_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_s: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    last_word_end_s: float


@dataclass(frozen=True, slots=True)
class SpeechNotUnderstood:
    """The caller spoke, but this recognizer can never have words for it (the offline mock with
    no script). The engine says `notice` so a real caller learns why nobody answers, instead of
    being asked "are you still there?" and hung up on."""
    notice: str
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecognizerFailed:
    """The recognizer is gone for good (could not reconnect); the call must not go silent."""
    reason: str


AsrEvent = Transcript | SpeechStarted | UtteranceEnd | SpeechNotUnderstood | RecognizerFailed


class SpeechRecognizer(Protocol):
    async def start(self) -> None: ...
    async def send(self, pcm16_8k: bytes) -> None: ...
    async def finalize(self) -> None: ...
    async def close(self) -> None: ...
    def events(self) -> AsyncIterator[AsrEvent]: ...
