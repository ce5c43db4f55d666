"""What one caller turn cost, instant by instant (the fields are defined in docs/architecture.md, "Latency"),
and LATENCY_FIELDS: the one list of its durations, for everything that stores or shows them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LatencyField:
    """One duration of a turn. `name` is the TurnLatency property, the turn row's column and the
    JSON key alike, so every reader lists the durations from LATENCY_FIELDS, never by hand."""
    name: str       # "llm_ttft_ms"
    label: str      # how a page names it: "LLM first token"
    part: bool      # one of the parts first_audio_ms is made of (the call page stacks them)

    @property
    def short(self) -> str:
        """The name without its unit: a terminal table's column ("llm_ttft")."""
        return self.name.removesuffix("_ms")


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
    speculative: bool = False              # prepared on Flux's EagerEndOfTurn, sent on its EndOfTurn

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
        if self.speculative:  # the providers worked while the caller's turn was still closing:
            ready = max(t for t in (self.transcript_at, self.tts_first_at) if t is not None) \
                if self.transcript_at is not None or self.tts_first_at is not None else None
            return _ms(ready, self.first_audio_at)  # what was left is Zylin's: ready to sent
        waited_tools = self.tool_before_audio_s * 1000.0  # tools that ran while speech played cost nothing
        parts = (self.asr_ms or 0.0) + (self.llm_ttft_ms or 0.0) + waited_tools + (self.tts_ttfb_ms or 0.0)
        return round(total - parts, 1)

    def add_tool_run(self, started: float, ended: float) -> None:
        self.tool_s += ended - started
        heard_from = self.first_audio_at if self.first_audio_at is not None else ended
        self.tool_before_audio_s += max(0.0, min(ended, heard_from) - started)

    def as_dict(self) -> dict[str, float | None]:
        return {field.name: getattr(self, field.name) for field in LATENCY_FIELDS}


# Every duration TurnLatency derives, in the order tables show them (tests/test_latency_fields.py
# holds this to TurnLatency's properties, the turns table and the JSON API).
LATENCY_FIELDS = (
    LatencyField("asr_ms", "speech recognition", part=True),
    LatencyField("llm_ttft_ms", "LLM first token", part=True),
    LatencyField("tool_ms", "tools", part=True),
    LatencyField("tts_ttfb_ms", "speech synthesis", part=True),
    LatencyField("first_audio_ms", "first audio", part=False),
    LatencyField("heard_ms", "heard", part=False),
    LatencyField("overhead_ms", "Zylin overhead", part=True),
)
