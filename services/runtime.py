"""What the server holds for its lifetime, and how one call's session is put together."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from services.orchestrator.greeting import GreetingCache
from services.orchestrator.record import CallInfo, CallRecorder
from services.orchestrator.session import CallSession
from services.providers import build_brain, build_recognizer
from services.receptionist.profile import BusinessProfile
from services.receptionist.tools import CallContext, Toolbox
from services.settings import Settings
from services.storage import Storage
from services.telephony.media_streams import Start, StreamSender
from services.telephony.rest import Telephony
from services.telephony.webhook import SignatureCheck
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.runtime")


@dataclass
class Runtime:
    settings: Settings
    profile: BusinessProfile
    tts: SpeechSynthesizer
    greetings: GreetingCache
    telephony: Telephony
    recorder: CallRecorder
    signatures: SignatureCheck
    storage: Storage
    greeting_ready: bool = False

    async def warm_up(self) -> None:
        """Render the greeting before the first call rings, so it can start within a few ms."""
        try:
            await self.greetings.get(self.profile.greeting)
            self.greeting_ready = True
        except Exception as exc:
            log.warning("could not pre-render the greeting (%s); calls will synthesize it live", exc)

    async def open_session(self, start: Start, sender: StreamSender) -> CallSession:
        params = start.custom_parameters
        info = CallInfo(call_sid=start.call_sid, stream_sid=start.stream_sid,
                        caller=params.get("from", ""), called=params.get("to", ""),
                        started_at=time.monotonic())
        self.recorder.stream_started(info)
        try:
            greeting = await self.greetings.get(self.profile.greeting)
        except Exception as exc:
            log.warning("greeting synthesis failed (%s); trying live", exc)
            greeting = None
        context = CallContext(call_sid=start.call_sid, caller_phone=info.caller, profile=self.profile,
                              can_transfer=self.telephony.can_transfer, storage=self.storage,
                              telephony=self.telephony,
                              sms_confirmations=self.settings.sms_confirmations)
        return CallSession(
            info=info, settings=self.settings,
            recognizer=build_recognizer(self.settings, self.profile, params),
            brain=build_brain(self.settings, self.profile), tts=self.tts,
            toolbox=Toolbox(context), telephony=self.telephony, sender=sender,
            recorder=self.recorder, greeting_text=self.profile.greeting, greeting_audio=greeting,
        )
