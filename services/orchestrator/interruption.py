"""Is the caller taking the turn, or only making a sound while Zylin talks? One overlap at a time.

Twilio cannot pause playback, only `clear` it, so Zylin never stops "to see": it carries on until
the caller really takes the turn, and a sound that was not an interruption costs nothing. The
caller takes the turn with an interrupting word ("wait", "sorry": at once), or with enough speech
(`min_speech_ms` from its first voiced frame, the VAD's onset delay included) that is not made
of backchannels only ("mm-hm", "right"; services/receptionist/backchannels.py). Without words yet,
the duration alone decides: a recognizer's first interim result comes ~250-500 ms into speech,
too late for the ~400 ms a real interruption may take to silence Zylin, while a backchannel is
mostly shorter than `min_speech_ms`. Durations are counted in frames (20 ms of the caller's
audio each), so they hold whatever the network did to the frames' arrival.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.audio.codec import FRAME_MS
from services.receptionist.backchannels import Words, classify
from services.storage.vocabulary import BargeIn

SETTLE_MS = 1000  # after a wordless sound ends, how long its words may still come (finalize's answer)


@dataclass(slots=True)
class Overlap:
    """Caller sound over Zylin's voice, from its onset until it is judged; frame numbers."""
    onset: int                     # its first voiced frame
    voiced_to: int                 # its latest voiced frame
    vad: bool = True               # the VAD heard it (else only the recognizer did: its timing counts)
    ended: int | None = None       # the VAD's speech end, if it came
    words: Words | None = None     # the strongest words heard in it so far (OTHER over BACKCHANNEL)
    text: str = ""                 # the latest words, for the call's record
    words_s: float = 0.0           # how long the recognizer says the words took

    @property
    def frames(self) -> int:
        return self.voiced_to - self.onset + 1

    @property
    def speech_ms(self) -> int:
        return self.frames * FRAME_MS if self.vad else round(self.words_s * 1000)


class InterruptionPolicy:
    """The rules, with the call's settings: each method is told one thing and says whether the
    caller has now taken the turn (why, for the call's record) or not yet (None)."""

    def __init__(self, min_speech_ms: int) -> None:
        self.min_speech_ms = min_speech_ms
        self.min_frames = max(1, -(-min_speech_ms // FRAME_MS))
        self.settle_frames = SETTLE_MS // FRAME_MS

    def voiced(self, over: Overlap, frame: int) -> BargeIn | None:
        """A voiced frame of the overlap, still speech by the VAD."""
        over.voiced_to = frame
        if over.words is Words.BACKCHANNEL or over.frames < self.min_frames:
            return None
        return BargeIn.VOICE if over.words is None else BargeIn.WORDS

    def heard(self, over: Overlap, text: str, words_s: float) -> BargeIn | None:
        """The recognizer's words for the overlap (an interim or a final result)."""
        kind = classify(text)
        over.text = text
        over.words_s = max(over.words_s, words_s)
        if kind is Words.INTERRUPTING:
            return BargeIn.INTERRUPTING_WORD
        if kind is Words.OTHER:
            over.words = Words.OTHER
            return BargeIn.WORDS if over.speech_ms >= self.min_speech_ms else None
        if over.words is None:
            over.words = Words.BACKCHANNEL
        return None

    def settled_quiet(self, over: Overlap, frame: int) -> bool:
        """A sound that ended without words and has had its chance to get them: not speech."""
        return over.ended is not None and over.words is None and frame - over.ended >= self.settle_frames
