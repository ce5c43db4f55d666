"""One legacy (record mode) call, turn by turn. Each Twilio callback loads the call's state from
the database, runs one caller turn (recording -> transcript -> brain and tools) and answers TwiML:
<Say> then <Record> again, <Dial> for a transfer, <Hangup> at the end. Nothing about a call lives
in process memory between callbacks: the next one may reach another instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from services.legacy.transcriber import Transcriber, TranscriberError, build_transcriber
from services.llm.base import BrainError, Message, ToolCall
from services.orchestrator.database_recorder import plain
from services.orchestrator.generation import run_turn
from services.privacy import describe_error, mask_phone, scrub
from services.providers import build_brain
from services.receptionist.lines import (
    DTMF_PERSON,
    FALLBACK_LINE,
    MESSAGE_OFFER,
    NOT_HEARD_GOODBYE,
    REPROMPT,
    TOO_SLOW,
    not_put_through,
)
from services.receptionist.persona import system_prompt
from services.receptionist.profile import BusinessProfile
from services.receptionist.tool_types import CallAction, CallContext, ToolResult
from services.receptionist.tools import Toolbox, ToolBudget
from services.settings import Settings
from services.storage import Storage, TurnRow
from services.storage.models import utcnow
from services.storage.vocabulary import CallMode, EndReason, EventKind, Speaker, twilio_ended
from services.telephony.recordings import RecordingError, fetch_recording
from services.telephony.rest import Telephony
from services.telephony.webhook import DIAL_FAILED

log = logging.getLogger("zylin.legacy")

RECORDING_PATH = "/api/twilio/voice-legacy/recording"
DIAL_RESULT_PATH = "/api/twilio/voice-legacy/dial-result"
MAX_REPROMPTS = 2                           # in a row; then the message offer, then goodbye


# --- the state kept in the database between callbacks ------------------------------------------------

def message_json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


def message_from_json(data: Mapping[str, Any]) -> Message:
    return Message(role=data["role"], content=data.get("content", ""),
                   tool_calls=[ToolCall(c["id"], c["name"], dict(c.get("arguments") or {}))
                               for c in data.get("tool_calls", [])],
                   tool_call_id=data.get("tool_call_id", ""), name=data.get("name", ""))


@dataclass
class LegacyState:
    """A call's conversation between callbacks (the `legacy_state` column of its call row)."""
    history: list[Message] = field(default_factory=list)
    next_turn: int = 0          # index of the next turn row
    recordings: int = 0         # recordings transcribed so far (the mock reads line N for the Nth)
    misses: int = 0             # empty or unintelligible recordings in a row

    def as_json(self) -> dict[str, Any]:
        return {"history": [message_json(m) for m in self.history], "next_turn": self.next_turn,
                "recordings": self.recordings, "misses": self.misses}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> LegacyState:
        if not data:
            return cls()
        return cls(history=[message_from_json(m) for m in data.get("history", [])],
                   next_turn=int(data.get("next_turn", 0)), recordings=int(data.get("recordings", 0)),
                   misses=int(data.get("misses", 0)))


@dataclass
class Progress:
    """What one callback's turn got done; read even when the response budget cut it short."""
    received: float                          # monotonic: the callback arrived
    stage: str = "recording"                 # recording | transcriber | llm
    transcript: str | None = None
    transcribed: bool = False                # the recording counter moves on
    asr_s: float | None = None
    llm_request_at: float | None = None
    llm_first_at: float | None = None
    tool_s: float = 0.0
    messages: list[Message] = field(default_factory=list)
    action: CallAction | None = None
    events: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)

    def event(self, kind: EventKind, **detail: Any) -> None:
        self.events.append((kind, plain(detail), utcnow()))

    def add_tool_run(self, started: float, ended: float) -> None:
        self.tool_s += ended - started


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


class LegacyReceptionist:
    """The record-mode webhooks' engine: one instance per server, no per-call memory."""

    def __init__(self, settings: Settings, profile: BusinessProfile, storage: Storage, telephony: Telephony,
                 transcriber: Transcriber | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.storage = storage
        self.telephony = telephony
        self.transcriber = transcriber or build_transcriber(settings)

    @property
    def action_url(self) -> str:
        """Absolute: Twilio resolves a relative action against the URL it fetched, not PUBLIC_URL."""
        return self.settings.public_url + RECORDING_PATH

    # --- TwiML -----------------------------------------------------------------------------------

    def _say(self, response: VoiceResponse, text: str) -> None:
        response.say(text, voice=self.settings.legacy_say_voice)

    def say_and_record(self, text: str) -> str:
        response = VoiceResponse()
        self._say(response, text)
        response.record(action=self.action_url, method="POST", timeout=self.settings.legacy_record_timeout_s,
                        max_length=self.settings.legacy_max_record_s, play_beep=False, trim="trim-silence",
                        finish_on_key="0#")
        # Twilio skips the action when nothing at all was recorded and runs the next verb instead.
        response.redirect(self.action_url, method="POST")
        return str(response)

    def say_and_dial(self, text: str, number: str) -> str:
        """Nothing after </Dial>: Twilio posts the outcome to the action, which answers the rest."""
        response = VoiceResponse()
        self._say(response, text)
        response.dial(number, action=self.settings.public_url + DIAL_RESULT_PATH, method="POST",
                      timeout=self.settings.transfer_ring_s)
        return str(response)

    def say_and_hang_up(self, text: str) -> str:
        response = VoiceResponse()
        self._say(response, text)
        response.hangup()
        return str(response)

    # --- the call's first webhook ----------------------------------------------------------------------

    async def answer_call(self, call_sid: str, caller: str, called: str) -> str:
        log.info("incoming legacy call %s from %s", call_sid, mask_phone(caller))
        await self.storage.call_opened(call_sid, caller, called, mode=CallMode.LEGACY)
        greeting = self.profile.greeting
        state = LegacyState(history=[Message("assistant", greeting)], next_turn=1)
        turn = TurnRow(idx=0, speaker=Speaker.ZYLIN, text=greeting, at=utcnow(), heard_text=greeting)
        await self._store(call_sid, state, [turn], [], caller=caller, called=called)
        return self.say_and_record(greeting)

    # --- each recording ----------------------------------------------------------------------------

    async def on_recording(self, form: Mapping[str, str]) -> str:
        """One caller turn, answered within LEGACY_RESPONSE_BUDGET_S whatever the providers do.
        Twilio retries webhooks: a recording is acted on once (a retry gets the first answer),
        and a call's turns run one at a time, whichever instances the callbacks reach."""
        received = time.monotonic()
        call_sid = form.get("CallSid", "")
        budget = self.settings.legacy_response_budget_s
        admission = self.storage.admission

        async def turn() -> str:
            async with admission.one_turn_at_a_time(call_sid, hold_s=budget + 5.0, wait_s=budget / 2):
                return await self._recording_turn(form, received)

        sid = form.get("RecordingSid", "")
        if not sid:  # our own <Redirect> after silence, or a key press: nothing to do twice
            return await turn()
        return await admission.answer_once(f"recording:{sid}", call_sid, turn, wait_s=budget + 2.0)

    async def _recording_turn(self, form: Mapping[str, str], received: float) -> str:
        progress = Progress(received=received)
        at = utcnow()
        call_sid, caller, called = form.get("CallSid", ""), form.get("From", ""), form.get("To", "")
        budget = self.settings.legacy_response_budget_s
        if form.get("Digits") == "hangup":  # the caller hung up while recording: nothing to answer
            await self._store(call_sid, await self._state(call_sid), [], [],
                              end_reason=twilio_ended("caller hung up"), caller=caller, called=called)
            return str(VoiceResponse())
        try:
            state = await asyncio.wait_for(self._state(call_sid), budget / 4)
        except Exception as exc:
            log.error("legacy call %s: could not load its state (%s); starting afresh", call_sid,
                      describe_error(exc))
            state = LegacyState()
        context = CallContext(call_sid=call_sid, caller_phone=caller, profile=self.profile,
                              can_transfer=True,  # <Dial> in our own answer: no REST call needed
                              storage=self.storage, telephony=self.telephony,
                              sms_confirmations=self.settings.sms_confirmations)
        work = asyncio.ensure_future(self._turn(state, form, progress, Toolbox(context)))
        left = budget - min(1.0, budget * 0.2) - (time.monotonic() - progress.received)
        try:
            await asyncio.wait_for(work, max(left, 0.1))
        except TimeoutError:
            log.warning("legacy call %s: no answer from the %s within the %.1f s budget", call_sid,
                        progress.stage, budget)
            progress.event(EventKind.PROVIDER_ERROR, provider=progress.stage, error=f"no answer within {budget:g} s")
            return await self._answer(call_sid, state, progress, TOO_SLOW, at=at, remember=False,
                                      caller=caller, called=called)
        except (RecordingError, TranscriberError) as exc:
            log.warning("legacy call %s: %s", call_sid, scrub(str(exc)))
            progress.event(EventKind.PROVIDER_ERROR, provider=progress.stage, error=str(exc))
            return await self._missed(call_sid, state, progress, at, caller, called)
        except BrainError as exc:
            log.warning("legacy call %s: brain failed: %s", call_sid, scrub(str(exc)))
            progress.event(EventKind.PROVIDER_ERROR, provider="llm", error=str(exc))
            progress.messages = [Message("assistant", FALLBACK_LINE)]
            return await self._answer(call_sid, state, progress, FALLBACK_LINE, at=at,
                                      caller=caller, called=called)
        except Exception as exc:  # its message may quote the caller's words: DEBUG only
            log.error("legacy call %s: turn failed: %s", call_sid, describe_error(exc))
            log.debug("legacy call %s: turn failed", call_sid, exc_info=True)
            progress.event(EventKind.PROVIDER_ERROR, provider=progress.stage, error="unexpected")
            progress.messages = [Message("assistant", FALLBACK_LINE)]
            return await self._answer(call_sid, state, progress, FALLBACK_LINE, at=at,
                                      caller=caller, called=called)
        if progress.transcript is None:
            return await self._missed(call_sid, state, progress, at, caller, called)
        spoken = " ".join(m.content.strip() for m in progress.messages if m.role == "assistant" and m.content.strip())
        return await self._answer(call_sid, state, progress, spoken or REPROMPT, at=at,
                                  caller=caller, called=called)

    async def _turn(self, state: LegacyState, form: Mapping[str, str], progress: Progress,
                    toolbox: Toolbox) -> None:
        """Recording -> transcript -> brain rounds until it stops calling tools."""
        if form.get("Digits") == "0":
            progress.event(EventKind.DTMF, digit="0")
            said = DTMF_PERSON
        else:
            said = await self._hear(state, form, progress)
            if not said:
                return  # nothing heard: the caller gets a re-prompt
        progress.transcript = said
        progress.stage = "llm"
        history = state.history + [Message("user", said)]

        def ran(call: ToolCall, result: ToolResult) -> None:
            progress.event(EventKind.TOOL, name=call.name, arguments=call.arguments, result=result.data)
            if result.action is not None:
                progress.action = result.action

        brain = build_brain(self.settings, self.profile)
        try:  # no "one moment" here: nothing is heard before the whole answer is
            await run_turn(brain, system_prompt(self.profile), history, toolbox, messages=progress.messages,
                           timings=progress, budget=ToolBudget(), max_rounds=self.settings.max_tool_rounds,
                           on_tool=ran)
        finally:
            await brain.close()

    async def _hear(self, state: LegacyState, form: Mapping[str, str], progress: Progress) -> str:
        url = form.get("RecordingUrl", "")
        duration = form.get("RecordingDuration", "0")
        if not url or not duration.isdigit() or int(duration) == 0:
            return ""
        wav = await self.fetch_recording(url)
        progress.stage = "transcriber"
        started = time.monotonic()
        text = await self.transcriber.transcribe(wav, index=state.recordings)
        progress.asr_s = time.monotonic() - started
        progress.transcribed = True
        return text.strip()

    async def fetch_recording(self, recording_url: str) -> bytes:
        """The recording as WAV, fetched with the account's credentials from Twilio only."""
        return await fetch_recording(recording_url, self.settings.twilio_account_sid,
                                     self.settings.twilio_auth_token, self.settings.twilio_api_base_url)

    async def on_dial_result(self, form: Mapping[str, str]) -> str:
        """The transfer ended: answered means the call is done; otherwise Zylin takes the caller
        back, says why, and offers to take a message. Once per call, whatever Twilio retries."""
        call_sid = form.get("CallSid", "")
        return await self.storage.admission.answer_once(
            f"dial:{call_sid}", call_sid, lambda: self._dial_result(form),
            wait_s=self.settings.legacy_response_budget_s)

    async def _dial_result(self, form: Mapping[str, str]) -> str:
        call_sid = form.get("CallSid", "")
        status = form.get("DialCallStatus", "")
        duration = form.get("DialCallDuration", "")
        progress = Progress(received=time.monotonic())
        if status not in DIAL_FAILED:
            progress.event(EventKind.TRANSFER_ANSWERED, status=status or "completed",
                           duration_s=int(duration) if duration.isdigit() else None)
            await self._store(call_sid, await self._state(call_sid), [], progress.events,
                              end_reason=EndReason.TRANSFERRED, received=progress.received)
            return str(VoiceResponse())  # the person hung up: nothing left to run, the call ends
        progress.event(EventKind.TRANSFER_FAILED, status=status, why=DIAL_FAILED[status])
        state = await self._state(call_sid)
        line = not_put_through(DIAL_FAILED[status])
        progress.messages = [Message("assistant", line)]
        return await self._answer(call_sid, state, progress, line, at=utcnow(),
                                  caller=form.get("From", ""), called=form.get("To", ""))

    # --- answers -------------------------------------------------------------------------------------

    async def _missed(self, call_sid: str, state: LegacyState, progress: Progress, at: datetime,
                      caller: str, called: str) -> str:
        """Nothing usable heard: re-prompt twice in a row, then offer a message, then say goodbye."""
        state.misses += 1
        progress.event(EventKind.NOT_HEARD, misses=state.misses)
        if state.misses <= MAX_REPROMPTS:
            return await self._answer(call_sid, state, progress, REPROMPT, at=at, remember=False,
                                      keep_misses=True, caller=caller, called=called)
        if state.misses == MAX_REPROMPTS + 1:
            progress.messages = [Message("assistant", MESSAGE_OFFER)]
            return await self._answer(call_sid, state, progress, MESSAGE_OFFER, at=at, keep_misses=True,
                                      caller=caller, called=called)
        progress.action = CallAction("end_call", reason="caller not heard")
        return await self._answer(call_sid, state, progress, NOT_HEARD_GOODBYE, at=at, remember=False,
                                  keep_misses=True, caller=caller, called=called)

    async def _answer(self, call_sid: str, state: LegacyState, progress: Progress, text: str, *,
                      at: datetime, remember: bool = True, keep_misses: bool = False,
                      caller: str = "", called: str = "") -> str:
        """Store the turn and the state for the next callback, then the TwiML that speaks `text`."""
        answered = time.monotonic()
        if progress.transcribed:
            state.recordings += 1
        if not keep_misses:
            state.misses = 0
        turns: list[TurnRow] = []
        if progress.transcript:
            total_s = answered - progress.received
            llm_s = (progress.llm_first_at - progress.llm_request_at
                     if progress.llm_first_at is not None and progress.llm_request_at is not None else None)
            overhead_s = total_s - (progress.asr_s or 0.0) - (llm_s or 0.0) - progress.tool_s
            turns.append(TurnRow(
                idx=state.next_turn, speaker=Speaker.CALLER, text=progress.transcript, at=at, speech_end_at=at,
                asr_ms=_ms(progress.asr_s), llm_ttft_ms=_ms(llm_s), tool_ms=_ms(progress.tool_s),
                first_audio_ms=_ms(total_s), overhead_ms=_ms(overhead_s)))
            if remember:
                state.history.append(Message("user", progress.transcript))
        if remember:
            state.history.extend(progress.messages)
        turns.append(TurnRow(idx=state.next_turn + len(turns), speaker=Speaker.ZYLIN, text=text, heard_text=text,
                             at=at + timedelta(milliseconds=(answered - progress.received) * 1000)))
        state.next_turn += len(turns)
        action, end_reason = progress.action, None
        if action is not None and action.kind == "transfer":
            progress.event(EventKind.TRANSFER, target=action.target, reason=action.reason)
            twiml = self.say_and_dial(text, action.target)  # the dial's outcome ends the call, or not
        elif action is not None:
            progress.event(EventKind.HANG_UP, reason=action.reason)
            end_reason, twiml = EndReason.ZYLIN_ENDED, self.say_and_hang_up(text)
        else:
            twiml = self.say_and_record(text)
        await self._store(call_sid, state, turns, progress.events, end_reason=end_reason,
                          caller=caller, called=called, received=progress.received)
        return twiml

    # --- the database ---------------------------------------------------------------------------------

    async def _state(self, call_sid: str) -> LegacyState:
        return LegacyState.from_json(await self.storage.calls.legacy_state(call_sid))

    async def _store(self, call_sid: str, state: LegacyState, turns: list[TurnRow],
                     events: list[tuple[str, dict[str, Any], datetime]], *, end_reason: str | None = None,
                     caller: str = "", called: str = "", received: float | None = None) -> None:
        """Written before Twilio hears the answer: the next callback may reach another instance. A
        failed write is retried in the background (the call goes on, its record catches up)."""
        def write():
            return self.storage.calls.legacy_turn(call_sid, state=state.as_json(), turns=turns, events=events,
                                                  end_reason=end_reason, caller=caller, called=called)
        left = self.settings.legacy_response_budget_s - (time.monotonic() - (received or time.monotonic()))
        try:
            await asyncio.wait_for(write(), max(left, 0.5))
        except Exception as exc:
            log.warning("legacy call %s: could not store the turn at once (%s); queued for retry", call_sid,
                        scrub(f"{type(exc).__name__}: {exc}"))
            self.storage.writer.submit(f"legacy turn of {call_sid}", write)
