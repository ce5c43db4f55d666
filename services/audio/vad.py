"""Local voice activity detection on inbound frames: fast speech start/end from energy alone.

The recognizer decides *what* was said; this decides *when*, within a frame or two, so barge-in
and the end-of-speech flush do not wait for the network.
"""

from __future__ import annotations

from enum import Enum


class VadEvent(Enum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


class EnergyVad:
    def __init__(self, threshold_rms: int, start_frames: int = 3, end_silence_frames: int = 15) -> None:
        self.threshold = threshold_rms
        self.start_frames = start_frames
        self.end_silence_frames = end_silence_frames
        self.speaking = False
        self.last_voiced_at = 0.0  # arrival time (monotonic) of the last voiced frame
        self._voiced_run = 0
        self._silent_run = 0

    def update(self, energy: int, now: float) -> VadEvent | None:
        if energy >= self.threshold:
            self.last_voiced_at = now
            self._voiced_run += 1
            self._silent_run = 0
            if not self.speaking and self._voiced_run >= self.start_frames:
                self.speaking = True
                return VadEvent.SPEECH_START
            return None
        self._voiced_run = 0
        if self.speaking:
            self._silent_run += 1
            if self._silent_run >= self.end_silence_frames:
                self.speaking = False
                return VadEvent.SPEECH_END
        return None
