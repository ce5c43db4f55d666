"""Zylin: the AI receptionist on your Twilio number.

    python main.py            serve (mock providers when no keys are set)
    python main.py demo       place a simulated phone call against an in-process server
    python main.py calls      recent calls from the call log; `calls CAxxx` for one transcript
    python main.py check-profile FILE   validate a business profile without starting the server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from api.auth import access_banner
from api.console.errors import CONSOLE_EXCEPTION_HANDLERS
from api.console.routes import CONSOLE_ROUTES
from api.health import health, ready
from api.media_stream import media_stream
from api.twilio_legacy import dial_result as legacy_dial_result
from api.twilio_legacy import recording, voice_legacy
from api.twilio_status import status
from api.twilio_voice import dial_result, voice
from services.legacy.conversation import LegacyReceptionist
from services.orchestrator.database_recorder import DatabaseRecorder
from services.orchestrator.phrases import PhraseCache
from services.orchestrator.record import CallRecorder
from services.providers import build_fallback_synthesizer, build_synthesizer
from services.receptionist.profile import BusinessProfile, ProfileError, load_profile
from services.runtime import Runtime
from services.settings import ConfigError, Settings
from services.storage import Storage, StorageError
from services.storage.service import journal_folder
from services.telephony.rest import OfflineTelephony, Telephony, TwilioTelephony
from services.telephony.webhook import SignatureCheck

log = logging.getLogger("zylin")


def build_runtime(settings: Settings, recorder: CallRecorder | None = None,
                  telephony: Telephony | None = None) -> Runtime:
    """Everything a call needs, checked up front: a bad setting stops here, not mid-call."""
    settings.check()
    profile = load_profile(settings.business_profile)
    tts, tts_fallback = build_synthesizer(settings), build_fallback_synthesizer(settings)
    storage = Storage.from_settings(settings)
    if telephony is None:
        if settings.twilio_account_sid and settings.twilio_auth_token:
            telephony = TwilioTelephony(settings.twilio_account_sid, settings.twilio_auth_token,
                                        settings.twilio_api_base_url, settings.twilio_sms_from,
                                        timeout_s=settings.twilio_rest_timeout_s,
                                        ring_s=settings.transfer_ring_s)
        else:
            telephony = OfflineTelephony()
    return Runtime(
        settings=settings, profile=profile, tts=tts, tts_fallback=tts_fallback,
        phrases=PhraseCache(settings.soxr_quality, phrase_folder(settings)), telephony=telephony,
        recorder=recorder or DatabaseRecorder(storage, settings.latency_target_ms),
        signatures=SignatureCheck(settings.twilio_auth_token, settings.signatures_enforced),
        storage=storage,
    )


def phrase_folder(settings: Settings) -> Path | None:
    """PHRASE_CACHE_DIR, else phrases/ beside the SQLite file (or data/phrases); None keeps the
    phrases in memory only (an in-memory database)."""
    if settings.phrase_cache_dir:
        return Path(settings.phrase_cache_dir)
    journal = journal_folder(settings.database_url)
    return None if journal is None else journal.parent / "phrases"


def create_app(settings: Settings | None = None, *, recorder: CallRecorder | None = None,
               telephony: Telephony | None = None) -> Starlette:
    settings = settings or Settings()
    runtime = build_runtime(settings, recorder, telephony)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.storage.start()  # migrate, sweep calls a dead server left open
        await runtime.warm_up()
        # Everything built so far lives as long as the server: keep it out of the collector, so
        # a full collection pauses every call for ~13 ms instead of ~124 ms (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        runtime.warm_phrases()
        yield
        await runtime.close_speech()
        await runtime.telephony.close()
        await runtime.storage.close()

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/api/twilio/voice", voice, methods=["POST"]),
            Route("/api/twilio/status", status, methods=["POST"]),
            Route("/api/twilio/dial-result", dial_result, methods=["POST"]),
            Route("/api/twilio/voice-legacy", voice_legacy, methods=["POST"]),
            Route("/api/twilio/voice-legacy/recording", recording, methods=["POST"]),
            Route("/api/twilio/voice-legacy/dial-result", legacy_dial_result, methods=["POST"]),
            WebSocketRoute("/media-stream", media_stream),
            *CONSOLE_ROUTES,
        ],
        exception_handlers=CONSOLE_EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.legacy = LegacyReceptionist(settings, runtime.profile, runtime.storage, runtime.telephony)
    return app


MOCK_HINTS: dict[Literal["asr", "llm", "tts"], str] = {
    "asr": "set DEEPGRAM_API_KEY to understand callers",
    "llm": "set OPENAI_API_KEY for the OpenAI brain",
    "tts": "set DEEPGRAM_API_KEY or OPENAI_API_KEY for a real voice"}


def startup_banner(settings: Settings, profile: BusinessProfile, port: int | None = None) -> list[str]:
    """What the owner needs to know once the server really listens: where, with what, and what is off."""
    port = port or settings.port
    if settings.all_mock:
        mode = "MOCK mode (no provider keys: offline mock ASR, brain and TTS)"
    else:
        mode = "providers: " + ", ".join(f"{k}={settings.provider(k)}" for k in ("asr", "llm", "tts"))
    lines = [f"Zylin listening on {settings.host}:{port} in {mode}.",
             f"Business profile: {profile.name} ({settings.business_profile}).",
             f"Twilio webhook (Voice, 'A call comes in', HTTP POST): {settings.voice_webhook_url}",
             f"Twilio status callback ('Call status changes'): {settings.public_url}/api/twilio/status",
             access_banner(settings.admin_token)]
    if not settings.all_mock:
        lines += [f"{kind.upper()} runs on the offline mock: {hint}." for kind, hint in MOCK_HINTS.items()
                  if settings.provider(kind) == "mock"]
    if not profile.owner_phone:
        lines.append("owner_phone is empty in the business profile: transfers to a person are off "
                     "(callers are offered a message instead).")
    if not profile.owner_sms:
        lines.append("owner_sms is empty in the business profile: messages are stored but not texted to you.")
    if "localhost" in settings.public_url or "127.0.0.1" in settings.public_url:
        lines.append(f"PUBLIC_URL is local: run `ngrok http {port}` and set PUBLIC_URL to the "
                     "https URL it prints, then paste the webhook above into the Twilio console.")
    return lines


# Libraries that log every request or migration step at INFO; their news is kept for warnings.
QUIET_LOGGERS = ("alembic", "twilio", "httpx", "openai", "websockets")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level.upper() != "DEBUG":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def serve(settings: Settings) -> int:
    import uvicorn

    from services.server import server_config

    try:
        app = create_app(settings)
    except (ConfigError, ProfileError, StorageError) as exc:
        log.error("%s", exc)
        return 2
    for warning in settings.check():
        log.warning("%s", warning)
    banner = startup_banner(settings, app.state.runtime.profile)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:  # the socket is bound: now "listening" is true
                for line in banner:
                    log.info("%s", line)

    Server(server_config(app, settings)).run()  # the limits of docs/security.md
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="main.py", description="Zylin AI receptionist")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (default)")
    demo = sub.add_parser("demo", help="place a simulated call against an in-process server")
    demo.add_argument("--wav", default="demo-call.wav", help="where to write what the caller heard")
    demo.add_argument("--speed", type=float, default=1.0, help="faster than real time, e.g. 4")
    demo.add_argument("--line", action="append", help="a caller line (repeat); default: a scripted call")
    calls = sub.add_parser("calls", help="the call log in the terminal: recent calls, or one transcript")
    calls.add_argument("call_sid", nargs="?", help="show this call's transcript and latency")
    calls.add_argument("--limit", type=int, default=20, help="how many recent calls (default 20)")
    calls.add_argument("--full-numbers", action="store_true", help="show phone numbers unmasked")
    check = sub.add_parser("check-profile", help="validate a business profile without starting the server")
    check.add_argument("file", help="the profile, e.g. business.toml")
    args = parser.parse_args(argv)

    if args.command == "check-profile":  # the file alone is checked: no settings needed
        try:
            print(f"ok: {load_profile(args.file).summary()}")
        except ProfileError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0

    try:
        settings = Settings()
    except Exception as exc:  # pydantic names the bad setting
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        # The demo prints the conversation itself; logs would drown it unless asked for.
        configure_logging(settings.log_level if settings.log_level.upper() == "DEBUG" else "WARNING")
        from services.simulator.demo import run_demo
        return asyncio.run(run_demo(settings, create_app, lines=args.line, wav_path=args.wav, speed=args.speed))
    if args.command == "calls":
        configure_logging("WARNING")
        from services.cli import show_calls
        return asyncio.run(show_calls(settings, args.call_sid, limit=args.limit, full_numbers=args.full_numbers))
    configure_logging(settings.log_level)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
