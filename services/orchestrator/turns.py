"""Turn detection: when the caller is talking, when they cut Zylin off, and when their turn ends.

The local VAD says *when* within a frame or two (speech start: the caller is active, and a
barge-in if Zylin is audible; speech end: the recognizer is asked for its final words at once);
the recognizer says *what* (final transcripts accumulate, `speech_final` or UtteranceEnd close
the turn) and also barges in when its words fall inside a reply. A press of 0 is a turn of its
own. The engine answers through `TurnHooks`; it never sees VAD events or pending text.

A recognizer with its own turn detection (Flux) adds turn events: a turn's start is a barge-in
candidate like the VAD's speech start, a probable end starts a speculative reply (not while
Zylin is audible), a resumed turn drops it, and the turn's end closes the turn as speech_final
does (the engine commits the speculative reply if it answered the same words).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any, Protocol

from services.asr.base import EagerTurnEnd, Transcript, TurnEnded
from services.audio.vad import Vad, VadEvent


class TurnHooks(Protocol):
    """What the engine offers the detector (CallSession implements it)."""

    def speaking_since(self) -> float | None:
        """Stream time (s) at which the reply the caller may be hearing began; None if none is."""
        ...

    def taking_turns(self) -> bool:
        """Whether a closed turn may be answered now (not while the call is ending)."""
        ...

    def on_caller_active(self) -> None:
        """The caller did something: the silence watchdog starts over."""
        ...

    async def on_barge_in(self, why: str) -> None:
        """The caller cut in ("voice", "words" or "new turn"): stop the audible reply."""
        ...

    async def finalize_recognizer(self) -> None:
        """Speech ended: the recognizer should flush its words now, not at its own endpoint."""
        ...

    def on_turn(self, text: str, speech_end: float, closed_at: float) -> None:
        """The caller's turn is complete: answer `text` (speech_end and closed_at are monotonic)."""
        ...

    def on_speculate(self, text: str, speech_end: float) -> None:
        """The turn has probably ended with `text`: prepare the reply, send nothing yet."""
        ...

    def drop_speculation(self) -> None:
        """The caller went on (or the turn ended with no words): the prepared reply is void."""
        ...


class TurnDetector:
    """One call's turn-taking. `on_frame` runs for every 20 ms frame (PCM16, 8 kHz), so it is a
    plain call that returns the work a VAD event needs (a coroutine to await), or None on almost
    every frame."""

    def __init__(self, vad: Vad, hooks: TurnHooks, person_request: str) -> None:
        self.vad = vad
        self._hooks = hooks
        self._vad_update = vad.update
        self._person_request = person_request  # what a press of 0 tells the brain
        self._pending: list[str] = []          # final words of the turn not yet answered

    @property
    def mid_turn(self) -> bool:
        """The caller is speaking or has words not yet answered: not a silence."""
        return self.vad.speaking or bool(self._pending)

    # --- inbound -------------------------------------------------------------------------------

    def on_frame(self, frame_pcm: bytes, now: float) -> Coroutine[Any, Any, None] | None:
        event = self._vad_update(frame_pcm, now)
        if event is None:
            return None
        return self._speech_started() if event is VadEvent.SPEECH_START else self._hooks.finalize_recognizer()

    async def on_transcript(self, event: Transcript) -> None:
        text = event.text.strip()
        if not text:
            return
        hooks = self._hooks
        hooks.on_caller_active()
        since = hooks.speaking_since()
        if since is not None and event.end_s > since:  # words spoken over the reply, not before it
            await hooks.on_barge_in("words")
        if event.is_final:
            self._pending.append(text)
        if event.speech_final:
            await self._close_turn()

    async def on_utterance_end(self) -> None:
        await self._close_turn()

    # --- a recognizer's own turn detection (Flux) ---------------------------------------------------

    async def on_turn_started(self) -> None:
        """The same barge-in path as the VAD's speech start."""
        await self._speech_started()

    async def on_eager_turn_end(self, event: EagerTurnEnd) -> None:
        text = event.text.strip()
        hooks = self._hooks
        if not text or self._pending or not hooks.taking_turns() or hooks.speaking_since() is not None:
            return  # nothing to say yet, or Zylin is audible: wait for the turn's end
        hooks.on_speculate(text, self.vad.last_voiced_at or time.monotonic())

    def on_turn_resumed(self) -> None:
        self._hooks.drop_speculation()

    async def on_turn_ended(self, event: TurnEnded) -> None:
        text = event.text.strip()
        if text:
            self._hooks.on_caller_active()
            self._pending.append(text)
        if not await self._close_turn():
            self._hooks.drop_speculation()

    async def on_dtmf(self, digit: str) -> None:
        if digit == "0":
            self._hooks.on_caller_active()
            self._pending.append(self._person_request)
            await self._close_turn(speech_end=time.monotonic())

    # --- decisions -----------------------------------------------------------------------------

    async def _speech_started(self) -> None:
        hooks = self._hooks
        hooks.on_caller_active()
        if hooks.speaking_since() is not None:
            await hooks.on_barge_in("voice")

    async def _close_turn(self, speech_end: float | None = None) -> bool:
        """The caller finished a turn: hand it over. Once per turn (the pending text is consumed);
        while the engine takes no turns the words wait for the next close. Whether it was handed."""
        hooks = self._hooks
        if not self._pending or not hooks.taking_turns():
            return False
        now = time.monotonic()
        text = " ".join(self._pending)
        self._pending.clear()
        if hooks.speaking_since() is not None:
            await hooks.on_barge_in("new turn")  # the caller went on (or pressed 0) while Zylin answered
        hooks.on_turn(text, speech_end or self.vad.last_voiced_at or now, now)
        return True
