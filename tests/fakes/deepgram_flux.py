"""The Flux half of the fake Deepgram: `GET /v2/listen`, TurnInfo messages, its refusals.

A FluxSession is a ListenSession (the same socket handling, waiting and drops) that answers as
Flux does: `Connected` first, then `TurnInfo` messages with the documented fields and a
`sequence_id` counting every message sent. A test drives it by hand (`send_turn_info(...)`), or
gives the fake a script: it then "hears" speech by energy, each voiced burst revealing the next
part of the turn's line, and ends turns by the silence after the last word. The silence maps to
an end-of-turn confidence (`silence / full_confidence_s`), so the query's thresholds set the
timing: EagerEndOfTurn when it reaches `eager_eot_threshold`, EndOfTurn at `eot_threshold` or
`eot_timeout_ms`, TurnResumed when speech comes back after an eager end. CloseStream ends an open
turn and closes 1000. Refused at the upgrade with 400, as Deepgram documents and users met:
a model that is not Flux, an unknown encoding or raw audio without sample_rate, a threshold or
timeout out of range, an eager threshold above the final one, a blank or over-long keyterm.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.deepgram_server import ListenSession, _error, audioop

FLUX_MODELS = {"flux-general-en", "flux-general-multi"}
FLUX_ENCODINGS = {"linear16", "linear32", "mulaw", "alaw", "opus", "ogg-opus"}
RAW = {"linear16", "linear32", "mulaw", "alaw"}


def check_flux_query(query: dict[str, list[str]]) -> str | None:
    """Why Flux would refuse this query with 400 at the upgrade, or None."""
    one = {name: values[0] for name, values in query.items() if values}
    if one.get("model") not in FLUX_MODELS:
        return f"model {one.get('model')!r} is not a Flux model"
    encoding = one.get("encoding")
    if encoding is not None and encoding not in FLUX_ENCODINGS:
        return f"unknown encoding {encoding!r}"
    if encoding in RAW and "sample_rate" not in one:
        return "raw audio needs sample_rate"
    try:
        eot = float(one.get("eot_threshold", 0.7))
        eager = float(one["eager_eot_threshold"]) if "eager_eot_threshold" in one else None
        timeout = int(one.get("eot_timeout_ms", 5000))
    except ValueError:
        return "a threshold or timeout is not a number"
    if not 0.5 <= eot <= 1.0:
        return "eot_threshold must be within 0.5-1.0"
    if eager is not None and not 0.3 <= eager <= 0.9:
        return "eager_eot_threshold must be within 0.3-0.9"
    if eager is not None and eager > eot:
        return "eager_eot_threshold must not exceed eot_threshold"
    if not 500 <= timeout <= 60000:
        return "eot_timeout_ms must be within 500-60000"
    if any(not term.strip() or len(term) > 100 for term in query.get("keyterm", [])):
        return "a keyterm is blank or longer than 100 characters"
    return None


def refusal(query: dict[str, list[str]]) -> dict[str, str] | None:
    problem = check_flux_query(query)
    return None if problem is None else _error("INVALID_QUERY_PARAMETER", problem)


class FluxSession(ListenSession):
    """One /v2/listen WebSocket as the fake sees it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._ears = None                 # the v1 ears never run here
        self._sequence = 0
        self.turn_index = 0
        self._flux_ears = _FluxEars(self) if self.fake.script is not None else None

    @property
    def eot_threshold(self) -> float:
        return float(self.param("eot_threshold") or 0.7)

    @property
    def eager_eot_threshold(self) -> float | None:
        value = self.param("eager_eot_threshold")
        return float(value) if value is not None else None

    @property
    def eot_timeout_s(self) -> float:
        return int(self.param("eot_timeout_ms") or 5000) / 1000.0

    @property
    def events(self) -> list[str]:
        """The TurnInfo events sent, in order."""
        return [m["event"] for m in self.sent if m.get("type") == "TurnInfo"]

    async def run(self) -> None:
        await self.send_json({"type": "Connected", "request_id": self.request_id, "sequence_id": self._next()})
        await super().run()

    def _next(self) -> int:
        sequence, self._sequence = self._sequence, self._sequence + 1
        return sequence

    async def send_turn_info(self, event: str, transcript: str = "", *, start: float = 0.0, end: float = 0.0,
                             confidence: float = 0.0, trigger: str = "model") -> None:
        """A TurnInfo message as Flux sends it; the words are spread over the window."""
        words = transcript.split()
        step = (end - start) / len(words) if words else 0.0
        message: dict[str, Any] = {
            "type": "TurnInfo", "request_id": self.request_id, "sequence_id": self._next(),
            "event": event, "turn_index": self.turn_index,
            "audio_window_start": round(start, 3), "audio_window_end": round(end, 3),
            "transcript": transcript, "end_of_turn_confidence": round(confidence, 3),
            "words": [{"word": w, "confidence": 0.97, "start": round(start + i * step, 3),
                       "end": round(start + (i + 1) * step, 3)} for i, w in enumerate(words)],
        }
        if event == "EndOfTurn":
            message["trigger"] = trigger
            self.turn_index += 1
        await self.send_json(message)

    async def _on_audio(self, data: bytes) -> None:
        self.messages.append(data)
        self.audio += data
        await self._notify()
        if self._flux_ears is not None:
            await self._flux_ears.hear(data)

    async def _on_text(self, data: str) -> None:
        try:
            kind = json.loads(data)["type"]
        except (ValueError, KeyError, TypeError):
            kind = None
        if kind is None:
            await self._fatal("INVALID_MESSAGE", "could not parse the client message")
            return
        self.messages.append({"type": kind})
        self.controls.append(kind)
        await self._notify()
        if kind == "CloseStream":
            if self._flux_ears is not None:
                await self._flux_ears.end_turn("model")
            await self.close(1000)
        elif kind == "ForceEndTurn":
            if self._flux_ears is not None:
                await self._flux_ears.end_turn("manual")
        elif kind not in ("KeepAlive", "Configure"):
            await self._fatal("INVALID_MESSAGE", f"unknown message type {kind!r}")

    async def _fatal(self, code: str, description: str) -> None:
        await self.send_json({"type": "Error", "sequence_id": self._next(), "code": code,
                              "description": description})
        await self.close(1008, description[:100])


class _FluxEars:
    """Script mode: energy says when the caller speaks; silence after it says the turn's end."""

    def __init__(self, session: FluxSession) -> None:
        self.session = session
        self.window = int(session.sample_rate * 0.02) * session.bytes_per_sample
        self.encoding = session.param("encoding")
        self._rest = b""
        self.t = 0.0
        self.in_turn = False
        self.voiced = False            # the last window was voiced
        self.start = 0.0
        self.last_voice = 0.0
        self.last_update = 0.0
        self.parts: list[str] = []     # the turn's parts not yet spoken
        self.said: list[str] = []
        self.eager_sent = False

    @property
    def transcript(self) -> str:
        return " ".join(self.said)

    async def hear(self, data: bytes) -> None:
        data = self._rest + data
        cut = len(data) - len(data) % self.window
        self._rest = data[cut:]
        for i in range(0, cut, self.window):
            pcm = data[i:i + self.window]
            if self.encoding == "mulaw":
                pcm = audioop.ulaw2lin(pcm, 2)
            elif self.encoding == "alaw":
                pcm = audioop.alaw2lin(pcm, 2)
            await self._window(audioop.rms(pcm, 2) >= self.session.fake.vad_threshold_rms)
            self.t += 0.02

    async def _window(self, voiced: bool) -> None:
        s = self.session
        if voiced:
            if not self.in_turn:
                self.in_turn, self.start, self.said, self.eager_sent = True, self.t, [], False
                self.parts = _parts(s.fake.script.popleft()) if s.fake.script else []
                await s.send_turn_info("StartOfTurn", start=self.t, end=self.t + 0.02)
            if not self.voiced:   # a new burst: its words are heard
                if self.eager_sent:
                    self.eager_sent = False
                    await s.send_turn_info("TurnResumed", self.transcript, start=self.start, end=self.t)
                if self.parts:
                    self.said.append(self.parts.pop(0))
                self.last_update = self.t
            self.voiced, self.last_voice = True, self.t + 0.02
            if self.t - self.last_update >= 0.24:
                self.last_update = self.t
                await s.send_turn_info("Update", self.transcript, start=self.start, end=self.t + 0.02)
            return
        self.voiced = False
        if not self.in_turn:
            return
        silence = self.t + 0.02 - self.last_voice
        confidence = min(1.0, silence / s.fake.full_confidence_s)
        eager = s.eager_eot_threshold
        if eager is not None and not self.eager_sent and confidence >= eager:
            self.eager_sent = True
            await s.send_turn_info("EagerEndOfTurn", self.transcript, start=self.start, end=self.last_voice,
                                   confidence=confidence)
        if confidence >= s.eot_threshold:
            await self.end_turn("model", confidence)
        elif silence >= s.eot_timeout_s:
            await self.end_turn("timeout", confidence)

    async def end_turn(self, trigger: str, confidence: float = 1.0) -> None:
        if not self.in_turn:
            return
        s, text = self.session, self.transcript
        self.in_turn = False
        await s.send_turn_info("EndOfTurn", text, start=self.start, end=self.last_voice,
                               confidence=confidence, trigger=trigger)
        s.fake.heard.append(text)
        await s.fake._notify()


def _parts(line: str) -> list[str]:
    """A script line's parts, one per voiced burst: "I'd like to book | on Thursday"."""
    return [part.strip() for part in line.split("|") if part.strip()]
