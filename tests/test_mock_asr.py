"""The mock recognizer hears timing in the audio and takes its words from the script."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from services.asr.base import SpeechNotUnderstood, SpeechStarted, Transcript, UtteranceEnd
from services.asr.mock import MockRecognizer, script_for_call
from services.receptionist.lines import DEMO_NOTICE, DEMO_REMINDER, IDLE_GOODBYE, IDLE_PROMPT
from services.simulator.caller import CallerLine
from tests.conftest import running_zylin

RATE = 8000
FRAME = 160  # samples in 20 ms
VOICE = (4000 * np.sin(2 * np.pi * 180 * np.arange(FRAME) / RATE)).astype("<i2").tobytes()
SILENCE = np.zeros(FRAME, dtype="<i2").tobytes()
assert len(VOICE) == len(SILENCE) == 320

LINE = "I'd like to book a cleaning for next Tuesday morning please"


def recognizer(script: list[str], endpointing_ms: int = 300, delay_ms: float = 0.0,
               utterance_end_ms: int = 1000) -> MockRecognizer:
    return MockRecognizer(script, endpointing_ms=endpointing_ms, delay_ms=delay_ms,
                          threshold_rms=500, utterance_end_ms=utterance_end_ms,
                          demo_notice=DEMO_NOTICE, demo_reminder=DEMO_REMINDER)


async def feed(rec: MockRecognizer, *parts: tuple[str, int]) -> None:
    """Send ("voice" | "silence", milliseconds) pieces as 20 ms frames."""
    for kind, ms in parts:
        frame = VOICE if kind == "voice" else SILENCE
        for _ in range(ms // 20):
            await rec.send(frame)


async def all_events(rec: MockRecognizer) -> list:
    """Close the recognizer and collect everything it emitted."""
    await rec.close()

    async def collect() -> list:
        return [event async for event in rec.events()]

    return await asyncio.wait_for(collect(), timeout=5)


def finals(events: list) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and e.is_final]


def interims(events: list) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and not e.is_final]


async def test_a_caller_who_stops_talking_gets_events_in_deepgram_order_and_stream_time() -> None:
    rec = recognizer([LINE])
    await rec.start()
    await feed(rec, ("silence", 200), ("voice", 2000), ("silence", 1500))
    events = await all_events(rec)

    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "UtteranceEnd"
    assert kinds.index("UtteranceEnd") > max(i for i, e in enumerate(events) if isinstance(e, Transcript))
    (started,) = [e for e in events if isinstance(e, SpeechStarted)]
    assert started.at_s == pytest.approx(0.2)
    (final,) = finals(events)
    assert final.text == LINE and final.speech_final
    assert (final.start_s, final.end_s) == (pytest.approx(0.2), pytest.approx(2.2))
    (end,) = [e for e in events if isinstance(e, UtteranceEnd)]
    assert end.last_word_end_s == pytest.approx(2.2)
    # Interims come before the final, during speech, and are not turn-closing.
    assert events.index(final) > max(events.index(e) for e in interims(events))
    assert all(not e.speech_final and 0.2 < e.end_s <= 2.2 for e in interims(events))


async def test_interim_results_reveal_the_line_progressively_every_300_ms_of_speech() -> None:
    rec = recognizer([LINE])
    await rec.start()
    await feed(rec, ("voice", 2400), ("silence", 400))
    partials = interims(await all_events(rec))

    assert len(partials) == 8  # 2.4 s of speech / 300 ms
    counts = [len(p.text.split()) for p in partials]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert counts[0] < len(LINE.split())
    assert all(LINE.startswith(p.text) for p in partials)


async def test_no_final_until_the_endpoint_silence_has_passed() -> None:
    early = recognizer([LINE])
    await early.start()
    await feed(early, ("voice", 1000), ("silence", 280))
    assert finals(await all_events(early)) == []

    on_time = recognizer([LINE])
    await on_time.start()
    await feed(on_time, ("voice", 1000), ("silence", 300))
    assert [f.text for f in finals(await all_events(on_time))] == [LINE]


async def test_utterance_end_waits_for_its_silence_after_the_last_word() -> None:
    early = recognizer([LINE])
    await early.start()
    await feed(early, ("voice", 1000), ("silence", 980))
    assert not any(isinstance(e, UtteranceEnd) for e in await all_events(early))

    on_time = recognizer([LINE])
    await on_time.start()
    await feed(on_time, ("voice", 1000), ("silence", 1000), ("silence", 3000))
    ends = [e for e in await all_events(on_time) if isinstance(e, UtteranceEnd)]
    assert [e.last_word_end_s for e in ends] == [pytest.approx(1.0)]  # once, not per silent second


async def test_finalize_closes_the_turn_before_the_endpoint_and_never_repeats_the_final() -> None:
    rec = recognizer([LINE, "second line"], endpointing_ms=800)
    await rec.start()
    await feed(rec, ("voice", 1000), ("silence", 100))
    await rec.finalize()
    await rec.finalize()
    await feed(rec, ("silence", 1200))
    events = await all_events(rec)

    (final,) = finals(events)
    assert final.text == LINE and final.speech_final and final.end_s == pytest.approx(1.0)
    assert sum(isinstance(e, UtteranceEnd) for e in events) == 1


async def test_finalize_with_nobody_speaking_emits_nothing() -> None:
    rec = recognizer([LINE])
    await rec.start()
    await feed(rec, ("silence", 500))
    await rec.finalize()
    assert await all_events(rec) == []


async def test_each_speech_segment_takes_the_next_script_line_until_the_script_runs_out(caplog) -> None:
    rec = recognizer(["hello", "what are your hours"])
    await rec.start()
    with caplog.at_level(logging.DEBUG, logger="zylin.asr.mock"):
        await feed(rec, ("voice", 600), ("silence", 400), ("voice", 800), ("silence", 400),
                   ("voice", 700), ("silence", 400))
    events = await all_events(rec)

    assert [f.text for f in finals(events)] == ["hello", "what are your hours"]
    assert sum(isinstance(e, SpeechStarted) for e in events) == 3  # the third is heard, not understood
    assert "script is exhausted" in caplog.text
    assert not any(isinstance(e, SpeechNotUnderstood) for e in events)  # a test ran out, not a demo


async def test_a_click_or_a_short_blip_does_not_use_up_a_script_line() -> None:
    rec = recognizer(["first", "second"])
    await rec.start()
    await feed(rec, ("voice", 20), ("silence", 400),   # one voiced frame: not speech at all
               ("voice", 60), ("silence", 400),        # speech start, but under 100 ms
               ("voice", 500), ("silence", 400))
    events = await all_events(rec)

    assert [f.text for f in finals(events)] == ["first"]
    assert [s.at_s for s in events if isinstance(s, SpeechStarted)] == [pytest.approx(0.42),
                                                                          pytest.approx(0.88)]


async def test_audio_in_odd_sized_chunks_keeps_the_same_stream_clock() -> None:
    rec = recognizer([LINE])
    await rec.start()
    audio = SILENCE * 10 + VOICE * 50 + SILENCE * 20
    for at in range(0, len(audio), 123):
        await rec.send(audio[at:at + 123])
    (final,) = finals(await all_events(rec))
    assert (final.start_s, final.end_s) == (pytest.approx(0.2), pytest.approx(1.2))


async def test_recognition_delay_holds_the_final_back_without_blocking_send() -> None:
    rec = recognizer([LINE], delay_ms=300)
    await rec.start()
    events = rec.events()
    await feed(rec, ("voice", 1000))

    started = time.monotonic()
    await feed(rec, ("silence", 300))
    assert time.monotonic() - started < 0.1  # send() never waits for the delay

    seen = []
    while not (seen and isinstance(seen[-1], Transcript) and seen[-1].is_final):
        seen.append(await asyncio.wait_for(anext(events), timeout=5))
    waited = time.monotonic() - started
    assert 0.25 <= waited < 3
    assert seen[-1].text == LINE and seen[-1].end_s == pytest.approx(1.0)
    await rec.close()


async def test_events_after_a_delayed_final_keep_their_order() -> None:
    rec = recognizer(["one", "two"], delay_ms=200, utterance_end_ms=1000)
    await rec.start()
    await feed(rec, ("voice", 400), ("silence", 1100), ("voice", 400), ("silence", 400))
    events = rec.events()
    got = []
    while len([e for e in got if isinstance(e, Transcript) and e.is_final]) < 2:
        got.append(await asyncio.wait_for(anext(events), timeout=5))
    await rec.close()

    order = [type(e).__name__ if not isinstance(e, Transcript) else ("final" if e.is_final else "interim")
             for e in got]
    assert order == ["SpeechStarted", "interim", "final", "UtteranceEnd",
                     "SpeechStarted", "interim", "final"]


async def test_events_end_after_close_and_late_audio_is_ignored() -> None:
    rec = recognizer([LINE])
    await rec.start()
    events = rec.events()
    await rec.close()
    await feed(rec, ("voice", 1000), ("silence", 1000))
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), timeout=5)


async def test_audio_before_start_is_a_mistake() -> None:
    rec = recognizer([LINE])
    with pytest.raises(RuntimeError):
        await rec.send(VOICE)


def test_a_call_can_bring_its_own_script() -> None:
    params = {"mockScript": '["hi there", "what are your hours?"]'}
    assert script_for_call(params, ["default"]) == ["hi there", "what are your hours?"]


def test_a_call_without_a_script_uses_the_default() -> None:
    default = ["hello", "bye"]
    script = script_for_call({"callerName": "x"}, default)
    assert script == default
    script.pop()
    assert default == ["hello", "bye"]  # the caller's copy, not the settings' list


@pytest.mark.parametrize("raw", ['["unterminated', '{"a": 1}', '["ok", 3]', '"just text"'])
def test_a_broken_script_falls_back_to_the_default_with_a_warning(raw: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="zylin.asr.mock"):
        assert script_for_call({"mockScript": raw}, ["default"]) == ["default"]
    assert "mockScript" in caplog.text


# --- no script at all: a real caller on a demo line ---------------------------------------------------

def notices(events: list) -> list[SpeechNotUnderstood]:
    return [e for e in events if isinstance(e, SpeechNotUnderstood)]


async def test_without_a_script_each_utterance_is_answered_by_a_demo_notice_not_words() -> None:
    rec = recognizer([])
    await rec.start()
    await feed(rec, ("silence", 200), ("voice", 800), ("silence", 500), ("voice", 600), ("silence", 500))
    events = await all_events(rec)

    assert [n.notice for n in notices(events)] == [DEMO_NOTICE, DEMO_REMINDER]
    first = notices(events)[0]
    assert (first.start_s, first.end_s) == (pytest.approx(0.2), pytest.approx(1.0))
    assert not any(isinstance(e, (Transcript, UtteranceEnd)) for e in events)
    assert "Deepgram key" in DEMO_NOTICE


async def test_without_a_script_a_click_is_no_utterance_but_finalize_closes_one() -> None:
    rec = recognizer([])
    await rec.start()
    await feed(rec, ("voice", 60), ("silence", 500))      # a blip: under 100 ms of voice
    await feed(rec, ("voice", 400))
    await rec.finalize()                                 # the engine's VAD heard the end first
    events = await all_events(rec)
    assert [n.notice for n in notices(events)] == [DEMO_NOTICE]


async def test_a_real_caller_on_a_line_without_a_script_hears_it_is_a_demo_and_is_not_hung_up_on():
    # A short idle timeout: a caller whose words go unanswered would be asked "Are you still
    # there?" within 2 s of speaking; the demo notice must come first, every time they speak.
    async with running_zylin(idle_timeout_s=2.0, mock_asr_script="") as zylin:
        lines = [CallerLine("Hello, I'd like to book a cleaning please."), CallerLine("Hello? Anyone there?")]
        result = await zylin.caller().call(lines, mock_script=False)
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert not result.timeouts and not result.closed_by_server
    replies = [t for t in record["turns"] if t.speaker == "zylin"][1:]
    assert [t.text for t in replies] == [DEMO_NOTICE, DEMO_REMINDER]
    assert all(t.heard_text == t.text and not t.interrupted for t in replies)   # heard in full
    assert not any(t.text in (IDLE_PROMPT, IDLE_GOODBYE) for t in record["turns"])
    assert [t for t in record["turns"] if t.speaker == "caller"] == []          # nothing was "understood"
    assert record["ended"] != "zylin ended the call"
