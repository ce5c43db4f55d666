"""Deepgram Flux (listen v2, `flux-general-en`) for one call: Twilio's mu-law in, turn events out.

Flux detects the end of a turn itself, from the words and the audio, and says so in `TurnInfo`
messages: StartOfTurn, Update (the words so far), EagerEndOfTurn (probably done: prepare a reply),
TurnResumed (not done after all) and EndOfTurn (done, with the turn's transcript). They map to the
contract's TurnStarted, Transcript (interim), EagerTurnEnd, TurnResumed and TurnEnded. The stream
machinery (backlog, reconnects, call time across connections) is services/asr/deepgram.py's.

Flux takes mu-law 8 kHz as Twilio sends it, so the engine hands the frames over undecoded. The
engine's `finalize()` (its VAD heard silence) is not passed on: Flux's own end of turn is the
point of using it, and ForceEndTurn would overrule it. A connection lost after an EagerEndOfTurn
that Flux had not yet confirmed or taken back ends that turn with the eager words: the new
connection cannot know them, and Flux was fairly sure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from deepgram.listen.v2.types import (
    ListenV2Connected,
    ListenV2FatalError,
    ListenV2TurnInfo,
    ListenV2Warning,
)

from services.asr.base import EagerTurnEnd, Transcript, TurnEnded, TurnResumed, TurnStarted
from services.asr.deepgram import SAMPLE_RATE, DeepgramStream

log = logging.getLogger("zylin.asr.flux")

FLUX_MODEL = "flux-general-en"
MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 100
# The ranges Deepgram documents (https://developers.deepgram.com/docs/flux/configuration); a value
# outside them, or an eager threshold above the final one, is refused at the upgrade (HTTP 400).
EOT_THRESHOLD_RANGE = (0.5, 1.0)
EAGER_EOT_THRESHOLD_RANGE = (0.3, 0.9)
EOT_TIMEOUT_MS_RANGE = (500, 60000)


def flux_keyterms(keyterms: Sequence[str]) -> list[str]:
    """The keyterms Flux will take: blank or over-long ones refuse the whole connection."""
    terms = [t.strip() for t in keyterms]
    return [t for t in terms if t and len(t) <= MAX_KEYTERM_CHARS][:MAX_KEYTERMS]


def flux_query(model: str, eot_threshold: float, eager_eot_threshold: float, eot_timeout_ms: int,
               keyterms: Sequence[str]) -> dict[str, Any]:
    """The v2 query; `eager_eot_threshold` of 0 leaves eager end-of-turn off (no EagerEndOfTurn)."""
    params: dict[str, Any] = {"model": model, "encoding": "mulaw", "sample_rate": SAMPLE_RATE,
                              "eot_threshold": eot_threshold, "eot_timeout_ms": eot_timeout_ms}
    if eager_eot_threshold > 0:
        params["eager_eot_threshold"] = eager_eot_threshold
    terms = flux_keyterms(keyterms)
    if terms:
        params["keyterm"] = terms
    return params


class FluxRecognizer(DeepgramStream):
    """One call's Flux stream; see the module docstring."""

    input_encoding = "mulaw"
    bytes_per_s = SAMPLE_RATE      # mu-law: one byte a sample

    def __init__(self, *, api_key: str, base_url: str, model: str = FLUX_MODEL,
                 eot_threshold: float = 0.7, eager_eot_threshold: float = 0.0,
                 eot_timeout_ms: int = 5000, keyterms: Sequence[str] = (), **stream: Any) -> None:
        super().__init__(api_key=api_key, base_url=base_url,
                         params=flux_query(model, eot_threshold, eager_eot_threshold, eot_timeout_ms, keyterms),
                         **stream)
        self._eager: EagerTurnEnd | None = None   # an eager end not yet confirmed or taken back

    def _connect(self) -> Any:
        return self._client.listen.v2.connect(**self.params)

    async def _keep_alive(self, socket) -> None:
        """Flux documents no KeepAlive message; Twilio's 20 ms frames never stop while a call lasts."""

    async def finalize(self) -> None:
        """Not passed on: Flux decides where the turn ends (see the module docstring)."""

    async def _serve(self, socket) -> str:
        dropped = await super()._serve(socket)
        if dropped and self._eager is not None:
            eager, self._eager = self._eager, None
            self._events.put_nowait(TurnEnded(eager.text, eager.confidence, eager.start_s, eager.end_s))
        return dropped

    def _on_message(self, message: object, offset: float) -> None:
        if isinstance(message, ListenV2TurnInfo):
            self._on_turn_info(message, offset)
        elif isinstance(message, ListenV2Connected):
            log.info("Flux stream connected%s: request %s", self._who, message.request_id)
        elif isinstance(message, ListenV2FatalError):
            log.warning("Flux fatal error%s: %s: %s", self._who, message.code, message.description)
        elif isinstance(message, ListenV2Warning):
            log.warning("Flux warning%s: %s: %s", self._who, message.code, message.description)
        else:
            log.debug("ignored Flux message%s: %s", self._who, type(message).__name__)

    def _on_turn_info(self, message: ListenV2TurnInfo, offset: float) -> None:
        text = message.transcript.strip()
        start, end = offset + message.audio_window_start, offset + message.audio_window_end
        confidence = float(message.end_of_turn_confidence)
        event = message.event
        if event == "StartOfTurn":
            self._events.put_nowait(TurnStarted(start))
        elif event == "Update":
            if text:
                self._events.put_nowait(Transcript(text=text, is_final=False, speech_final=False,
                                                   confidence=_word_confidence(message),
                                                   start_s=start, end_s=end))
        elif event == "EagerEndOfTurn":
            self._eager = EagerTurnEnd(text, confidence, start, end)
            self._events.put_nowait(self._eager)
        elif event == "TurnResumed":
            self._eager = None
            self._events.put_nowait(TurnResumed(end))
        elif event == "EndOfTurn":
            self._eager = None
            self._events.put_nowait(TurnEnded(text, confidence, start, end))
        else:  # an open enum: a newer event this code does not know yet
            log.debug("ignored Flux turn event%s: %s", self._who, event)


def _word_confidence(message: ListenV2TurnInfo) -> float:
    words = message.words or []
    return min((float(w.confidence) for w in words), default=0.0)
