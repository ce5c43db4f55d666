"""One reply of Zylin's (to a caller turn, or the greeting, or a canned line) and its lifecycle.

A reply is SPEAKING while it is written, synthesized and sent; SENT once all of it is out and it
waits for Twilio's mark echoes; PLAYED when the caller has heard it all. A barge-in CUTs it (the
`clear` is on its way) and then leaves it INTERRUPTED, history keeping only what was heard; the
call's end interrupts it at once. A newer reply that starts while it still plays SUPERSEDES it:
it plays on, but the engine no longer watches it. A speculative reply (prepared on a probable
end of the caller's turn) starts SPECULATIVE: its brain runs and its first sentence is
synthesized, but nothing reaches the caller until the turn's end commits it (SPEAKING) or it
is DISCARDED (the caller went on), unheard and unrecorded. Every other step raises `InvalidTransition`
where it is attempted, so a reply cannot be committed to history or recorded twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from services.audio.codec import FRAME_MS
from services.llm.base import Message
from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import TurnRecord
from services.orchestrator.speaker import Speaker, SpokenSentence
from services.receptionist.tool_types import CallAction


class ReplyState(Enum):
    SPECULATIVE = "speculative"  # prepared before the caller's turn surely ended; nothing sent
    DISCARDED = "discarded"      # a speculative reply the caller's turn did not confirm
    SPEAKING = "speaking"        # being written, synthesized and sent
    SENT = "sent"                # all sent, its messages in history; marks still to come back
    PLAYED = "played"            # the caller heard all of it
    CUT = "cut"                  # a barge-in stopped it; what was heard is known once `clear` is out
    INTERRUPTED = "interrupted"  # history keeps what the caller heard of it
    SUPERSEDED = "superseded"    # a newer reply took over while this one played on

    @property
    def final(self) -> bool:
        """The reply's turn has been recorded (or, discarded, never will be): nothing more happens to it."""
        return self in _FINAL


_FINAL = frozenset({ReplyState.PLAYED, ReplyState.INTERRUPTED, ReplyState.SUPERSEDED, ReplyState.DISCARDED})
_LIVE = frozenset({ReplyState.SPEAKING, ReplyState.SENT})

STEPS: dict[ReplyState, frozenset[ReplyState]] = {
    ReplyState.SPECULATIVE: frozenset({ReplyState.SPEAKING, ReplyState.DISCARDED}),
    ReplyState.DISCARDED: frozenset(),
    ReplyState.SPEAKING: frozenset({ReplyState.SENT, ReplyState.CUT, ReplyState.INTERRUPTED,
                                    ReplyState.SUPERSEDED}),
    ReplyState.SENT: frozenset({ReplyState.PLAYED, ReplyState.CUT, ReplyState.INTERRUPTED,
                                ReplyState.SUPERSEDED}),
    ReplyState.CUT: frozenset({ReplyState.INTERRUPTED}),
    ReplyState.PLAYED: frozenset(),
    ReplyState.INTERRUPTED: frozenset(),
    ReplyState.SUPERSEDED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A step the reply lifecycle does not have: a bug in the engine, surfaced where it happens."""


@dataclass(slots=True)
class Reply:
    """Zylin's answer to one caller turn (or the greeting, or a canned line)."""
    gen: int
    latency: TurnLatency
    speaker: Speaker
    record: TurnRecord
    messages: list[Message] = field(default_factory=list)
    action: CallAction | None = None
    task: asyncio.Task | None = None
    caller_turn: TurnRecord | None = None
    stream_s_at_start: float = 0.0
    state: ReplyState = ReplyState.SPEAKING
    speculated: str = ""                 # the caller's words a speculative reply answers
    speculated_at: float = 0.0           # when the speculation began (monotonic)
    gate: asyncio.Event | None = None    # a speculative reply's audio waits for it (set on commit)

    def move(self, to: ReplyState) -> ReplyState:
        """Enter `to` and return the state left; raise InvalidTransition if the lifecycle has no
        such step. What a step means (history, the call's record) is the engine's to do."""
        left = self.state
        if to not in STEPS[left]:
            raise InvalidTransition(f"reply {self.gen}: cannot go from {left.value} to {to.value}")
        self.state = to
        return left

    @property
    def live(self) -> bool:
        """Still the engine's to watch: its marks count, and a barge-in would cut it."""
        return self.state in _LIVE

    @property
    def sentences(self) -> list[SpokenSentence]:
        return self.speaker.sentences

    @property
    def playing(self) -> bool:
        """True while the caller may still be hearing (or about to hear) this reply."""
        state = self.state
        if state is ReplyState.SPEAKING:
            return True
        return state is ReplyState.SENT and any(s.played_at is None for s in self.sentences)

    def heard(self, now: float) -> dict[int, str]:
        """What the caller heard, per assistant message (by id): whole sentences whose marks came
        back, plus the share of the playing sentence that its elapsed time covers (timed from
        the previous sentence's end, or from when playback began)."""
        heard: dict[int, list[str]] = {}
        started = self.latency.heard_at  # the start mark's echo: one frame after playback began
        previous_end = None if started is None else started - FRAME_MS / 1000
        for s in self.sentences:
            key = id(s.message)
            if s.played_at is not None:
                heard.setdefault(key, []).append(s.text)
                previous_end = s.played_at
                continue
            if s.first_sent_at is not None and s.duration_s > 0:
                began = max(previous_end or s.first_sent_at, s.first_sent_at)
                share = min(max((now - began) / s.duration_s, 0.0), 1.0)
                words = s.text.split()
                cut = int(len(words) * share)
                if cut:
                    heard.setdefault(key, []).append(" ".join(words[:cut]) + "...")
            break
        return {key: " ".join(parts) for key, parts in heard.items()}
