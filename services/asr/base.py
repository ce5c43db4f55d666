"""The speech recognizer contract: one per call, 8 kHz audio in, recognition events out.

Audio is PCM16 unless the recognizer's `input_encoding` is "mulaw": then it gets Twilio's bytes
as they came (Flux takes mu-law itself, so nothing is decoded for it). A recognizer with its own
turn detection (Flux) also says where turns start, may end, resume and end: the Turn* events."""

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


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """The recognizer heard the caller begin a turn (Flux StartOfTurn): a barge-in candidate."""
    at_s: float


@dataclass(frozen=True, slots=True)
class EagerTurnEnd:
    """The turn has probably ended (Flux EagerEndOfTurn): time to prepare a reply, not to send it."""
    text: str
    confidence: float = 0.0   # that the turn is over
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TurnResumed:
    """The caller went on after an EagerTurnEnd (Flux TurnResumed): the prepared reply is void."""
    at_s: float


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The turn is over (Flux EndOfTurn), with all its words."""
    text: str
    confidence: float = 0.0
    start_s: float = 0.0
    end_s: float = 0.0


AsrEvent = (Transcript | SpeechStarted | UtteranceEnd | SpeechNotUnderstood | RecognizerFailed
            | TurnStarted | EagerTurnEnd | TurnResumed | TurnEnded)


def takes_mulaw(recognizer: object) -> bool:
    """Whether `recognizer` wants Twilio's mu-law as it came rather than PCM16."""
    return getattr(recognizer, "input_encoding", "linear16") == "mulaw"


class SpeechRecognizer(Protocol):
    async def start(self) -> None: ...
    async def send(self, audio: bytes) -> None: ...
    async def finalize(self) -> None: ...
    async def close(self) -> None: ...
    def events(self) -> AsyncIterator[AsrEvent]: ...
