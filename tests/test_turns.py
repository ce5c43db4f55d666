"""Turn detection (services/orchestrator/turns.py) against recorded hooks: what the VAD, the
recognizer's transcripts, UtteranceEnd and a press of 0 make the engine do, and in what order;
and which caller sounds over Zylin's voice are interruptions (services/orchestrator/interruption.py,
services/receptionist/backchannels.py). Frames are fed one by one: time is counted in frames."""

from __future__ import annotations

import struct
import time

import pytest

from services.asr.base import EagerTurnEnd, Transcript, TurnEnded
from services.audio.vad import EnergyVad
from services.orchestrator.turns import TurnDetector
from services.receptionist.backchannels import Words, classify, normalize
from services.receptionist.endings import unfinished


def frame_at(level: int) -> bytes:
    """A 20 ms PCM16 frame whose RMS is `level`."""
    return struct.pack("<h", level) * 160


LOUD, QUIET = frame_at(2000), frame_at(50)
PERSON = "[pressed 0]"


class Hooks:
    """A stand-in engine: records each call, plays a reply from stream time `since` if set."""

    def __init__(self, since: float | None = None, taking: bool = True) -> None:
        self.since = since
        self.taking = taking
        self.calls: list[tuple] = []

    def speaking_since(self) -> float | None:
        return self.since

    def taking_turns(self) -> bool:
        return self.taking

    def on_caller_active(self) -> None:
        self.calls.append(("active",))

    async def on_barge_in(self, why: str) -> None:
        self.calls.append(("barge_in", why))
        self.since = None   # the engine cut the reply: nothing is audible any more

    def on_interruption_ignored(self, why: str, words: str, speech_ms: int) -> None:
        self.calls.append(("ignored", why, words, speech_ms))

    async def finalize_recognizer(self) -> None:
        self.calls.append(("finalize",))

    def on_turn(self, text: str, speech_end: float, closed_at: float) -> None:
        self.calls.append(("turn", text, speech_end, closed_at))

    def on_speculate(self, text: str, speech_end: float) -> None:
        self.calls.append(("speculate", text))

    def drop_speculation(self) -> None:
        self.calls.append(("drop",))

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]

    def turns(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "turn"]


MIN_SPEECH_MS = 200   # 10 frames: a barge-in needs 10 frames from the first voiced one
START_FRAMES = 2      # the VAD's onset: speech starts at the 2nd voiced frame in a row


def detector(hooks: Hooks) -> TurnDetector:
    vad = EnergyVad(500, start_frames=START_FRAMES, end_silence_frames=3)
    return TurnDetector(vad, hooks, person_request=PERSON, min_speech_ms=MIN_SPEECH_MS)


async def frames(turns: TurnDetector, pcm: list[bytes], start: float = 10.0) -> None:
    for i, frame in enumerate(pcm):
        work = turns.on_frame(frame, start + i * 0.02)
        if work is not None:
            await work


def words(text: str, final: bool = True, speech_final: bool = False, end_s: float = 5.0) -> Transcript:
    return Transcript(text, is_final=final, speech_final=speech_final, start_s=end_s - 1.0, end_s=end_s)


# --- the VAD ---------------------------------------------------------------------------------------

async def test_a_frame_without_a_vad_event_needs_no_work() -> None:
    turns = detector(Hooks())
    assert turns.on_frame(QUIET, 0.0) is None
    assert turns.on_frame(LOUD, 0.02) is None   # one voiced frame is not speech yet


async def test_speech_start_marks_the_caller_active_and_speech_end_finalizes_the_recognizer() -> None:
    hooks = Hooks()
    await frames(detector(hooks), [LOUD, LOUD, LOUD, QUIET, QUIET, QUIET])
    assert hooks.calls == [("active",), ("finalize",)]


async def test_speech_start_while_zylin_is_audible_is_not_a_barge_in_yet() -> None:
    hooks = Hooks(since=0.0)
    await frames(detector(hooks), [LOUD, LOUD])
    assert hooks.calls == [("active",)]


# --- transcripts --------------------------------------------------------------------------------------

async def test_final_words_accumulate_until_speech_final_closes_the_turn_once() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await turns.on_transcript(words("I'd like", final=False))
    await turns.on_transcript(words("I'd like to book"))
    await turns.on_transcript(words("a cleaning", speech_final=True))
    await turns.on_utterance_end()                        # the same turn: nothing left to answer
    assert [t[1] for t in hooks.turns()] == ["I'd like to book a cleaning"]
    assert hooks.kinds().count("active") == 3


async def test_utterance_end_closes_a_turn_that_speech_final_did_not() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await turns.on_transcript(words("Is there parking?"))
    assert hooks.turns() == []
    await turns.on_utterance_end()
    assert [t[1] for t in hooks.turns()] == ["Is there parking?"]


async def test_an_empty_transcript_is_no_sign_of_the_caller() -> None:
    hooks = Hooks(since=0.0)
    turns = detector(hooks)
    await turns.on_transcript(words("  ", speech_final=True))
    assert hooks.calls == []


async def test_words_spoken_over_the_reply_barge_in_and_words_from_before_it_do_not() -> None:
    hooks = Hooks(since=5.0)
    turns = detector(hooks)
    await turns.on_transcript(words("Is it far", end_s=4.9))   # said before the reply began
    assert "barge_in" not in hooks.kinds()
    await turns.on_transcript(words("and what about Friday", final=False, end_s=5.2))   # 1 s of words
    assert hooks.calls[-1] == ("barge_in", "words")


async def test_a_turn_closed_while_a_reply_is_audible_cuts_it_first() -> None:
    hooks = Hooks(since=9.0)
    turns = detector(hooks)
    await turns.on_transcript(words("and on Friday?", speech_final=True, end_s=1.0))   # not over the reply
    assert hooks.kinds() == ["active", "barge_in", "turn"]
    assert hooks.calls[1] == ("barge_in", "new turn")


async def test_words_wait_while_no_turns_are_taken_and_join_the_next_turn() -> None:
    hooks = Hooks(taking=False)
    turns = detector(hooks)
    await turns.on_transcript(words("hold on", speech_final=True))
    assert hooks.turns() == [] and turns.mid_turn
    hooks.taking = True
    await turns.on_transcript(words("one more thing", speech_final=True))
    assert [t[1] for t in hooks.turns()] == ["hold on one more thing"]
    assert not turns.mid_turn


# --- when the turn ended --------------------------------------------------------------------------

async def test_the_turn_ends_at_the_last_voiced_frame() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await frames(turns, [LOUD, LOUD, LOUD, QUIET, QUIET, QUIET], start=10.0)
    await turns.on_transcript(words("hello", speech_final=True))
    (_, _, speech_end, closed_at), = hooks.turns()
    assert speech_end == pytest.approx(10.04)
    assert closed_at >= time.monotonic() - 1.0


async def test_without_any_voiced_frame_the_turn_ends_when_it_closes() -> None:
    hooks = Hooks()
    await detector(hooks).on_transcript(words("hello", speech_final=True))
    (_, _, speech_end, closed_at), = hooks.turns()
    assert speech_end == closed_at


# --- DTMF ----------------------------------------------------------------------------------------------

async def test_pressing_zero_is_a_turn_of_its_own_that_ends_at_the_press() -> None:
    hooks = Hooks(since=0.0)
    turns = detector(hooks)
    before = time.monotonic()
    await turns.on_dtmf("0")
    assert hooks.kinds() == ["active", "barge_in", "turn"]
    (_, text, speech_end, closed_at), = hooks.turns()
    assert text == PERSON and before <= speech_end <= closed_at


async def test_pressing_zero_after_words_sends_them_together() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await turns.on_transcript(words("I want a person"))
    await turns.on_dtmf("0")
    assert [t[1] for t in hooks.turns()] == [f"I want a person {PERSON}"]


@pytest.mark.parametrize("digit", ["1", "9", "*", "#"])
async def test_other_digits_mean_nothing_to_turn_taking(digit: str) -> None:
    hooks = Hooks(since=0.0)
    await detector(hooks).on_dtmf(digit)
    assert hooks.calls == []


def test_mid_turn_while_the_caller_speaks() -> None:
    turns = detector(Hooks())
    assert not turns.mid_turn
    turns.on_frame(LOUD, 0.0)
    work = turns.on_frame(LOUD, 0.02)
    assert work is not None
    work.close()   # not awaited here: only the VAD's state matters
    assert turns.mid_turn


# --- interruptions: what stops Zylin, and what it talks through ----------------------------------------

class Line:
    """The caller's side of the line, frame by frame, on one running clock; `at` says where each
    barge-in happened (the frame number it was decided on, counting from 1)."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.turns = detector(hooks)
        self.frame = 0
        self.barged_at: int | None = None

    async def play(self, *pcm: bytes) -> None:
        for frame in pcm:
            self.frame += 1
            work = self.turns.on_frame(frame, 100.0 + self.frame * 0.02)
            if work is not None:
                await work
            if self.barged_at is None and "barge_in" in self.hooks.kinds():
                self.barged_at = self.frame

    async def speak(self, frames: int) -> None:
        await self.play(*[LOUD] * frames)

    async def pause(self, frames: int) -> None:
        await self.play(*[QUIET] * frames)

    def ignored(self) -> list[tuple]:
        return [c for c in self.hooks.calls if c[0] == "ignored"]


async def test_long_speech_without_words_barges_in_once_it_lasts_the_minimum() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(MIN_SPEECH_MS // 20 - 1)
    assert "barge_in" not in line.hooks.kinds(), "one frame short of the minimum"
    await line.speak(1)
    assert line.barged_at == MIN_SPEECH_MS // 20, "counted from the first voiced frame, the VAD's onset included"
    assert line.hooks.calls[-1] == ("barge_in", "voice")
    await line.speak(30)
    assert line.hooks.kinds().count("barge_in") == 1


async def test_a_gap_inside_speech_does_not_count_as_speech_nor_end_it() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(4)
    await line.pause(2)                  # shorter than the VAD's end of speech (3 frames)
    assert "barge_in" not in line.hooks.kinds()
    await line.speak(4)                  # frames 7-10: the 10th frame from the onset
    assert line.barged_at == 10


async def test_a_short_sound_without_words_is_ignored_and_recorded_once_its_words_had_their_chance() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(6)                  # 120 ms: a cough, a click, a door
    await line.pause(10)
    assert line.hooks.kinds() == ["active", "finalize"] and line.ignored() == []   # words may still come
    await line.pause(50)                 # a second of stream: they did not
    assert line.ignored() == [("ignored", "too short", "", 120)]
    assert "barge_in" not in line.hooks.kinds() and line.hooks.turns() == []


async def test_a_backchannel_over_the_reply_stops_nothing_and_is_no_turn() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(5)
    await line.turns.on_transcript(words("Mm-hmm", final=False, end_s=5.0))
    await line.speak(15)                 # 400 ms in all: longer than the minimum, but a backchannel
    await line.pause(4)
    await line.turns.on_transcript(words("Mm-hmm.", speech_final=True, end_s=5.4))
    await line.turns.on_utterance_end()
    await line.pause(60)
    assert "barge_in" not in line.hooks.kinds() and line.hooks.turns() == []
    assert line.ignored() == [("ignored", "backchannel", "Mm-hmm.", 400)], "recorded once, with its words"
    assert not line.turns.mid_turn


async def test_a_short_backchannel_whose_words_come_after_it_is_recorded_as_a_backchannel_only() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(8)
    await line.pause(5)
    await line.turns.on_transcript(words("okay", speech_final=True, end_s=5.0))
    await line.pause(60)
    assert [c[1] for c in line.ignored()] == ["backchannel"] and line.hooks.turns() == []


async def test_an_interrupting_word_stops_zylin_at_once_however_short() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(3)
    await line.turns.on_transcript(words("Wait", final=False, end_s=5.0))
    assert line.hooks.calls[-1] == ("barge_in", "interrupting word")
    await line.pause(4)
    await line.turns.on_transcript(words("Wait.", speech_final=True, end_s=5.1))
    assert [t[1] for t in line.hooks.turns()] == ["Wait."], "then it is the caller's turn"


async def test_words_that_are_not_a_backchannel_barge_in_once_there_is_enough_speech() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(4)
    await line.turns.on_transcript(words("Can I", final=False, end_s=5.0))
    assert "barge_in" not in line.hooks.kinds(), "80 ms of speech is not enough yet"
    await line.speak(6)
    assert line.barged_at == 10 and line.hooks.calls[-1] == ("barge_in", "words")


async def test_a_backchannel_that_goes_on_into_a_question_barges_in_when_the_words_say_so() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(5)
    await line.turns.on_transcript(words("okay", final=False, end_s=5.0))
    await line.speak(20)
    assert "barge_in" not in line.hooks.kinds()
    await line.turns.on_transcript(words("okay so about Friday", final=False, end_s=5.5))
    assert line.hooks.calls[-1] == ("barge_in", "words")


async def test_words_the_vad_did_not_hear_barge_in_by_the_recognizers_timing() -> None:
    hooks = Hooks(since=0.0)
    turns = detector(hooks)
    await turns.on_transcript(words("so", final=False, end_s=5.0))            # start_s = 4.0: a second
    assert hooks.calls[-1] == ("barge_in", "words")


async def test_a_backchannel_while_zylin_is_silent_is_an_ordinary_turn() -> None:
    hooks = Hooks()
    await detector(hooks).on_transcript(words("Okay.", speech_final=True))
    assert [t[1] for t in hooks.turns()] == ["Okay."]
    assert "ignored" not in hooks.kinds()


async def test_a_backchannel_with_more_words_in_the_same_turn_is_answered() -> None:
    hooks = Hooks(since=0.0)
    turns = detector(hooks)
    await turns.on_transcript(words("Right", end_s=5.0))
    await turns.on_transcript(words("and is there parking", speech_final=True, end_s=6.0))
    assert [t[1] for t in hooks.turns()] == ["Right and is there parking"]
    assert ("barge_in", "words") in hooks.calls


async def test_when_zylin_finishes_during_the_callers_speech_it_is_the_callers_turn() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(4)
    line.hooks.since = None              # the reply's last mark came back
    await line.speak(20)
    assert "barge_in" not in line.hooks.kinds() and line.ignored() == []


@pytest.mark.parametrize(("text", "kind"), [
    ("Mm-hmm.", Words.BACKCHANNEL), ("mhm", Words.BACKCHANNEL), ("MMMM", Words.BACKCHANNEL),
    ("Uh-huh!", Words.BACKCHANNEL), ("uh huh", Words.BACKCHANNEL), ("Okay, okay.", Words.BACKCHANNEL),
    ("Yeah, right.", Words.BACKCHANNEL), ("I see.", Words.BACKCHANNEL), ("Got it", Words.BACKCHANNEL),
    ("Wait", Words.INTERRUPTING), ("oh, sorry", Words.INTERRUPTING), ("Hold on", Words.INTERRUPTING),
    ("No.", Words.INTERRUPTING), ("Excuse me?", Words.INTERRUPTING),
    ("Sorry, how much is a cleaning?", Words.INTERRUPTING),
    ("Mhmm.", Words.BACKCHANNEL), ("Uh-uh.", Words.INTERRUPTING), ("nuh-uh", Words.INTERRUPTING),
    ("Mm-mm.", Words.INTERRUPTING),   # Deepgram's spellings with filler_words: "mhmm" yes, the rest no
    ("yes", Words.OTHER), ("um", Words.OTHER), ("Okay so about Friday", Words.OTHER), ("", Words.OTHER),
    ("I see a problem", Words.OTHER),
])
def test_words_over_zylin_are_listening_asking_or_talking(text: str, kind: Words) -> None:
    assert classify(text) is kind


def test_words_are_compared_without_case_punctuation_or_long_mms() -> None:
    assert normalize("Mm-HMM... Okay!") == ["mhm", "okay"]
    assert normalize("Hmmm?") == ["mhm"]
# --- Flux's own turn events ---------------------------------------------------------------------

async def test_a_flux_turn_start_over_a_reply_is_judged_like_the_vad_s_speech_start() -> None:
    hooks = Hooks(since=1.0)
    turns = detector(hooks)
    await turns.on_turn_started()
    assert hooks.calls == [("active",)], "a candidate: judged as an overlap, not a barge-in yet"
    await turns.on_transcript(words("Wait", final=False, end_s=5.0))
    assert hooks.calls[-1] == ("barge_in", "interrupting word")


async def test_a_flux_turn_start_does_not_restart_the_overlap_the_vad_opened() -> None:
    line = Line(Hooks(since=0.0))
    await line.speak(MIN_SPEECH_MS // 20 - 1)
    await line.turns.on_turn_started()   # Flux hears the same speech a little later
    await line.speak(1)
    assert line.barged_at == MIN_SPEECH_MS // 20, "timed from the VAD's onset, not from StartOfTurn"


async def test_an_eager_end_speculates_and_the_turn_s_end_hands_the_turn_over() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await turns.on_eager_turn_end(EagerTurnEnd("I'd like to book a cleaning."))
    await turns.on_turn_ended(TurnEnded("I'd like to book a cleaning."))
    assert hooks.kinds() == ["speculate", "active", "turn"]
    assert hooks.turns()[0][1] == "I'd like to book a cleaning."


async def test_a_resumed_turn_drops_the_speculation() -> None:
    hooks = Hooks()
    turns = detector(hooks)
    await turns.on_eager_turn_end(EagerTurnEnd("I'd like to book"))
    turns.on_turn_resumed()
    assert hooks.kinds() == ["speculate", "drop"]


async def test_no_speculation_while_zylin_is_audible_nor_on_no_words() -> None:
    hooks = Hooks(since=1.0)
    await detector(hooks).on_eager_turn_end(EagerTurnEnd("Thanks."))
    quiet = Hooks()
    await detector(quiet).on_eager_turn_end(EagerTurnEnd("  "))
    assert hooks.calls == [] and quiet.calls == []


async def test_a_turn_that_ends_without_words_or_while_no_turns_are_taken_drops_the_speculation() -> None:
    hooks = Hooks()
    await detector(hooks).on_turn_ended(TurnEnded(""))
    ending = Hooks(taking=False)
    await detector(ending).on_turn_ended(TurnEnded("Hello?"))
    assert hooks.kinds() == ["drop"] and ending.kinds() == ["active", "drop"]


# --- a caller pausing mid-sentence (services/receptionist/endings.py) ----------------------------------

HOLD_MS = 200   # 10 frames of silence


def holding(hooks: Hooks, hold_ms: int = HOLD_MS) -> TurnDetector:
    vad = EnergyVad(500, start_frames=START_FRAMES, end_silence_frames=3)
    return TurnDetector(vad, hooks, person_request=PERSON, min_speech_ms=MIN_SPEECH_MS, hold_unfinished_ms=hold_ms)


SPEECH = [LOUD] * 5 + [QUIET] * 3   # speech, then the VAD's speech end (the recognizer finalizes)


async def test_a_caller_who_hesitates_and_goes_on_within_the_hold_makes_one_turn() -> None:
    hooks = Hooks()
    turns = holding(hooks)
    await frames(turns, SPEECH, start=20.0)
    await turns.on_transcript(words("I'd like to book um", speech_final=True))
    await frames(turns, [QUIET] * 9, start=40.0)  # a pause shorter than the hold
    assert hooks.turns() == [] and turns.mid_turn
    await frames(turns, SPEECH, start=60.0)  # they go on
    await turns.on_transcript(words("on Thursday", speech_final=True))
    await frames(turns, [QUIET] * 20, start=80.0)
    assert [t[1] for t in hooks.turns()] == ["I'd like to book um on Thursday"]


async def test_an_unfinished_turn_closes_at_the_end_of_the_hold_with_what_was_said() -> None:
    hooks = Hooks()
    turns = holding(hooks)
    await frames(turns, SPEECH, start=10.0)

    await turns.on_transcript(words("I'd like to book on", speech_final=True))
    await turns.on_utterance_end()                        # the recognizer's second close: the hold runs on
    await frames(turns, [QUIET] * 9, start=100.0)
    assert hooks.turns() == []
    await frames(turns, [QUIET], start=120.0)  # the 10th silent frame: the hold's end
    (_, text, speech_end, _), = hooks.turns()
    assert text == "I'd like to book on"
    assert speech_end == pytest.approx(10.08)             # the last voiced frame: asr_ms counts the hold
    await frames(turns, [QUIET] * 20, start=140.0)
    assert len(hooks.turns()) == 1 and not turns.mid_turn


async def test_a_sound_without_words_during_the_hold_starts_its_count_over() -> None:
    hooks = Hooks()
    turns = holding(hooks)
    await turns.on_transcript(words("and", speech_final=True))
    await frames(turns, [QUIET] * 5 + SPEECH + [QUIET] * 9, start=160.0)  # a cough: no words follow it
    assert hooks.turns() == []
    await frames(turns, [QUIET], start=180.0)
    assert [t[1] for t in hooks.turns()] == ["and"]


async def test_a_finished_sentence_closes_at_once() -> None:
    hooks = Hooks()
    await holding(hooks).on_transcript(words("Book me on Thursday.", speech_final=True))
    assert [t[1] for t in hooks.turns()] == ["Book me on Thursday."]


async def test_a_hold_of_zero_closes_an_unfinished_turn_at_once() -> None:
    hooks = Hooks()
    await holding(hooks, hold_ms=0).on_transcript(words("I'd like to book um", speech_final=True))
    assert [t[1] for t in hooks.turns()] == ["I'd like to book um"]


async def test_pressing_zero_is_not_held() -> None:
    hooks = Hooks()
    turns = holding(hooks)
    await turns.on_transcript(words("I want to speak to", speech_final=True))
    assert hooks.turns() == []
    await turns.on_dtmf("0")
    assert [t[1] for t in hooks.turns()] == [f"I want to speak to {PERSON}"]
    await frames(turns, [QUIET] * 20, start=140.0)
    assert len(hooks.turns()) == 1


async def test_a_flux_end_of_turn_is_not_held() -> None:
    hooks = Hooks()
    await holding(hooks).on_turn_ended(TurnEnded("I'd like to book um"))
    assert [t[1] for t in hooks.turns()] == ["I'd like to book um"]


async def test_a_backchannel_over_the_reply_is_not_held() -> None:
    hooks = Hooks(since=0.0)
    await holding(hooks).on_transcript(words("hmm", speech_final=True))
    assert hooks.kinds() == ["active", "ignored"]


@pytest.mark.parametrize("text", ["um", "I'd like to book, um...", "Uh", "erm", "Hmm.", "tomorrow and",
                                  "for the", "I'd like", "Can I book it for", "with my"])
def test_endings_that_sound_unfinished(text: str) -> None:
    assert unfinished(text)


@pytest.mark.parametrize("text", ["", "mm-hm", "Mhm.", "Book me on Thursday.", "Who am I speaking to?",
                                  "hold on", "Hang on.", "I'd like that", "yes", "Thursday at 3"])
def test_endings_that_sound_finished(text: str) -> None:
    assert not unfinished(text)
