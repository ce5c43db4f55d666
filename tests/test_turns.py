"""Turn detection (services/orchestrator/turns.py) against recorded hooks: what the VAD, the
recognizer's transcripts, UtteranceEnd and a press of 0 make the engine do, and in what order."""

from __future__ import annotations

import struct
import time

import pytest

from services.asr.base import EagerTurnEnd, Transcript, TurnEnded
from services.audio.vad import EnergyVad
from services.orchestrator.turns import TurnDetector


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


def detector(hooks: Hooks) -> TurnDetector:
    return TurnDetector(EnergyVad(500, start_frames=2, end_silence_frames=3), hooks, person_request=PERSON)


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


async def test_speech_start_while_zylin_is_audible_is_a_barge_in() -> None:
    hooks = Hooks(since=0.0)
    await frames(detector(hooks), [LOUD, LOUD])
    assert hooks.calls == [("active",), ("barge_in", "voice")]


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
    await turns.on_transcript(words("thanks", end_s=4.9))   # said before the reply began
    assert "barge_in" not in hooks.kinds()
    await turns.on_transcript(words("wait", final=False, end_s=5.2))
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


# --- Flux's own turn events ---------------------------------------------------------------------

async def test_a_flux_turn_start_over_a_reply_takes_the_vad_s_barge_in_path() -> None:
    hooks = Hooks(since=1.0)
    await detector(hooks).on_turn_started()
    assert hooks.calls == [("active",), ("barge_in", "voice")]


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
