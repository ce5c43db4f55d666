"""One call's conversation: turn-taking, streaming brain -> TTS, barge-in, latency, the end.

Inbound flows one way: frames -> local VAD + recognizer -> caller turns -> a Reply (brain, tools,
speaker) -> frames out. Twilio's mark echoes tell what the caller has actually heard, which is
what history keeps when the caller interrupts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from enum import Enum

from services.asr.base import (RecognizerFailed, SpeechNotUnderstood, SpeechRecognizer, Transcript,
                               UtteranceEnd)
from services.audio.codec import FRAME_MS, OutboundEncoder, rms, ulaw_to_pcm
from services.audio.vad import EnergyVad, VadEvent
from services.llm.base import Brain, BrainError, Message, TextDelta, ToolCall
from services.orchestrator.chunker import SentenceChunker
from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import CallEvent, CallInfo, CallRecorder, TurnRecord
from services.orchestrator.speaker import SpeechFallback, Speaker, SpokenSentence, send_frames
from services.receptionist.tools import CallAction, ToolBudget, Toolbox
from services.settings import Settings
from services.telephony.media_streams import StreamSender
from services.telephony.rest import Telephony
from services.telephony.webhook import DIAL_FAILED, dial_result_url
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.session")

FALLBACK_LINE = ("I'm sorry, I'm having trouble on my end right now. I can take a message, "
                 "or put you through to someone. Which would you prefer?")
ASR_DOWN_LINE = ("I'm sorry, I'm having trouble hearing you right now. Please press zero to reach "
                 "a person, or call back in a few minutes.")
TAKE_A_MESSAGE = "I can take a message and make sure the team gets back to you. What would you like me to pass on?"
TRANSFER_FAILED_LINE = f"I'm sorry, I couldn't connect you. {TAKE_A_MESSAGE}"
IDLE_PROMPT = "Are you still there?"
IDLE_GOODBYE = "I haven't heard anything, so I'll end the call now. Feel free to call back. Goodbye!"
MAX_DURATION_GOODBYE = "I'm sorry, we've reached the time limit for this call. Please call back anytime. Goodbye!"
DTMF_PERSON = "[The caller pressed 0: they want to speak to a person.]"
ONE_MOMENT = "One moment, please."  # a tool is slow (TOOL_ONE_MOMENT_S): the caller hears why it is quiet


class State(Enum):
    STREAMING = "streaming"
    ENDING = "ending"      # the last words are playing; then hang up or transfer
    STOPPED = "stopped"


@dataclass(slots=True)
class Reply:
    """Zylin's answer to one caller turn (or the greeting, or a canned line)."""
    gen: int
    latency: TurnLatency
    speaker: Speaker
    record: TurnRecord
    messages: list[Message] = field(default_factory=list)
    action: CallAction | None = None
    task: asyncio.Task | None = None
    caller_turn: TurnRecord | None = None
    all_sent: bool = False
    interrupted: bool = False
    committed: bool = False   # its messages are in history
    finished: bool = False    # its turn is recorded
    stream_s_at_start: float = 0.0

    @property
    def sentences(self) -> list[SpokenSentence]:
        return self.speaker.sentences

    @property
    def playing(self) -> bool:
        """True while the caller may still be hearing (or about to hear) this reply."""
        if self.interrupted:
            return False
        return not self.all_sent or any(s.played_at is None for s in self.sentences)

    def heard(self, now: float) -> dict[int, str]:
        """What the caller heard, per assistant message (by id): whole sentences whose marks came
        back, plus the share of the playing sentence that its elapsed time covers."""
        heard: dict[int, list[str]] = {}
        previous_end: float | None = None
        for s in self.sentences:
            key = id(s.message)
            if s.played_at is not None:
                heard.setdefault(key, []).append(s.text)
                previous_end = s.played_at
                continue
            if s.first_sent_at is not None and s.duration_s > 0:
                began = max(previous_end or s.first_sent_at, s.first_sent_at)
                share = min(max((now - began) / s.duration_s, 0.0), 1.0)
                words = s.text.split()
                cut = int(len(words) * share)
                if cut:
                    heard.setdefault(key, []).append(" ".join(words[:cut]) + "...")
            break
        return {key: " ".join(parts) for key, parts in heard.items()}


class CallSession:
    def __init__(self, info: CallInfo, settings: Settings, recognizer: SpeechRecognizer,
                 brain: Brain, tts: SpeechSynthesizer, toolbox: Toolbox, telephony: Telephony,
                 sender: StreamSender, recorder: CallRecorder, greeting_text: str,
                 greeting_audio: bytes | None, transfer_failed: str = "", segment: int = 0,
                 speech_fallback: SpeechFallback | None = None) -> None:
        self.info = info
        self.settings = settings
        self.asr = recognizer
        self.brain = brain
        self.tts = tts
        self.toolbox = toolbox
        self.telephony = telephony
        self.sender = sender
        self.recorder = recorder
        self.greeting_text = greeting_text
        self.greeting_audio = greeting_audio
        self.speech_fallback = speech_fallback  # another voice and an apology, when `tts` fails
        self.transfer_failed = transfer_failed  # DialCallStatus: the caller is back from a failed transfer
        self.segment = segment                  # this call's stream number (0, then 1 after a transfer...)
        self._turn_base = segment * 1000        # turn numbers stay unique across the call's streams
        self.state = State.STREAMING
        self.history: list[Message] = []
        self.turns: list[TurnRecord] = []
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.vad = EnergyVad(settings.vad_threshold_rms, start_frames=5,
                             end_silence_frames=max(1, settings.vad_end_silence_ms // FRAME_MS))
        self.asr_failed = False
        self._reply: Reply | None = None
        self._gen = 0
        self._pending: list[str] = []
        self._frames = 0
        self._last_activity = time.monotonic()
        self._idle_prompts = 0
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """The `start` event arrived: greet at once, then listen (frames wait in the socket
        meanwhile, so none is lost while the recognizer connects)."""
        self._greet()
        try:
            await self.asr.start()
        except Exception as exc:
            log.error("recognizer did not start on %s: %s", self.info.call_sid, exc)
            self.asr_failed = True
            await self._recognizer_failed(str(exc))
        self._tasks.append(asyncio.create_task(self._listen(), name=f"asr {self.info.call_sid}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"watch {self.info.call_sid}"))

    async def stop(self, reason: str) -> None:
        """Idempotent: the stream ended (stop event, hang-up, dead socket) or we ended it."""
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        self.end_reason = reason
        if self._reply is not None:
            if self._reply.task is not None and not self._reply.task.done():
                self._reply.task.cancel()
            self._finish_reply(self._reply, interrupted=self._reply.playing)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for closer in (self.asr.close, self.brain.close):
            try:
                await asyncio.wait_for(closer(), timeout=2.0)
            except Exception as exc:
                log.warning("closing a provider of %s: %s", self.info.call_sid, exc)
        self.recorder.ended(self.info, reason, self.turns, self.history)
        self.ended.set()

    # --- inbound: called by the Media Streams edge -------------------------------------------

    async def on_media(self, ulaw: bytes) -> None:
        """Per 20 ms frame: keep it short."""
        pcm = ulaw_to_pcm(ulaw)
        self._frames += 1
        event = self.vad.update(rms(pcm), time.monotonic())
        if event is VadEvent.SPEECH_START:
            self._caller_active()
            if self._reply is not None and self._reply.playing:
                await self._barge_in("voice")
        elif event is VadEvent.SPEECH_END and not self.asr_failed:
            await self.asr.finalize()
        if not self.asr_failed:
            await self.asr.send(pcm)

    async def on_dtmf(self, digit: str) -> None:
        self._event("dtmf", digit=digit)
        if digit == "0":
            self._caller_active()
            self._pending.append(DTMF_PERSON)
            await self._close_turn(speech_end=time.monotonic())

    def on_mark(self, name: str) -> None:
        reply = self._reply
        gen, _, index = name.partition(".")
        if reply is None or reply.interrupted or gen != str(reply.gen):
            return  # stale: an echo of audio that a `clear` dropped, or of an older reply
        try:
            sentence = reply.sentences[int(index)]
        except (ValueError, IndexError):
            log.warning("mark %r matches nothing on %s", name, self.info.call_sid)
            return
        now = time.monotonic()
        sentence.played_at = now
        if reply.latency.heard_at is None:
            reply.latency.heard_at = now
        if not reply.playing:
            self._played(reply)

    @property
    def stream_s(self) -> float:
        return self._frames * FRAME_MS / 1000.0

    # --- turn-taking -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            async for event in self.asr.events():
                if isinstance(event, Transcript):
                    await self._on_transcript(event)
                elif isinstance(event, UtteranceEnd):
                    await self._close_turn()
                elif isinstance(event, SpeechNotUnderstood) and self.state is State.STREAMING:
                    self._caller_active()  # they spoke: not silence, whatever the words were
                    self._say(event.notice)
                elif isinstance(event, RecognizerFailed):
                    await self._recognizer_failed(event.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("recognizer failed on %s", self.info.call_sid)
            await self._recognizer_failed(str(exc))

    async def _on_transcript(self, event: Transcript) -> None:
        text = event.text.strip()
        if not text:
            return
        self._caller_active()
        reply = self._reply
        if reply is not None and reply.playing and event.end_s > reply.stream_s_at_start:
            await self._barge_in("words")
        if event.is_final:
            self._pending.append(text)
        if event.speech_final:
            await self._close_turn()

    async def _close_turn(self, speech_end: float | None = None) -> None:
        """The caller finished a turn: answer it. Called once per turn (pending text is consumed)."""
        if not self._pending or self.state is not State.STREAMING:
            return
        now = time.monotonic()
        text = " ".join(self._pending)
        self._pending.clear()
        if self._reply is not None and self._reply.playing:
            await self._barge_in("new turn")  # the caller went on (or pressed 0) while we answered
        latency = TurnLatency(speech_end=speech_end or self.vad.last_voiced_at or now, transcript_at=now)
        turn = TurnRecord(self._turn_base + len(self.turns), "caller", text, now, latency=latency)
        self.turns.append(turn)
        self.history.append(Message("user", text))
        reply = self._new_reply(latency, caller_turn=turn)
        reply.task = asyncio.create_task(self._run_reply(reply), name=f"reply {reply.gen}")

    def _caller_active(self) -> None:
        self._last_activity = time.monotonic()
        self._idle_prompts = 0

    # --- replies ----------------------------------------------------------------------------------

    def _new_reply(self, latency: TurnLatency, caller_turn: TurnRecord | None = None) -> Reply:
        previous = self._reply
        if previous is not None and not previous.finished:
            self._finish_reply(previous, interrupted=False)  # it plays on; a new line follows it
        self._gen += 1
        # A fresh encoder per reply: an interrupted reply's leftovers can never leak into the next.
        encoder = OutboundEncoder(self.tts.sample_rate, self.tts.encoding, self.settings.soxr_quality)
        speaker = Speaker(self.tts, encoder, self.sender, self._gen, latency, self.speech_fallback, self._event)
        record = TurnRecord(0, "zylin", "", time.monotonic())
        reply = Reply(self._gen, latency, speaker, record, caller_turn=caller_turn,
                      stream_s_at_start=self.stream_s)
        self._reply = reply
        return reply

    def _say(self, text: str, action: CallAction | None = None) -> None:
        """A line Zylin says on its own (idle prompt, fallback, goodbye): no brain involved."""
        reply = self._new_reply(TurnLatency())
        reply.action = action
        message = Message("assistant", text)
        reply.messages.append(message)
        reply.speaker.say(text, message)
        reply.speaker.finish()
        reply.task = asyncio.create_task(self._speak_only(reply), name=f"say {reply.gen}")

    async def _speak_only(self, reply: Reply) -> None:
        await reply.speaker.run()
        self._sent(reply)

    async def _run_reply(self, reply: Reply) -> None:
        speaking = asyncio.create_task(reply.speaker.run())
        try:
            try:
                await self._think(reply)
            except BrainError as exc:
                if reply.latency.llm_first_at is None:  # the brain's time ran out: it is its share
                    reply.latency.llm_first_at = time.monotonic()
                log.warning("brain failed on %s: %s", self.info.call_sid, exc)
                self._event("provider_error", provider="llm", error=str(exc))
                self._speak_fallback(reply)
            except Exception:
                log.exception("reply failed on %s", self.info.call_sid)
                self._event("provider_error", provider="llm", error="unexpected")
                self._speak_fallback(reply)
            reply.speaker.finish()
            await speaking
        except asyncio.CancelledError:
            speaking.cancel()  # barge-in: stop synthesis and sending now
            raise
        self._sent(reply)

    async def _think(self, reply: Reply) -> None:
        """Brain rounds until it stops calling tools; text is spoken while tools run."""
        latency = reply.latency
        budget = ToolBudget(self.settings.tool_timeout_s, self.settings.tool_one_moment_s)
        for _ in range(self.settings.max_tool_rounds):
            message = Message("assistant")
            context = self.history + reply.messages
            reply.messages.append(message)
            chunker = SentenceChunker()
            calls: list[ToolCall] = []
            if latency.llm_request_at is None:
                latency.llm_request_at = time.monotonic()
            async for out in self.brain.respond(context, self.toolbox.specs):
                if latency.llm_first_at is None:
                    latency.llm_first_at = time.monotonic()
                if isinstance(out, TextDelta):
                    message.content += out.text
                    for sentence in chunker.push(out.text):
                        reply.speaker.say(sentence, message)
                elif isinstance(out, ToolCall):
                    calls.append(out)
            if (rest := chunker.flush()) is not None:
                reply.speaker.say(rest, message)
            if not calls:
                return
            message.tool_calls = calls

            def one_moment(message: Message = message) -> None:
                message.content = f"{message.content} {ONE_MOMENT}".strip()
                reply.speaker.say(ONE_MOMENT, message)

            for call in calls:
                started = time.monotonic()
                result = await self.toolbox.run(call, one_moment, budget)
                latency.add_tool_run(started, time.monotonic())
                self._event("tool", name=call.name, arguments=call.arguments, result=result.data)
                reply.messages.append(Message("tool", json.dumps(result.data), tool_call_id=call.id,
                                              name=call.name))
                if result.action is not None:
                    reply.action = result.action
        log.warning("brain kept calling tools on %s; stopping after %d rounds",
                    self.info.call_sid, self.settings.max_tool_rounds)

    def _speak_fallback(self, reply: Reply) -> None:
        message = Message("assistant", FALLBACK_LINE)
        reply.messages.append(message)
        reply.speaker.say(FALLBACK_LINE, message)

    def _sent(self, reply: Reply) -> None:
        """Everything of the reply has been sent; it ends when its last mark comes back."""
        reply.all_sent = True
        if reply.gen == 1 and reply.latency.first_audio_at is not None:
            self.info.greeting_ms = round((reply.latency.first_audio_at - self.info.started_at) * 1000, 1)
        self._commit(reply)
        if reply is self._reply and not reply.interrupted and not reply.playing:
            self._played(reply)

    def _commit(self, reply: Reply) -> None:
        """The reply's messages join history (in order, before any later caller turn)."""
        if not reply.committed:
            reply.committed = True
            self.history.extend(reply.messages)

    def _played(self, reply: Reply) -> None:
        """The caller has heard the whole reply."""
        self._finish_reply(reply, interrupted=False)
        self._last_activity = time.monotonic()
        if reply.action is not None and self.state is not State.STOPPED:
            action, reply.action = reply.action, None
            self._tasks.append(asyncio.create_task(self._carry_out(action)))

    async def _barge_in(self, why: str) -> None:
        reply = self._reply
        if reply is None or reply.interrupted:
            return
        reply.interrupted = True
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
        if reply.sentences or (reply.task is not None and reply.latency.first_audio_at):
            await self.sender.clear()
        heard = self._finish_reply(reply, interrupted=True)
        if reply.action is not None and reply.action.kind == "end_call" and self.state is State.ENDING:
            self.state = State.STREAMING  # the caller is not done after all
        reply.action = None
        self._event("barge_in", why=why, heard=heard)

    def _finish_reply(self, reply: Reply, interrupted: bool) -> str:
        """History keeps what the caller heard; the turns are recorded. Runs once per reply."""
        if reply.finished:
            return reply.record.heard_text or ""
        reply.finished = True
        self._commit(reply)
        spoken = " ".join(m.content for m in reply.messages if m.role == "assistant" and m.content)
        if interrupted:
            heard = reply.heard(time.monotonic())
            for message in reply.messages:
                if message.role == "assistant":
                    message.content = heard.get(id(message), "")
            answered = {m.tool_call_id for m in reply.messages if m.role == "tool"}
            for message in reply.messages:  # a tool call cut off before its result is dropped
                message.tool_calls = [c for c in message.tool_calls if c.id in answered]
            dropped = {id(m) for m in reply.messages
                       if m.role == "assistant" and not m.content and not m.tool_calls}
            self.history = [m for m in self.history if id(m) not in dropped]
        heard_text = " ".join(m.content for m in reply.messages if m.role == "assistant" and m.content)
        reply.record.text = spoken
        reply.record.heard_text = heard_text
        reply.record.interrupted = interrupted
        if reply.caller_turn is not None:
            self.recorder.turn(self.info, reply.caller_turn)
        if spoken:
            reply.record.index = self._turn_base + len(self.turns)
            reply.record.at = time.monotonic()
            self.turns.append(reply.record)
            self.recorder.turn(self.info, reply.record)
        return heard_text

    async def _carry_out(self, action: CallAction) -> None:
        if action.kind == "end_call":
            self.state = State.ENDING
            self._event("hang_up", reason=action.reason)
            if not await self.telephony.hang_up(self.info.call_sid):
                await self.sender.close()
                await self.stop("zylin ended the call")
            return
        self._event("transfer", target=action.target, reason=action.reason)
        action_url = dial_result_url(self.settings.public_url, self.segment + 1)
        if await self.telephony.transfer(self.info.call_sid, action.target, action_url):
            self.state = State.ENDING  # Twilio stops the stream by itself when <Dial> starts
            self.end_reason = "transferred to a person"
            return
        self._event("transfer_failed", target=action.target)
        self.history.append(Message("user", "[The transfer failed: nobody could be reached.]"))
        self._say(TRANSFER_FAILED_LINE)

    # --- greeting, silence, limits ------------------------------------------------------------------

    def _greet(self) -> None:
        if self.transfer_failed:  # back from a <Dial> nobody answered: say so, offer a message
            why = DIAL_FAILED.get(self.transfer_failed, "nobody could take the call")
            self._say(f"I'm sorry, I couldn't put you through: {why}. {TAKE_A_MESSAGE}")
            return
        if self.greeting_audio is None:  # the cache could not render it: synthesize live
            self._say(self.greeting_text)
            return
        reply = self._new_reply(TurnLatency())
        message = Message("assistant", self.greeting_text)
        reply.messages.append(message)
        reply.task = asyncio.create_task(self._send_greeting(reply, message), name="greeting")

    async def _send_greeting(self, reply: Reply, message: Message) -> None:
        sentence = SpokenSentence(self.greeting_text, f"{reply.gen}.0", message)
        await send_frames(self.sender, self.greeting_audio)
        sentence.first_sent_at = reply.latency.first_audio_at = time.monotonic()
        sentence.audio_bytes = len(self.greeting_audio)
        reply.sentences.append(sentence)
        await self.sender.mark(sentence.mark)
        self._sent(reply)

    async def _watchdog(self) -> None:
        """Idle caller: prompt once, then say goodbye. Long call: end it politely."""
        while self.state is not State.STOPPED:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            overtime = now - self.info.started_at - self.settings.max_call_s
            # A caller who never pauses still cannot hold the line forever; nor can a goodbye
            # whose mark never comes back (Twilio stopped reading): this holds while ENDING too.
            if overtime > 60:
                await self.sender.close()
                await self.stop("maximum call length")
                return
            if self.state is not State.STREAMING:
                continue
            busy = (self._reply is not None and self._reply.playing) or self.vad.speaking or self._pending
            if overtime > 0 and not busy:
                self.state = State.ENDING
                self._say(MAX_DURATION_GOODBYE, CallAction("end_call", reason="maximum call length"))
            elif not busy and now - self._last_activity > self.settings.idle_timeout_s:
                self._last_activity = now
                self._idle_prompts += 1
                if self._idle_prompts == 1:
                    self._say(IDLE_PROMPT)
                else:
                    self.state = State.ENDING
                    self._say(IDLE_GOODBYE, CallAction("end_call", reason="caller silent"))

    async def _recognizer_failed(self, reason: str) -> None:
        self.asr_failed = True
        self._event("provider_error", provider="asr", error=reason)
        if self.state is State.STREAMING:
            self._say(ASR_DOWN_LINE)

    # --- records ---------------------------------------------------------------------------------

    def _event(self, kind: str, **detail) -> None:
        self.recorder.event(self.info, CallEvent(kind, time.monotonic(), detail))
