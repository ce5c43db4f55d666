"""One call's conversation: streaming brain -> TTS, barge-in, latency, the end.

Inbound flows one way: frames -> TurnDetector (local VAD + recognizer events, turns.py) -> caller
turns -> a Reply (brain, tools, speaker; its lifecycle in reply.py) -> frames out. Twilio's mark
echoes tell what the caller has actually heard, which is what history keeps when the caller
interrupts. The detector decides when the caller spoke, cut in or finished; this engine acts.

With Flux, a probable end of turn starts a speculative reply: the brain runs and the first
sentence is synthesized, but nothing is sent, and no tool with side effects runs, until the
turn's end commits it; if the caller goes on, or ends the turn with other words, it is dropped
unheard. Committed, what is ready goes out at once: that is the latency it saves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum

from services.asr.base import (
    EagerTurnEnd,
    RecognizerFailed,
    SpeechNotUnderstood,
    SpeechRecognizer,
    Transcript,
    TurnEnded,
    TurnResumed,
    TurnStarted,
    UtteranceEnd,
    takes_mulaw,
)
from services.audio.codec import FRAME_MS, ulaw_to_pcm
from services.llm.base import Brain, BrainError, Message, ToolCall
from services.orchestrator.chunker import SentenceChunker
from services.orchestrator.generation import run_turn
from services.orchestrator.latency import TurnLatency
from services.orchestrator.record import CallEvent, CallInfo, CallRecorder, TurnRecord
from services.orchestrator.reply import Reply, ReplyState
from services.orchestrator.speaker import START_MARK, CallVoices, Speaker, SpeechFallback
from services.orchestrator.turns import TurnDetector
from services.providers import build_vad
from services.receptionist.lines import (
    ASR_DOWN_LINE,
    DTMF_PERSON,
    FALLBACK_LINE,
    IDLE_GOODBYE,
    IDLE_PROMPT,
    MAX_DURATION_GOODBYE,
    ONE_MOMENT,
    TRANSFER_FAILED_LINE,
    not_put_through,
)
from services.receptionist.persona import system_prompt
from services.receptionist.tool_types import CallAction, ToolResult
from services.receptionist.tools import READ_ONLY, Toolbox, ToolBudget
from services.settings import Settings
from services.storage.vocabulary import EndReason, EventKind
from services.storage.vocabulary import Speaker as TurnSpeaker  # not orchestrator.speaker.Speaker
from services.telephony.media_streams import StreamSender
from services.telephony.rest import Telephony
from services.telephony.webhook import DIAL_FAILED, dial_result_url
from services.tts.base import SpeechSynthesizer

log = logging.getLogger("zylin.session")


class State(Enum):
    STREAMING = "streaming"
    ENDING = "ending"      # the last words are playing; then hang up or transfer
    STOPPED = "stopped"


class CallSession:
    def __init__(self, info: CallInfo, settings: Settings, recognizer: SpeechRecognizer,
                 brain: Brain, tts: SpeechSynthesizer, toolbox: Toolbox, telephony: Telephony,
                 sender: StreamSender, recorder: CallRecorder, greeting_text: str,
                 transfer_failed: str = "", segment: int = 0,
                 speech_fallback: SpeechFallback | None = None) -> None:
        self.info = info
        self.settings = settings
        self.asr = recognizer
        self._asr_takes_mulaw = takes_mulaw(recognizer)   # Flux: Twilio's bytes as they came
        self.brain = brain
        self.tts = tts
        self.toolbox = toolbox
        self.telephony = telephony
        self.sender = sender
        self.recorder = recorder
        self.greeting_text = greeting_text     # in the phrase cache, when it could be rendered
        self.speech_fallback = speech_fallback  # another voice, the apology, the phrases: when `tts` fails
        self.transfer_failed = transfer_failed  # DialCallStatus: the caller is back from a failed transfer
        self.segment = segment                  # this call's stream number (0, then 1 after a transfer...)
        self._turn_base = segment * 1000        # turn numbers stay unique across the call's streams
        self.state = State.STREAMING
        self.history: list[Message] = []
        self.turns: list[TurnRecord] = []
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.vad = build_vad(settings)
        self.turn_detector = TurnDetector(self.vad, self, person_request=DTMF_PERSON,
                                          min_speech_ms=settings.interrupt_min_speech_ms,
                                          hold_unfinished_ms=settings.turn_hold_unfinished_ms)
        self.asr_failed = False
        self._reply: Reply | None = None
        self._gen = 0
        self._last_activity = time.monotonic()
        self._idle_prompts = 0
        self._tasks: list[asyncio.Task] = []
        # the call's own voices: a streaming voice connects now, before the greeting is over
        self.voices = CallVoices.for_call(tts, speech_fallback, self._event)

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
        reply = self._reply
        if reply is not None:
            if reply.task is not None and not reply.task.done():
                reply.task.cancel()
            if reply.state is ReplyState.SPECULATIVE:
                self._advance(reply, ReplyState.DISCARDED)
            elif not reply.state.final:  # still playing (or being cut): the caller hears no more of it
                self._advance(reply, ReplyState.INTERRUPTED)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        keep = (self.tts, self.speech_fallback.tts if self.speech_fallback else None)
        for closer in (self.asr.close, self.brain.close, lambda: self.voices.close(keep)):
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
        if (work := self.turn_detector.on_frame(pcm, time.monotonic())) is not None:
            await work
        if not self.asr_failed:
            await self.asr.send(ulaw if self._asr_takes_mulaw else pcm)

    async def on_dtmf(self, digit: str) -> None:
        self._event(EventKind.DTMF, digit=digit)
        await self.turn_detector.on_dtmf(digit)

    def on_mark(self, name: str) -> None:
        reply = self._reply
        gen, _, index = name.partition(".")
        if reply is None or not reply.live or gen != str(reply.gen):
            return  # stale: an echo of audio that a `clear` dropped, or of an older reply
        if index == START_MARK:  # the reply's first frame has played: the caller hears it from now
            if reply.latency.heard_at is None:
                reply.latency.heard_at = time.monotonic()
            return
        try:
            sentence = reply.sentences[int(index)]
        except (ValueError, IndexError):
            log.warning("mark %r matches nothing on %s", name, self.info.call_sid)
            return
        sentence.played_at = time.monotonic()
        if not reply.playing:
            self._played(reply)

    @property
    def stream_s(self) -> float:
        return self.turn_detector.frames * FRAME_MS / 1000.0

    # --- recognizer ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            async for event in self.asr.events():
                if isinstance(event, Transcript):
                    await self.turn_detector.on_transcript(event)
                elif isinstance(event, TurnStarted):
                    await self.turn_detector.on_turn_started()
                elif isinstance(event, EagerTurnEnd):
                    await self.turn_detector.on_eager_turn_end(event)
                elif isinstance(event, TurnResumed):
                    self.turn_detector.on_turn_resumed()
                elif isinstance(event, TurnEnded):
                    await self.turn_detector.on_turn_ended(event)
                elif isinstance(event, UtteranceEnd):
                    await self.turn_detector.on_utterance_end()
                elif isinstance(event, SpeechNotUnderstood) and self.state is State.STREAMING:
                    self.on_caller_active()  # they spoke: not silence, whatever the words were
                    self._say(event.notice)
                elif isinstance(event, RecognizerFailed):
                    await self._recognizer_failed(event.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("recognizer failed on %s", self.info.call_sid)
            await self._recognizer_failed(str(exc))

    # --- turn hooks: the TurnDetector decides, these act (services/orchestrator/turns.py) ------

    def speaking_since(self) -> float | None:
        reply = self._reply
        return reply.stream_s_at_start if reply is not None and reply.playing else None

    def taking_turns(self) -> bool:
        return self.state is State.STREAMING

    def on_caller_active(self) -> None:
        self._last_activity = time.monotonic()
        self._idle_prompts = 0

    async def finalize_recognizer(self) -> None:
        if not self.asr_failed:
            await self.asr.finalize()

    async def on_barge_in(self, why: str) -> None:
        """Stop the audible reply: cancel it, `clear` what Twilio still buffers, and keep in history
        what the caller heard up to the moment the clear went out."""
        reply = self._reply
        if reply is None or not reply.live:
            return
        self._advance(reply, ReplyState.CUT)
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
        if reply.sentences or (reply.task is not None and reply.latency.first_audio_at):
            await self.sender.clear()
        if reply.state is ReplyState.CUT:  # unless the call's end or a newer reply finished it meanwhile
            self._advance(reply, ReplyState.INTERRUPTED)
        heard = reply.record.heard_text or ""
        if reply.action is not None and reply.action.kind == "end_call" and self.state is State.ENDING:
            self.state = State.STREAMING  # the caller is not done after all
        reply.action = None
        self._event(EventKind.BARGE_IN, why=why, heard=heard)

    def on_interruption_ignored(self, why: str, words: str, speech_ms: int) -> None:
        self._event(EventKind.INTERRUPTION_IGNORED, why=why, words=words, speech_ms=speech_ms)

    def on_turn(self, text: str, speech_end: float, closed_at: float) -> None:
        speculative = self._speculation()
        if speculative is not None and same_words(speculative.speculated, text):
            self._commit(speculative, text, speech_end, closed_at)
            return
        self.drop_speculation()  # (if any) it answered other words: start over with the final ones
        latency = TurnLatency(speech_end=speech_end, transcript_at=closed_at)
        turn = TurnRecord(self._turn_base + len(self.turns), TurnSpeaker.CALLER, text, closed_at, latency=latency)
        self.turns.append(turn)
        self.history.append(Message("user", text))
        reply = self._new_reply(latency, caller_turn=turn)
        reply.task = asyncio.create_task(self._run_reply(reply), name=f"reply {reply.gen}")

    def on_speculate(self, text: str, speech_end: float) -> None:
        """Prepare the answer to `text` (see the module docstring); the brain sees it as the
        caller's turn, history does not until the commit."""
        self.drop_speculation()
        latency = TurnLatency(speech_end=speech_end)
        reply = self._new_reply(latency, speculative=True)
        reply.speculated, reply.speculated_at = text, time.monotonic()
        context = [*self.history, Message("user", text)]
        reply.task = asyncio.create_task(self._run_reply(reply, context), name=f"speculative reply {reply.gen}")

    def drop_speculation(self) -> None:
        """A speculative reply is void: cancelled before a sound, its side effects never run."""
        reply = self._speculation()
        if reply is None:
            return
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
        self._advance(reply, ReplyState.DISCARDED)
        self._speculation_ended(reply, "discarded")
        log.debug("speculative reply %d on %s discarded", reply.gen, self.info.call_sid)

    def _speculation_ended(self, reply: Reply, outcome: str) -> None:
        """On the call's record: whether Flux's eager end was right, and how long before the end
        of turn (or the caller going on) the reply began."""
        lead_ms = round((time.monotonic() - reply.speculated_at) * 1000, 1)
        self._event(EventKind.SPECULATIVE_REPLY, outcome=outcome, lead_ms=lead_ms)

    def _speculation(self) -> Reply | None:
        reply = self._reply
        return reply if reply is not None and reply.state is ReplyState.SPECULATIVE else None

    def _commit(self, reply: Reply, text: str, speech_end: float, closed_at: float) -> None:
        """The turn ended with the words the speculative reply answers: the caller's turn joins
        history before the reply's messages, and what is ready is sent."""
        latency = reply.latency
        latency.speech_end, latency.transcript_at = speech_end, closed_at
        latency.speculative = True
        self._speculation_ended(reply, "committed")
        turn = TurnRecord(self._turn_base + len(self.turns), TurnSpeaker.CALLER, text, closed_at, latency=latency)
        self.turns.append(turn)
        self.history.append(Message("user", text))
        reply.caller_turn = turn
        self._advance(reply, ReplyState.SPEAKING)
        reply.stream_s_at_start = self.stream_s
        assert reply.gate is not None  # a speculative reply has one
        reply.gate.set()

    # --- replies ----------------------------------------------------------------------------------

    def _new_reply(self, latency: TurnLatency, caller_turn: TurnRecord | None = None,
                   speculative: bool = False) -> Reply:
        self.drop_speculation()   # a line of Zylin's own (a prompt, a goodbye) voids one too
        previous = self._reply
        if previous is not None and not previous.state.final:
            # It plays on and a new line follows it; one being cut is interrupted here, not later.
            cut = previous.state is ReplyState.CUT
            self._advance(previous, ReplyState.INTERRUPTED if cut else ReplyState.SUPERSEDED)
        self._gen += 1
        # Fresh encoders per reply (the speaker's): an interrupted reply's leftovers never leak into the next.
        gate = asyncio.Event() if speculative else None
        speaker = Speaker(self.voices, self.sender, self._gen, latency, self._event, gate=gate)
        record = TurnRecord(0, TurnSpeaker.ZYLIN, "", time.monotonic())
        reply = Reply(self._gen, latency, speaker, record, caller_turn=caller_turn,
                      stream_s_at_start=self.stream_s, gate=gate,
                      state=ReplyState.SPECULATIVE if speculative else ReplyState.SPEAKING)
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

    async def _run_reply(self, reply: Reply, history: list[Message] | None = None) -> None:
        """`history` is what the brain sees: the call's, or a speculative reply's own copy."""
        speaking = asyncio.create_task(reply.speaker.run())
        try:
            try:
                await self._think(reply, self.history if history is None else history)
            except BrainError as exc:
                if reply.latency.llm_first_at is None:  # the brain's time ran out: it is its share
                    reply.latency.llm_first_at = time.monotonic()
                log.warning("brain failed on %s: %s", self.info.call_sid, exc)
                self._event(EventKind.PROVIDER_ERROR, provider="llm", error=str(exc))
                self._speak_fallback(reply)
            except Exception:
                log.exception("reply failed on %s", self.info.call_sid)
                self._event(EventKind.PROVIDER_ERROR, provider="llm", error="unexpected")
                self._speak_fallback(reply)
            reply.speaker.finish()
            await speaking
            if reply.gate is not None:
                await reply.gate.wait()  # a speculative reply with nothing to say still waits for its turn
        except asyncio.CancelledError:
            speaking.cancel()  # barge-in (or a dropped speculation): stop synthesis and sending now
            raise
        self._sent(reply)

    async def _think(self, reply: Reply, history: list[Message]) -> None:
        """The brain's turn (generation.run_turn): its words are spoken sentence by sentence while
        tools run, and a tool that keeps the caller waiting has them hear ONE_MOMENT."""
        chunker = SentenceChunker()

        def speak(message: Message, text: str) -> None:
            for sentence in chunker.push(text):
                reply.speaker.say(sentence, message)

        def spoken(message: Message) -> None:
            if (rest := chunker.flush()) is not None:
                reply.speaker.say(rest, message)

        def one_moment(message: Message) -> None:
            message.content = f"{message.content} {ONE_MOMENT}".strip()
            reply.speaker.say(ONE_MOMENT, message)

        async def hold_side_effects(call: ToolCall) -> None:
            if call.name not in READ_ONLY and reply.gate is not None:
                await reply.gate.wait()   # cancelled with the reply if the turn does not confirm it

        def ran(call: ToolCall, result: ToolResult) -> None:
            self._event(EventKind.TOOL, name=call.name, arguments=call.arguments, result=result.data)
            if result.action is not None:
                reply.action = result.action

        await run_turn(self.brain, system_prompt(self.toolbox.ctx.profile), history, self.toolbox,
                       messages=reply.messages, timings=reply.latency,
                       budget=ToolBudget(self.settings.tool_timeout_s, self.settings.tool_one_moment_s),
                       max_rounds=self.settings.max_tool_rounds,
                       on_text=speak, on_words=spoken, on_hold=one_moment, on_tool=ran,
                       before_tool=hold_side_effects)

    def _speak_fallback(self, reply: Reply) -> None:
        message = Message("assistant", FALLBACK_LINE)
        reply.messages.append(message)
        reply.speaker.say(FALLBACK_LINE, message)

    def _sent(self, reply: Reply) -> None:
        """Everything of the reply has been sent; it ends when its last mark comes back."""
        if reply.gen == 1 and reply.latency.first_audio_at is not None:
            self.info.greeting_ms = round((reply.latency.first_audio_at - self.info.started_at) * 1000, 1)
        if reply.state is ReplyState.SUPERSEDED:
            return  # a newer reply took over while this one was still sending: it is recorded already
        self._advance(reply, ReplyState.SENT)
        if reply is self._reply and not reply.playing:
            self._played(reply)

    def _played(self, reply: Reply) -> None:
        """The caller has heard the whole reply."""
        self._advance(reply, ReplyState.PLAYED)
        self._last_activity = time.monotonic()
        if reply.action is not None and self.state is not State.STOPPED:
            action, reply.action = reply.action, None
            self._tasks.append(asyncio.create_task(self._carry_out(action)))

    def _advance(self, reply: Reply, to: ReplyState) -> None:
        """Move the reply on (Reply.move refuses a step its lifecycle lacks) and do what the step
        means: its messages join history when it leaves SPEAKING (in order, before any later caller
        turn), and its turn is recorded when it reaches a final state. So each happens once."""
        if reply.move(to) is ReplyState.SPEAKING:
            self.history.extend(reply.messages)
        if to is ReplyState.DISCARDED:
            return  # never heard: neither history nor the record keeps it
        if to.final:
            self._record(reply, cut=to is ReplyState.INTERRUPTED)

    def _record(self, reply: Reply, cut: bool) -> None:
        """History keeps what the caller heard of a cut reply; the turns are recorded."""
        spoken = " ".join(m.content for m in reply.messages if m.role == "assistant" and m.content)
        if cut:
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
        reply.record.interrupted = cut
        if reply.caller_turn is not None:
            self.recorder.turn(self.info, reply.caller_turn)
        if spoken:
            reply.record.index = self._turn_base + len(self.turns)
            reply.record.at = time.monotonic()
            self.turns.append(reply.record)
            self.recorder.turn(self.info, reply.record)

    async def _carry_out(self, action: CallAction) -> None:
        if action.kind == "end_call":
            self.state = State.ENDING
            self._event(EventKind.HANG_UP, reason=action.reason)
            if not await self.telephony.hang_up(self.info.call_sid):
                await self.sender.close()
                await self.stop(EndReason.ZYLIN_ENDED)
            return
        self._event(EventKind.TRANSFER, target=action.target, reason=action.reason)
        action_url = dial_result_url(self.settings.public_url, self.segment + 1)
        if await self.telephony.transfer(self.info.call_sid, action.target, action_url):
            self.state = State.ENDING  # Twilio stops the stream by itself when <Dial> starts
            self.end_reason = EndReason.TRANSFERRED
            return
        self._event(EventKind.TRANSFER_FAILED, target=action.target)
        self.history.append(Message("user", "[The transfer failed: nobody could be reached.]"))
        self._say(TRANSFER_FAILED_LINE)

    # --- greeting, silence, limits ------------------------------------------------------------------

    def _greet(self) -> None:
        if self.transfer_failed:  # back from a <Dial> nobody answered: say so, offer a message
            why = DIAL_FAILED.get(self.transfer_failed, "nobody could take the call")
            self._say(not_put_through(why))
            return
        self._say(self.greeting_text)  # from the phrase cache: its audio leaves within a few ms

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
                await self.stop(EndReason.MAX_LENGTH)
                return
            if self.state is not State.STREAMING:
                continue
            busy = (self._reply is not None and self._reply.playing) or self.turn_detector.mid_turn
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
        self._event(EventKind.PROVIDER_ERROR, provider="asr", error=reason)
        if self.state is State.STREAMING:
            self._say(ASR_DOWN_LINE)

    # --- records ---------------------------------------------------------------------------------

    def _event(self, kind: EventKind, **detail) -> None:
        self.recorder.event(self.info, CallEvent(kind, time.monotonic(), detail))


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same words (case and punctuation aside)."""
    def words(text: str) -> list[str]:
        return [w.strip(".,?!;:\"'").lower() for w in text.split() if w.strip(".,?!;:\"'")]
    return words(a) == words(b)
