"""What the server holds for its lifetime, and how one call's session is put together."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from services.orchestrator.phrases import PhraseCache, render
from services.orchestrator.record import CallInfo, CallRecorder
from services.orchestrator.session import CallSession
from services.orchestrator.speaker import SpeechFallback, describe, voice_name
from services.providers import build_brain, build_recognizer
from services.receptionist.lines import APOLOGY_LINE, PHRASES
from services.receptionist.profile import BusinessProfile
from services.receptionist.tool_types import CallContext
from services.receptionist.tools import Toolbox
from services.settings import Settings
from services.storage import Storage
from services.storage.admission import within
from services.telephony.media_streams import Start, StreamSender
from services.telephony.rest import Telephony
from services.telephony.webhook import SignatureCheck, StreamClaim, check_stream_token
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.runtime")
ADMISSION_TIMEOUT_S = 0.5   # the greeting waits on this check: a slow database does not hold it longer


@dataclass
class Runtime:
    settings: Settings
    profile: BusinessProfile
    tts: SpeechSynthesizer
    phrases: PhraseCache
    telephony: Telephony
    recorder: CallRecorder
    signatures: SignatureCheck
    storage: Storage
    greeting_ready: bool = False
    tts_fallback: SpeechSynthesizer | None = None   # says a sentence `tts` failed (providers.py)
    speech: SpeechFallback = field(init=False)       # the fallback voice, the apology, the phrases: every call
    _apology_task: asyncio.Future | None = field(default=None, init=False, repr=False)
    _phrases_task: asyncio.Future | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.speech = SpeechFallback(self.tts_fallback, quality=self.settings.soxr_quality,
                                     max_gap_s=self.settings.tts_max_gap_ms / 1000, phrases=self.phrases)

    async def warm_up(self) -> None:
        """Render the greeting and the apology before the first call rings: the greeting so it can
        start within a few ms, the apology because it is needed exactly when no voice can speak
        (the other fixed lines follow: `warm_phrases`). The neural VAD's model is loaded now too
        (~50 ms), not on the first call's first frame."""
        if self.settings.vad == "neural":
            from services.audio.silero_vad import shared_model

            shared_model()
        try:
            await self.phrases.get(self.tts, self.profile.greeting)
            self.greeting_ready = True
        except Exception as exc:
            log.warning("could not pre-render the greeting (%s); calls will synthesize it live", describe(exc))
        await self._render_apology()

    def warm_phrases(self) -> None:
        """The other fixed lines, rendered in the background while calls are taken (started after
        start-up's gc.freeze(), so nothing of a rendering in progress is frozen for good)."""
        self._phrases_task = asyncio.ensure_future(self.phrases.warm(self.tts, list(PHRASES)))

    async def _render_apology(self) -> None:
        """The apology in the main voice, else in the fallback's."""
        for tts in (self.tts, self.tts_fallback):
            if tts is None:
                continue
            try:
                self.speech.apology = await render(tts, APOLOGY_LINE, self.settings.soxr_quality)
                return
            except Exception as exc:
                log.warning("could not render the apology with %s (%s)", voice_name(tts), describe(exc))
        log.warning("no voice could render the apology: until one can (tried again as calls start), "
                    "a sentence no voice can say is silence, recorded as a provider_error")

    def _retry_apology(self) -> None:
        """Start-up could not render the apology: try again in the background, for later calls."""
        if self.speech.apology is None and (self._apology_task is None or self._apology_task.done()):
            self._apology_task = asyncio.ensure_future(self._render_apology())

    async def close_speech(self) -> None:
        """Shutdown: the voices' HTTP clients, and an apology still being rendered."""
        for task in (self._apology_task, self._phrases_task):
            if task is not None:
                task.cancel()
        await self.tts.close()
        if self.tts_fallback is not None:
            await self.tts_fallback.close()

    async def admit_stream(self, start: Start) -> StreamClaim | str:
        """The claim of a `start` event if its token proves it and no stream of the call at or
        after its segment was admitted before; else why not. With the database away the token
        alone decides: a caller is never refused because the call log is down."""
        claim = check_stream_token(start.call_sid, start.custom_parameters, self.settings.token_secret)
        if isinstance(claim, str):
            return claim
        try:
            admitted = await within(self.storage.admission.claim_stream(claim.call_sid, claim.segment),
                                    ADMISSION_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not check that %s has no other stream (%s); admitting it on its token",
                        start.call_sid, type(exc).__name__)
            return claim
        return claim if admitted else "this stream of the call was already admitted"

    async def open_session(self, start: Start, sender: StreamSender) -> CallSession:
        params = start.custom_parameters
        info = CallInfo(call_sid=start.call_sid, stream_sid=start.stream_sid,
                        caller=params.get("from", ""), called=params.get("to", ""),
                        started_at=time.monotonic())
        self.recorder.stream_started(info)
        self._retry_apology()
        try:  # ready since start-up, unless it failed then: one call renders it, the others wait
            await self.phrases.get(self.tts, self.profile.greeting)
        except Exception as exc:
            log.warning("greeting synthesis failed (%s); trying live", describe(exc))
        context = CallContext(call_sid=start.call_sid, caller_phone=info.caller, profile=self.profile,
                              can_transfer=self.telephony.can_transfer, storage=self.storage,
                              telephony=self.telephony,
                              sms_confirmations=self.settings.sms_confirmations)
        return CallSession(
            info=info, settings=self.settings,
            recognizer=build_recognizer(self.settings, self.profile, params),
            brain=build_brain(self.settings, self.profile), tts=self.tts, speech_fallback=self.speech,
            toolbox=Toolbox(context), telephony=self.telephony, sender=sender,
            recorder=self.recorder, greeting_text=self.profile.greeting,
            transfer_failed=params.get("transfer", ""),
            segment=int(params["segment"]) if params.get("segment", "").isdigit() else 0,
        )
