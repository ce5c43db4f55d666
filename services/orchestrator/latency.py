"""What one caller turn cost, instant by instant (the fields are defined in docs/architecture.md, "Latency")."""

from __future__ import annotations

from dataclasses import dataclass


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 1)


@dataclass(slots=True)
class TurnLatency:
    """Monotonic instants of one turn; the durations are derived, never stored twice."""
    speech_end: float | None = None        # last voiced inbound frame of the caller
    transcript_at: float | None = None     # final transcript that closed the turn
    llm_request_at: float | None = None
    llm_first_at: float | None = None      # first text delta or tool call
    tool_s: float = 0.0
    tool_before_audio_s: float = 0.0      # the part of tool_s the caller waited through in silence
    tts_request_at: float | None = None    # first sentence handed to TTS
    tts_first_at: float | None = None      # its first audio bytes
    first_audio_at: float | None = None    # first outbound media frame sent
    heard_at: float | None = None          # Twilio echoed the first mark

    @property
    def asr_ms(self) -> float | None:
        return _ms(self.speech_end, self.transcript_at)

    @property
    def llm_ttft_ms(self) -> float | None:
        return _ms(self.llm_request_at, self.llm_first_at)

    @property
    def tool_ms(self) -> float:
        return round(self.tool_s * 1000.0, 1)

    @property
    def tts_ttfb_ms(self) -> float | None:
        return _ms(self.tts_request_at, self.tts_first_at)

    @property
    def first_audio_ms(self) -> float | None:
        return _ms(self.speech_end, self.first_audio_at)

    @property
    def heard_ms(self) -> float | None:
        return _ms(self.speech_end, self.heard_at)

    @property
    def overhead_ms(self) -> float | None:
        """End to end minus the providers' and tools' own time: what Zylin itself adds."""
        total = self.first_audio_ms
        if total is None:
            return None
        waited_tools = self.tool_before_audio_s * 1000.0  # tools that ran while speech played cost nothing
        parts = (self.asr_ms or 0.0) + (self.llm_ttft_ms or 0.0) + waited_tools + (self.tts_ttfb_ms or 0.0)
        return round(total - parts, 1)

    def add_tool_run(self, started: float, ended: float) -> None:
        self.tool_s += ended - started
        heard_from = self.first_audio_at if self.first_audio_at is not None else ended
        self.tool_before_audio_s += max(0.0, min(ended, heard_from) - started)

    def as_dict(self) -> dict[str, float | None]:
        return {"asr_ms": self.asr_ms, "llm_ttft_ms": self.llm_ttft_ms, "tool_ms": self.tool_ms,
                "tts_ttfb_ms": self.tts_ttfb_ms, "first_audio_ms": self.first_audio_ms,
                "heard_ms": self.heard_ms, "overhead_ms": self.overhead_ms}
