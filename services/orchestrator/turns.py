"""Turn detection: when the caller is talking, when they cut Zylin off, and when their turn ends.

The local VAD says *when* within a frame or two (speech start: the caller is active; speech end:
the recognizer is asked for its final words at once); the recognizer says *what* (final
transcripts accumulate, `speech_final` or UtteranceEnd close the turn). Caller sound while Zylin
is audible is an overlap, judged by services/orchestrator/interruption.py: a barge-in once the
caller really takes the turn, otherwise Zylin carries on and the call's record says why. A turn
made only of backchannels said over a reply is dropped, so Zylin never answers "mm-hm". A press
of 0 is a turn of its own. The engine answers through `TurnHooks`; it never sees VAD events or
pending text.

A recognizer with its own turn detection (Flux) adds turn events: a turn's start is a barge-in
candidate like the VAD's speech start, a probable end starts a speculative reply (not while
Zylin is audible), a resumed turn drops it, and the turn's end closes the turn as speech_final
does (the engine commits the speculative reply if it answered the same words).

A turn whose words end unfinished ("I'd like to book, um", "... on": services/receptionist/
endings.py) is held before it closes: if the caller speaks again within `hold_unfinished_ms` of
silence, their next words join the same turn; if not, it closes at the hold's end with what was
said. The hold is endpointing, so it counts in the turn's asr_ms (its speech end is the last voiced
frame, its close the hold's end). DTMF 0 and Flux's own turn end are never held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from services.asr.base import EagerTurnEnd, Transcript, TurnEnded
from services.audio.codec import FRAME_MS
from services.audio.vad import Vad, VadEvent
from services.orchestrator.interruption import InterruptionPolicy, Overlap
from services.receptionist.backchannels import Words, classify
from services.receptionist.endings import unfinished
from services.storage.vocabulary import BargeIn, NotAnInterruption

log = logging.getLogger("zylin.turns")

INTERRUPT_MIN_SPEECH_MS = 250  # the defaults: see services/settings.py
TURN_HOLD_UNFINISHED_MS = 800


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
        """The caller cut in (a BargeIn reason): stop the audible reply."""
        ...

    def on_interruption_ignored(self, why: str, words: str, speech_ms: int) -> None:
        """Caller sound over the reply was not an interruption (a NotAnInterruption reason): Zylin
        went on. `words` are the recognizer's, if any (caller content: the call log only)."""
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

    def __init__(self, vad: Vad, hooks: TurnHooks, person_request: str,
                 min_speech_ms: int = INTERRUPT_MIN_SPEECH_MS,
                 hold_unfinished_ms: int = TURN_HOLD_UNFINISHED_MS) -> None:
        self.vad = vad
        self._hooks = hooks
        self._vad_update = vad.update
        self._person_request = person_request  # what a press of 0 tells the brain
        self._pending: list[str] = []          # final words of the turn not yet answered
        self._listening = False                # ... and all of them backchannels said over a reply
        self._policy = InterruptionPolicy(min_speech_ms)
        self._over: Overlap | None = None      # caller sound over Zylin's voice, not judged yet
        self._frame = 0                        # inbound frames so far: the clock overlaps are timed by
        self._hold_frames = -(-hold_unfinished_ms // FRAME_MS)  # silence an unfinished turn waits
        self._hold_left = 0                    # silent frames until a held turn closes; 0 = none held

    @property
    def frames(self) -> int:
        """Inbound frames so far: the call's stream clock (the engine's stream time reads it)."""
        return self._frame

    @property
    def mid_turn(self) -> bool:
        """The caller is speaking or has words not yet answered: not a silence."""
        return self.vad.speaking or bool(self._pending)

    # --- inbound -------------------------------------------------------------------------------

    def on_frame(self, frame_pcm: bytes, now: float) -> Coroutine[Any, Any, None] | None:
        self._frame += 1
        event = self._vad_update(frame_pcm, now)
        if self._over is not None:
            work = self._overlap_frame(event, now)
        elif event is None:
            work = None
        else:
            work = self._speech_started() if event is VadEvent.SPEECH_START else self._hooks.finalize_recognizer()
        if self._hold_left and work is None:
            return self._hold_frame(now)
        return work

    async def on_transcript(self, event: Transcript) -> None:
        text = event.text.strip()
        if not text:
            return
        hooks = self._hooks
        hooks.on_caller_active()
        since = hooks.speaking_since()
        over_reply = since is not None and event.end_s > since  # spoken over the reply, not before it
        if over_reply:
            over = self._over
            if over is None:  # words the VAD did not take for speech: the recognizer's timing counts
                over = self._over = Overlap(self._frame, self._frame, vad=False)
            why = self._policy.heard(over, text, event.end_s - event.start_s)
            if why is not None:
                await self._barge_in(why)
        if event.is_final:
            self._listening = (self._listening or not self._pending) and over_reply \
                and classify(text) is Words.BACKCHANNEL
            self._pending.append(text)
        if event.speech_final:
            await self._close_or_hold()

    async def on_utterance_end(self) -> None:
        await self._close_or_hold()

    # --- a recognizer's own turn detection (Flux) ---------------------------------------------------

    async def on_turn_started(self) -> None:
        """A barge-in candidate, judged like the VAD's speech start; an overlap the VAD already
        opened is not started over (its onset stands)."""
        if self._over is None:
            await self._speech_started()
        else:
            self._hooks.on_caller_active()

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
            self._listening = False
            await self._close_turn(speech_end=time.monotonic())

    # --- decisions -----------------------------------------------------------------------------

    async def _speech_started(self) -> None:
        """Speech began; over Zylin's voice it is an overlap, timed from its first voiced frame."""
        hooks = self._hooks
        hooks.on_caller_active()
        if hooks.speaking_since() is not None:
            onset = self._frame - self.vad.start_frames + 1
            self._over = over = Overlap(onset, self._frame)
            if (why := self._policy.voiced(over, self._frame)) is not None:  # a bound within the VAD's onset
                await self._barge_in(why)

    def _overlap_frame(self, event: VadEvent | None, now: float) -> Coroutine[Any, Any, None] | None:
        """A frame while an overlap is judged: the work it needs, if any."""
        over = self._over
        assert over is not None
        if event is VadEvent.SPEECH_END:
            over.ended = self._frame
            return self._hooks.finalize_recognizer()
        if event is VadEvent.SPEECH_START:  # a new sound: the last one was not an interruption
            self._drop_overlap()
            return self._speech_started()
        if self._hooks.speaking_since() is None:  # Zylin finished: what the caller says is a turn
            self._drop_overlap()
            return None
        if over.ended is None:
            if self.vad.last_voiced_at == now and (why := self._policy.voiced(over, self._frame)) is not None:
                return self._barge_in(why)
        elif self._policy.settled_quiet(over, self._frame):
            self._drop_overlap()
        return None

    def _drop_overlap(self) -> None:
        """The overlap is over without a barge-in; a wordless one is recorded now (one with words
        is recorded if its turn is dropped, or answered as a turn)."""
        over, self._over = self._over, None
        if over is not None and over.words is None and over.ended is not None:
            self._hooks.on_interruption_ignored(NotAnInterruption.TOO_SHORT, "", over.speech_ms)

    async def _barge_in(self, why: BargeIn) -> None:
        self._over = None
        await self._hooks.on_barge_in(why)

    async def _close_or_hold(self) -> None:
        """The recognizer says the turn is over: close it, unless its words end unfinished; then
        the close waits for `hold_unfinished_ms` of silence (a running hold is not restarted). A
        backchannel over the reply is not held: it is no turn at all."""
        if not self._hold_frames or not self._pending or self._listening or not unfinished(self._pending[-1]):
            await self._close_turn()
        elif not self._hold_left:
            self._hold_left = self._hold_frames
            log.debug("turn held: its words end unfinished")

    def _hold_frame(self, now: float) -> Coroutine[Any, Any, None] | None:
        """A frame of a held turn: the caller's voice (speech, or a voiced frame of its onset)
        starts the count over, silence runs it down; at zero the turn closes with what was said."""
        if self.vad.speaking or self.vad.last_voiced_at == now:
            self._hold_left = self._hold_frames
            return None
        self._hold_left -= 1
        return None if self._hold_left else self._release_hold()

    async def _release_hold(self) -> None:
        log.debug("held turn closes: the caller said no more")
        await self._close_turn()

    async def _close_turn(self, speech_end: float | None = None) -> bool:
        """The caller finished a turn: hand it over. Once per turn (the pending text is consumed);
        while the engine takes no turns the words wait for the next close. Whether it was handed."""
        hooks = self._hooks
        self._hold_left = 0
        if not self._pending or not hooks.taking_turns():
            return False
        now = time.monotonic()
        text = " ".join(self._pending)
        self._pending.clear()
        if self._listening:  # "mm-hm" over the reply: the caller was listening, not taking a turn
            self._listening = False
            over, self._over = self._over, None
            speech_ms = over.speech_ms if over is not None else 0
            hooks.on_interruption_ignored(NotAnInterruption.BACKCHANNEL, text, speech_ms)
            return False
        self._over = None
        if hooks.speaking_since() is not None:
            await self._barge_in(BargeIn.NEW_TURN)  # the caller went on (or pressed 0) while Zylin answered
        hooks.on_turn(text, speech_end or self.vad.last_voiced_at or now, now)
        return True
