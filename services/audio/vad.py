"""Local voice activity detection on inbound frames: when the caller starts and stops speaking.

The recognizer decides *what* was said; this decides *when*, within a few frames, so barge-in
and the end-of-speech flush do not wait for the network. Two detectors share one contract
(`Vad`): a neural one (services/audio/silero_vad.py, the default) that tells speech from noise,
hum, coughs and Zylin's own echo, and the energy threshold below for the lightest deployments.
Both take the 20 ms PCM16 frame that `CallSession.on_media` has just decoded.
"""

from __future__ import annotations

import warnings
from enum import Enum
from typing import TYPE_CHECKING, Protocol

with warnings.catch_warnings():  # stdlib up to 3.12 (deprecated there), audioop-lts from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

if TYPE_CHECKING:
    pass

FRAME_MS = 20
# Speech start after this much voice in a row, unless VAD_START_MS says otherwise (docs/benchmarks.md
# §6): the neural detector needs less, as a burst of noise does not fool it as it fools an energy threshold.
NEURAL_START_MS = 60
ENERGY_START_MS = 100


class VadEvent(Enum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


class Vad(Protocol):
    """One call's detector: fed every inbound frame, in order."""

    speaking: bool
    last_voiced_at: float  # arrival time (monotonic) of the last voiced frame
    start_frames: int      # voiced frames in a row that make speech start (its onset delay)

    def update(self, frame_pcm: bytes, now: float) -> VadEvent | None:
        """One 20 ms PCM16 8 kHz frame that arrived at `now`: an event, or None (almost always)."""
        ...


class Hysteresis:
    """Per-frame scores -> speech start/end. Speech starts after `start_frames` frames in a row
    scoring at least `threshold`, and ends after `end_silence_frames` in a row below
    `neg_threshold` (lower, so a soft syllable inside a word does not end the turn)."""

    def __init__(self, threshold: float, neg_threshold: float, start_frames: int, end_silence_frames: int) -> None:
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.start_frames = start_frames
        self.end_silence_frames = end_silence_frames
        self.speaking = False
        self.last_voiced_at = 0.0
        self._voiced_run = 0
        self._silent_run = 0

    def step(self, score: float, now: float) -> VadEvent | None:
        if self.speaking:
            if score >= self.neg_threshold:
                self.last_voiced_at = now
                self._silent_run = 0
                return None
            self._silent_run += 1
            if self._silent_run >= self.end_silence_frames:
                self.speaking = False
                self._voiced_run = 0
                return VadEvent.SPEECH_END
            return None
        if score >= self.threshold:
            self.last_voiced_at = now
            self._voiced_run += 1
            if self._voiced_run >= self.start_frames:
                self.speaking = True
                self._silent_run = 0
                return VadEvent.SPEECH_START
            return None
        self._voiced_run = 0
        return None


class EnergyVad(Hysteresis):
    """Voiced = frame RMS at or above a threshold. Costs a fraction of a microsecond, but anything
    loud enough is speech to it: line noise, hum, a cough, the caller's TV, Zylin's own echo."""

    def __init__(self, threshold_rms: int, start_frames: int = 3, end_silence_frames: int = 15) -> None:
        super().__init__(threshold_rms, threshold_rms, start_frames, end_silence_frames)

    def update(self, frame_pcm: bytes, now: float) -> VadEvent | None:
        return self.step(audioop.rms(frame_pcm, 2), now)
