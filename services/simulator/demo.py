"""`python main.py demo`: a whole phone call, offline, through the real webhook and WebSocket."""

from __future__ import annotations

import secrets
import time as clock
from collections.abc import Callable
from datetime import time, timedelta

from starlette.applications import Starlette

from services.orchestrator.latency import LATENCY_FIELDS
from services.orchestrator.record import CallInfo, MemoryRecorder, TurnRecord
from services.receptionist.profile import BusinessProfile
from services.settings import Settings
from services.simulator.caller import CallerLine, SimulatedCaller
from services.simulator.server import serve_app
from services.storage.vocabulary import Speaker

# main.create_app: passed in, since main (the top) imports this module, never the other way round.
AppFactory = Callable[..., Starlette]


def default_lines(profile: BusinessProfile) -> list[str]:
    """A caller who asks, books on an open day a few days ahead, leaves a message, says bye."""
    day = profile.now().date() + timedelta(days=3)
    while (span := profile.open_span(day)) is None or span.opens > time(10):
        day += timedelta(days=1)
    return [
        "Hi, what are your opening hours?",
        "How much is a cleaning?",
        f"I'd like to book a cleaning on {day:%B} {day.day} at 10 am.",
        "My name is Ann Lee.",
        "Yes, please.",
        "Can I also speak to a person?",
        "Please ask them to call me back about my crown.",
        "That's all, thank you. Bye!",
    ]


class PrintingRecorder(MemoryRecorder):
    """Prints the conversation as each exchange completes."""

    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started

    def turn(self, call: CallInfo, turn: TurnRecord) -> None:
        super().turn(call, turn)
        clock = f"{turn.at - self.started:6.1f}s"
        if turn.speaker == Speaker.CALLER:
            print(f"{clock}  Caller: {turn.text}", flush=True)
        else:
            cut = f"   [interrupted; heard: {turn.heard_text!r}]" if turn.interrupted else ""
            print(f"{clock}  Zylin:  {turn.text}{cut}", flush=True)


def latency_table(turns: list[TurnRecord]) -> str:
    head = f"{'turn':>4}  {'caller said':<34}" + "".join(f"{f.short:>12}" for f in LATENCY_FIELDS)
    rows = [head, "-" * len(head)]
    for turn in turns:
        if turn.speaker != Speaker.CALLER or turn.latency is None:
            continue
        values = turn.latency.as_dict()
        cells = "".join(f"{'-' if values[f.name] is None else f'{values[f.name]:.0f}':>12}" for f in LATENCY_FIELDS)
        rows.append(f"{turn.index:>4}  {turn.text[:34]:<34}{cells}")
    return "\n".join(rows)


async def run_demo(settings: Settings, create_app: AppFactory, lines: list[str] | None = None,
                   wav_path: str = "demo-call.wav", speed: float = 1.0) -> int:
    """One call through `create_app(settings, recorder=...)`'s app, served in-process."""
    auth_token = secrets.token_hex(16)  # sign like Twilio does, so validation runs as in production
    settings = settings.model_copy(update={"use_mock_streaming": True, "twilio_auth_token": auth_token,
                                           "twilio_account_sid": "", "twilio_validate_signatures": True,
                                           "database_url": "sqlite+aiosqlite:///:memory:",  # leave no trace
                                           "vad": "energy"})  # the simulated voice is a buzz, not speech
    recorder = PrintingRecorder(clock.monotonic())
    app = create_app(settings, recorder=recorder)
    script = [CallerLine(text) for text in (lines or default_lines(app.state.runtime.profile))]
    print(f"Placing a simulated call to {settings.public_url}/api/twilio/voice "
          f"(mock providers, {speed:g}x real time)\n", flush=True)
    async with serve_app(app) as base_url:
        caller = SimulatedCaller(base_url, settings.public_url, auth_token, speed=speed)
        result = await caller.call(script)
    if result.webhook_status != 200 or not result.connected:
        print(f"the call did not connect (webhook {result.webhook_status}, close {result.close_code})")
        return 1
    call = next(iter(recorder.calls.values()))
    print(f"\nCall ended: {call['ended']}. Greeting first frame {call['info'].greeting_ms} ms after start.")
    print("Per-turn latency (ms): asr = end of speech to final transcript; first_audio = end of speech "
          "to first audio frame sent; overhead = what Zylin itself adds.\n")
    print(latency_table(call["turns"]))
    if result.protocol_errors:
        print(f"\nprotocol errors seen by the caller: {result.protocol_errors}")
    path = result.heard_wav(wav_path)
    print(f"\nWhat the caller heard: {path} ({len(result.heard_ulaw) / 8000:.1f} s, 8 kHz)")
    return 0 if not result.protocol_errors else 1
