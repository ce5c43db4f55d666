"""The small parts of a turn: speakable sentence pieces, latency accounting, and local VAD."""

from __future__ import annotations

import re
import struct

import pytest

from services.audio.vad import EnergyVad, VadEvent
from services.orchestrator.chunker import SentenceChunker
from services.orchestrator.latency import TurnLatency


def speak(text: str, chunker: SentenceChunker | None = None) -> tuple[list[str], list[list[str]]]:
    """Feed `text` word by word like a streaming model; return all pieces and what each push gave."""
    chunker = chunker or SentenceChunker()
    words = text.split(" ")
    per_push = [chunker.push(w if i == 0 else " " + w) for i, w in enumerate(words)]
    pieces = [p for batch in per_push for p in batch]
    rest = chunker.flush()
    if rest is not None:
        pieces.append(rest)
    return pieces, per_push


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- SentenceChunker ------------------------------------------------------------------------------

def test_sentences_are_released_as_soon_as_the_next_word_starts() -> None:
    text = "Sure! We can see you on Thursday. Would that work? Great."
    pieces, per_push = speak(text)
    assert pieces == ["Sure!", "We can see you on Thursday.", "Would that work?", "Great."]
    words = text.split(" ")
    assert per_push[words.index("We")] == ["Sure!"]        # not held back until the end
    assert per_push[words.index("Would")] == ["We can see you on Thursday."]


def test_a_title_or_a_time_does_not_end_the_sentence() -> None:
    pieces, _ = speak("Dr. Smith can see you at 3.30 on Thursday. Mrs. Jones is away e.g. on Friday.")
    assert pieces == ["Dr. Smith can see you at 3.30 on Thursday.", "Mrs. Jones is away e.g. on Friday."]


def test_a_word_that_merely_ends_like_an_abbreviation_still_ends_the_sentence() -> None:
    pieces, _ = speak("Cleaning is our most popular request. Would you like one? "
                      "We fixed those problems. Anything else?")
    assert pieces == ["Cleaning is our most popular request.", "Would you like one?",
                      "We fixed those problems.", "Anything else?"]


def test_flush_returns_the_unfinished_rest_once() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Let me check that") == []
    assert chunker.push(" for you") == []
    assert chunker.flush() == "Let me check that for you"
    assert chunker.flush() is None


def test_a_long_clause_is_split_at_a_comma_after_about_80_characters() -> None:
    text = ("I can book you in on Thursday at half past three in the afternoon with our hygienist, "
            "who has a free slot then and will also check the filling while you are there.")
    pieces, _ = speak(text)
    assert len(pieces) >= 2
    assert pieces[0].endswith("hygienist,")
    assert 60 <= len(pieces[0]) <= 100
    assert squash("".join(pieces)) == squash(text)


def test_a_short_clause_is_not_split_at_its_comma() -> None:
    pieces, _ = speak("Yes, we are open, and we have parking.")
    assert pieces == ["Yes, we are open, and we have parking."]


@pytest.mark.parametrize("text", [
    "Hi. Ok. Yes.",
    "Thanks for calling! How can I help?   ",
    "...   ! ? Well, then.",
    "We open at 9 a.m. and close at 5 p.m. See you then, okay? Bye!",
    "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, thirteen, fourteen.",
])
def test_pieces_are_never_empty_and_add_up_to_the_input(text: str) -> None:
    pieces, _ = speak(text)
    assert all(p.strip() for p in pieces)
    assert all(p == p.strip() for p in pieces)
    assert squash("".join(pieces)) == squash(text)


# --- TurnLatency ------------------------------------------------------------------------------------

def full_turn() -> TurnLatency:
    return TurnLatency(speech_end=100.000, transcript_at=100.250, llm_request_at=100.260,
                       llm_first_at=100.660, tool_s=0.120, tool_before_audio_s=0.120,
                       tts_request_at=100.800,
                       tts_first_at=100.950, first_audio_at=100.990, heard_at=101.300)


def test_each_stage_gets_its_own_duration() -> None:
    t = full_turn()
    assert t.asr_ms == pytest.approx(250.0)
    assert t.llm_ttft_ms == pytest.approx(400.0)
    assert t.tool_ms == pytest.approx(120.0)
    assert t.tts_ttfb_ms == pytest.approx(150.0)
    assert t.first_audio_ms == pytest.approx(990.0)
    assert t.heard_ms == pytest.approx(1300.0)


def test_a_tool_that_runs_while_earlier_words_play_is_not_counted_against_overhead() -> None:
    t = TurnLatency(speech_end=10.0, transcript_at=10.2, llm_request_at=10.2, llm_first_at=10.3,
                    tts_request_at=10.3, tts_first_at=10.35, first_audio_at=10.36)
    t.add_tool_run(10.34, 10.50)   # "Let me check." is already playing for most of the lookup
    assert t.tool_ms == pytest.approx(160.0)
    assert t.tool_before_audio_s == pytest.approx(0.02)
    assert t.overhead_ms == pytest.approx(360.0 - 200.0 - 100.0 - 20.0 - 50.0)


def test_overhead_is_end_to_end_minus_the_providers_and_tools() -> None:
    t = full_turn()
    assert t.overhead_ms == pytest.approx(990.0 - 250.0 - 400.0 - 120.0 - 150.0)
    assert t.as_dict()["overhead_ms"] == t.overhead_ms
    assert set(t.as_dict()) == {"asr_ms", "llm_ttft_ms", "tool_ms", "tts_ttfb_ms",
                                "first_audio_ms", "heard_ms", "overhead_ms"}


@pytest.mark.parametrize(("missing", "none_fields"), [
    ("speech_end", {"asr_ms", "first_audio_ms", "heard_ms", "overhead_ms"}),
    ("transcript_at", {"asr_ms"}),
    ("llm_request_at", {"llm_ttft_ms"}),
    ("llm_first_at", {"llm_ttft_ms"}),
    ("tts_request_at", {"tts_ttfb_ms"}),
    ("tts_first_at", {"tts_ttfb_ms"}),
    ("first_audio_at", {"first_audio_ms", "overhead_ms"}),
    ("heard_at", {"heard_ms"}),
])
def test_a_missing_instant_leaves_only_its_durations_unknown(missing: str, none_fields: set[str]) -> None:
    t = full_turn()
    setattr(t, missing, None)
    measured = t.as_dict()
    assert {k for k, v in measured.items() if v is None} == none_fields


def test_an_empty_turn_measures_nothing() -> None:
    measured = TurnLatency().as_dict()
    assert measured.pop("tool_ms") == 0.0
    assert set(measured.values()) == {None}


# --- EnergyVad ---------------------------------------------------------------------------------------

LOUD, QUIET = 2000, 50
FRAME = 0.02


def feed(vad: EnergyVad, energies: list[int], start: float = 0.0) -> list[tuple[int, VadEvent]]:
    events = []
    for i, energy in enumerate(energies):
        event = vad.update(struct.pack("<h", energy) * 160, start + i * FRAME)  # a frame of RMS `energy`
        if event is not None:
            events.append((i, event))
    return events


def test_speech_starts_after_start_frames_voiced_frames_in_a_row() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=3, end_silence_frames=5)
    assert feed(vad, [QUIET, LOUD, LOUD, LOUD, LOUD]) == [(3, VadEvent.SPEECH_START)]
    assert vad.speaking is True


def test_a_short_blip_does_not_start_speech() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=3, end_silence_frames=5)
    assert feed(vad, [LOUD, LOUD, QUIET, LOUD, LOUD, QUIET, QUIET]) == []
    assert vad.speaking is False


def test_energy_exactly_at_the_threshold_counts_as_voice() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=2, end_silence_frames=5)
    assert feed(vad, [500, 500]) == [(1, VadEvent.SPEECH_START)]


def test_speech_ends_after_end_silence_frames_silent_frames_in_a_row() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=2, end_silence_frames=4)
    energies = [LOUD] * 5 + [QUIET] * 3 + [LOUD] + [QUIET] * 4 + [QUIET] * 3
    events = feed(vad, energies)
    # The pause of three frames is not the end; four silent frames after the last word are.
    assert events == [(1, VadEvent.SPEECH_START), (12, VadEvent.SPEECH_END)]
    assert vad.speaking is False


def test_last_voiced_at_is_the_arrival_time_of_the_last_voiced_frame() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=2, end_silence_frames=3)
    energies = [QUIET, LOUD, LOUD, LOUD, QUIET, QUIET, QUIET, QUIET]
    feed(vad, energies, start=50.0)
    assert vad.last_voiced_at == pytest.approx(50.0 + 3 * FRAME)  # frame 3, not the end event's time


def test_the_vad_can_hear_a_second_utterance() -> None:
    vad = EnergyVad(threshold_rms=500, start_frames=2, end_silence_frames=2)
    events = feed(vad, [LOUD, LOUD, QUIET, QUIET, LOUD, LOUD, QUIET, QUIET])
    assert [e for _, e in events] == [VadEvent.SPEECH_START, VadEvent.SPEECH_END,
                                      VadEvent.SPEECH_START, VadEvent.SPEECH_END]
