"""The Deepgram recognizer, with the real SDK, against the fake Deepgram on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from deepgram.environment import DeepgramClientEnvironment
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.asr.base import RecognizerFailed, SpeechStarted, Transcript, UtteranceEnd
from services.asr.deepgram import DeepgramRecognizer, deepgram_environment
from services.providers import deepgram_arguments
from services.settings import Settings
from services.simulator.caller import CallerLine
from tests.conftest import running_zylin
from tests.factories import PROVIDER_KEY, dental_profile, plain_settings
from tests.fakes.deepgram_server import FakeDeepgram
from tests.leftovers import nothing_left_behind

PROFILE = dental_profile(services=[{"name": "Cleaning", "duration_min": 45},   # the keyterms the stream asks for
                                   {"name": "Teeth Whitening", "duration_min": 60}])
FRAME = 320  # 20 ms of PCM16 at 8 kHz


def frames(count: int, value: int = 1) -> list[bytes]:
    return [int(value).to_bytes(2, "little", signed=True) * (FRAME // 2) for _ in range(count)]


def voice(seconds: float) -> list[bytes]:
    """A 220 Hz tone, loud enough for the scripted fake to hear as speech, in 20 ms frames."""
    t = np.arange(int(8000 * seconds)) / 8000
    audio = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    return [audio[i:i + FRAME] for i in range(0, len(audio), FRAME)]


def settings_for(fake: FakeDeepgram, **overrides) -> Settings:
    return plain_settings(deepgram_api_key=PROVIDER_KEY, deepgram_base_url=fake.url, **overrides)


def recognizer_for(settings: Settings, **options) -> DeepgramRecognizer:
    """The recognizer services/providers.py builds from these settings and PROFILE."""
    return DeepgramRecognizer(**deepgram_arguments(settings, PROFILE), **options)


@pytest.fixture
async def recognizers():
    made: list[DeepgramRecognizer] = []

    async def make(fake: FakeDeepgram, settings: Settings | None = None, **kwargs) -> DeepgramRecognizer:
        options = {"retry_delays_s": (0.05,), "give_up_after_s": 1.0, "close_timeout_s": 1.0, **kwargs}
        recognizer = recognizer_for(settings or settings_for(fake), **options)
        made.append(recognizer)
        await recognizer.start()
        return recognizer

    yield make
    for recognizer in made:
        await recognizer.close()


class Events:
    """Reads a recognizer's events with a bound on every wait."""

    def __init__(self, recognizer: DeepgramRecognizer) -> None:
        self._iter = recognizer.events()

    async def next(self, timeout: float = 5.0):
        return await asyncio.wait_for(anext(self._iter), timeout)

    async def rest(self, timeout: float = 5.0) -> list:
        async def drain():
            return [e async for e in self._iter]
        return await asyncio.wait_for(drain(), timeout)


# --- opening the stream -----------------------------------------------------------------------------
async def test_the_stream_opens_with_the_documented_query_and_the_key_as_a_token(deepgram, recognizers):
    await recognizers(deepgram)
    session = await deepgram.wait_session(0)

    assert session.request.path == "/v1/listen"
    assert session.headers["authorization"] == "Token test-key"
    q = session.query
    assert q["model"] == ["nova-3"]
    assert q["encoding"] == ["linear16"] and q["sample_rate"] == ["8000"] and q["channels"] == ["1"]
    assert q["interim_results"] == ["true"] and q["vad_events"] == ["true"] and q["smart_format"] == ["true"]
    assert q["endpointing"] == ["300"] and q["utterance_end_ms"] == ["1000"]
    assert q["keyterm"] == ["Bright Smile Dental", "Cleaning", "Teeth Whitening"]
    assert q["filler_words"] == ["true"]   # "um" is kept: a turn ending on one is held (endings.py)


async def test_endpointing_and_utterance_end_follow_the_settings(deepgram, recognizers):
    await recognizers(deepgram, settings_for(deepgram, deepgram_endpointing_ms=450,
                                             deepgram_utterance_end_ms=1500))
    session = await deepgram.wait_session(0)
    assert session.query["endpointing"] == ["450"] and session.query["utterance_end_ms"] == ["1500"]


async def test_keyterms_are_only_sent_to_models_that_take_them(deepgram, recognizers):
    # The fake, like Deepgram, rejects keyterm on a pre-Nova-3 model with 400.
    await recognizers(deepgram, settings_for(deepgram, deepgram_model="nova-2-phonecall"))
    session = await deepgram.wait_session(0)
    assert "keyterm" not in session.query and session.query["model"] == ["nova-2-phonecall"]


@pytest.mark.parametrize("base_url, http, ws", [
    # No setting: the SDK's own production environment (built, never connected to).
    ("", DeepgramClientEnvironment.PRODUCTION.base, DeepgramClientEnvironment.PRODUCTION.production),
    ("https://dg.example.com", "https://dg.example.com", "wss://dg.example.com"),
    ("wss://dg.example.com/", "https://dg.example.com", "wss://dg.example.com"),
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080", "ws://127.0.0.1:8080"),
])
def test_the_base_url_setting_points_both_rest_and_websocket_at_one_host(base_url, http, ws):
    environment = deepgram_environment(base_url)
    assert (environment.base, environment.production) == (http, ws)


# --- audio -----------------------------------------------------------------------------------------------
async def test_audio_reaches_deepgram_whole_and_in_order(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    sent = [bytes([i]) * FRAME for i in range(50)]
    for frame in sent:
        await recognizer.send(frame)
    session = await deepgram.wait_session(0)
    await session.wait_audio_bytes(len(sent) * FRAME)
    assert bytes(session.audio) == b"".join(sent)


async def test_audio_sent_before_the_socket_opens_is_not_lost(deepgram, recognizers):
    deepgram.refuse(503, count=1)  # the first attempt fails, so audio must wait for the second
    recognizer = await recognizers(deepgram)
    for frame in frames(10, value=7):
        await recognizer.send(frame)
    session = await deepgram.wait_session(0)
    await session.wait_audio_bytes(10 * FRAME)
    assert bytes(session.audio) == b"".join(frames(10, value=7))


async def test_a_quiet_stream_is_kept_open_with_keepalives(recognizers):
    # Deepgram closes a stream that hears nothing for ~10 s; the fake does it after 0.5 s.
    async with FakeDeepgram(idle_timeout_s=0.5) as fake:
        recognizer = await recognizers(fake, keepalive_s=0.15)
        session = await fake.wait_session(0)
        await session.wait_control("KeepAlive", count=5)   # > 0.6 s of silence on the line
        assert not session.closed.is_set()
        assert set(session.controls) == {"KeepAlive"}
        assert recognizer.keepalives_sent >= 5
        await recognizer.send(frames(1)[0])
        await session.wait_audio_bytes(FRAME)


async def test_a_stream_without_keepalives_is_closed_by_the_fake_as_by_deepgram():
    async with FakeDeepgram(idle_timeout_s=0.3) as fake:
        settings = settings_for(fake)
        recognizer = recognizer_for(settings, keepalive_s=60, retry_delays_s=(0.05,), give_up_after_s=1.0)
        await recognizer.start()
        session = await fake.wait_session(0)
        await session.wait_closed()
        assert session.close_code == 1011
        again = await fake.wait_session(1)   # ... and the recognizer reconnected by itself
        await recognizer.send(frames(1, value=9)[0])
        await again.wait_audio_bytes(FRAME)  # and goes on carrying the call's audio
        await recognizer.close()


# --- events ------------------------------------------------------------------------------------------------
async def test_interim_and_final_results_become_transcripts(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_results("I'd like", is_final=False, start=1.0, duration=0.5, confidence=0.7)
    await session.send_results("I'd like a cleaning.", is_final=True, start=1.0, duration=1.25, confidence=0.93)
    await session.send_results("", is_final=True, speech_final=True, start=2.25, duration=0.3)

    assert await events.next() == Transcript("I'd like", False, False, 0.7, 1.0, 1.5)
    assert await events.next() == Transcript("I'd like a cleaning.", True, False, 0.93, 1.0, 2.25)
    # An endpoint with no words of its own still closes the caller's turn: as an utterance end
    # at the last word, since an empty transcript gives the engine nothing to act on.
    assert await events.next() == UtteranceEnd(2.25)


async def test_an_empty_answer_to_finalize_still_closes_the_open_turn_once(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_results("Do you take insurance?", is_final=True, start=0.2, duration=1.2)
    for frame in frames(10):                          # trailing audio: something to flush
        await recognizer.send(frame)
    await recognizer.finalize()
    await session.wait_until(lambda: any(m.get("from_finalize") for m in session.sent))
    assert session.sent[-1]["channel"]["alternatives"][0]["transcript"] == ""   # an empty answer
    await session.send_utterance_end(1.4)             # Deepgram's own, for the same words

    assert (await events.next()).text == "Do you take insurance?"
    assert await events.next() == UtteranceEnd(pytest.approx(1.4))
    await session.send_results("Thanks.", is_final=True, speech_final=True, start=3.0, duration=0.4)
    assert (await events.next()).text == "Thanks."   # nothing in between: closed once


async def test_speech_started_and_utterance_end_carry_call_time(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_speech_started(3.2)
    await session.send_results("Hello", is_final=True, start=3.2, duration=0.4)
    await session.send_utterance_end(3.6)

    assert await events.next() == SpeechStarted(3.2)
    assert (await events.next()).text == "Hello"
    assert await events.next() == UtteranceEnd(3.6)


async def test_an_utterance_end_after_speech_final_does_not_close_the_turn_twice(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_results("What are your hours?", is_final=True, speech_final=True, start=0.5, duration=1.5)
    await session.send_utterance_end(2.0)               # same utterance: suppressed
    await session.send_results("Thanks.", is_final=True, start=4.0, duration=0.5)
    await session.send_utterance_end(4.5)               # new words since: this one closes

    assert (await events.next()).speech_final
    assert (await events.next()).text == "Thanks."
    assert await events.next() == UtteranceEnd(4.5)


async def test_results_with_no_words_are_not_events(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_results("", is_final=False, start=0.0, duration=0.5)
    await session.send_results("", is_final=True, start=0.0, duration=1.0)
    await session.send_results("", is_final=True, speech_final=True, start=1.0, duration=0.2)
    await session.send_utterance_end(1.0)
    await session.send_metadata()
    await session.send_json({"type": "SomethingNew", "detail": 1})   # unknown kinds are skipped
    await session.send_results("Hi.", is_final=True, speech_final=True, start=2.0, duration=0.3)

    assert (await events.next()).text == "Hi."


async def test_metadata_and_errors_are_logged_not_reported(deepgram, recognizers, caplog):
    caplog.set_level(logging.INFO, logger="zylin.asr.deepgram")
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)

    await session.send_metadata()
    await session.send_json({"type": "Error", "variant": "SchemaError", "description": "bad message"})
    await session.send_speech_started(0.5)

    assert await events.next() == SpeechStarted(0.5)      # nothing came before it
    assert f"request {session.request_id}" in caplog.text
    assert "Deepgram error: SchemaError: bad message" in caplog.text


async def test_finalize_is_sent_in_order_and_its_answer_closes_the_turn(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)
    session.finalize_transcript = "Book me in for Tuesday."

    for frame in frames(25):
        await recognizer.send(frame)
    await recognizer.finalize()
    await session.wait_control("Finalize")

    # Finalize came after all the audio sent before it.
    assert isinstance(session.messages[-1], dict) and session.messages[-1]["type"] == "Finalize"
    assert len(session.audio) == 25 * FRAME
    answer = await events.next()
    assert answer.text == "Book me in for Tuesday."
    assert answer.is_final and answer.speech_final     # from_finalize: true closes the turn
    assert session.sent[-1]["from_finalize"] is True and session.sent[-1]["speech_final"] is False


async def test_close_sends_close_stream_and_ends_the_events(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)
    await recognizer.send(frames(1)[0])
    await session.wait_audio_bytes(FRAME)

    await recognizer.close()

    assert session.controls[-1] == "CloseStream"
    await session.wait_closed()
    assert session.close_code == 1000
    assert session.sent[-1]["type"] == "Metadata"
    assert await events.rest() == []


# --- failures -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("close_code", [None, 1011], ids=["network-drop", "server-error-close"])
async def test_a_dropped_stream_reconnects_and_resends_the_audio_that_came_meanwhile(
        deepgram, recognizers, close_code, caplog):
    caplog.set_level(logging.INFO, logger="zylin.asr.deepgram")
    recognizer = await recognizers(deepgram, retry_delays_s=(0.1,))
    events = Events(recognizer)
    first = await deepgram.wait_session(0)
    before = frames(50, value=1)              # 1.0 s of audio on the first connection
    for frame in before:
        await recognizer.send(frame)
    await first.wait_audio_bytes(50 * FRAME)

    deepgram.refuse(503, count=1)             # the first reconnect fails: audio must wait
    await first.drop(close_code)
    await deepgram.wait_attempts(2)
    meanwhile = [bytes([i + 1]) * FRAME for i in range(25)]   # 0.5 s while disconnected
    for frame in meanwhile:
        await recognizer.send(frame)

    second = await deepgram.wait_session(1)
    await second.wait_audio_bytes(25 * FRAME)
    assert bytes(second.audio) == b"".join(meanwhile)

    # Deepgram's clock restarts on the new connection; ours keeps counting from the call start.
    await second.send_speech_started(0.1)
    await second.send_results("Still there?", is_final=True, speech_final=True, start=0.1, duration=0.4)
    assert await events.next() == SpeechStarted(pytest.approx(1.1))
    transcript = await events.next()
    assert (transcript.start_s, transcript.end_s) == (pytest.approx(1.1), pytest.approx(1.5))
    assert "dropped" in caplog.text and "reconnected" in caplog.text


async def test_a_finalize_asked_for_while_disconnected_follows_the_buffered_audio(deepgram, recognizers):
    recognizer = await recognizers(deepgram, retry_delays_s=(0.1,))
    first = await deepgram.wait_session(0)
    deepgram.refuse(503, count=1)
    await first.drop()
    await deepgram.wait_attempts(2)
    for frame in frames(10):
        await recognizer.send(frame)
    await recognizer.finalize()

    second = await deepgram.wait_session(1)
    await second.wait_control("Finalize")
    assert len(second.audio) == 10 * FRAME
    assert isinstance(second.messages[-1], dict) and second.messages[-1]["type"] == "Finalize"


async def test_a_long_outage_keeps_only_the_newest_audio(deepgram, recognizers):
    recognizer = await recognizers(deepgram, backlog_s=0.5, retry_delays_s=(0.1,))
    events = Events(recognizer)
    first = await deepgram.wait_session(0)
    deepgram.refuse(503, count=1)
    await first.drop()
    await deepgram.wait_attempts(2)
    for i in range(50):                       # 1.0 s of audio, twice the backlog
        await recognizer.send(bytes([i]) * FRAME)

    second = await deepgram.wait_session(1)
    await second.wait_audio_bytes(25 * FRAME)
    assert bytes(second.audio) == b"".join(bytes([i]) * FRAME for i in range(25, 50))
    assert recognizer.dropped_audio_s == pytest.approx(0.5)
    await second.send_results("Hello?", is_final=True, start=0.0, duration=0.3)
    assert (await events.next()).start_s == pytest.approx(0.5)   # the kept audio began 0.5 s in


async def test_a_recognizer_that_cannot_connect_reports_failure(deepgram, recognizers):
    deepgram.refuse(503)
    recognizer = await recognizers(deepgram, give_up_after_s=0.4)
    events = Events(recognizer)

    failed = await events.next()

    assert isinstance(failed, RecognizerFailed) and "503" in failed.reason
    assert deepgram.attempts >= 2             # it retried before giving up
    await recognizer.send(frames(1)[0])       # and sending afterwards is harmless


async def test_an_unreachable_deepgram_is_reported_not_waited_for(recognizers):
    async with FakeDeepgram() as fake:
        settings = settings_for(fake)
    # The fake is gone: its port refuses connections.
    recognizer = await recognizers(fake, settings, give_up_after_s=0.3)
    assert isinstance(await Events(recognizer).next(), RecognizerFailed)


async def test_an_upgrade_that_hangs_fails_the_recognizer_within_the_connect_bound(recognizers):
    # The SDK's handshake ignores cancellation until its own 10 s open timeout; the caller must
    # still hear ASR_DOWN_LINE within the recognizer's bound, not 10 s later.
    bound = 0.5
    loop = asyncio.get_running_loop()
    async with nothing_left_behind():
        async with FakeDeepgram(api_key=PROVIDER_KEY) as fake:
            fake.listen_upgrade_hangs = True
            started = loop.time()
            recognizer = await recognizers(fake, connect_timeout_s=bound, give_up_after_s=0.1)
            failed = await Events(recognizer).next(timeout=15)
            elapsed = loop.time() - started
            await recognizer.close()
            assert fake.hung_upgrades == 1
        # The fake's stop cuts the hung connection: the attempt given up on ends now, quietly.
    assert elapsed < bound + 1.0, f"RecognizerFailed after {elapsed:.2f} s"
    assert isinstance(failed, RecognizerFailed) and "timed out" in failed.reason


async def test_an_attempt_that_hangs_is_given_up_and_retried_with_the_audio_kept(recognizers):
    bound = 0.5
    loop = asyncio.get_running_loop()
    async with nothing_left_behind():
        async with FakeDeepgram(api_key=PROVIDER_KEY) as fake:
            fake.listen_upgrade_hangs = True
            started = loop.time()
            recognizer = await recognizers(fake, connect_timeout_s=bound, give_up_after_s=5.0)
            for frame in frames(10):
                await recognizer.send(frame)
            await fake.wait_attempts(1)
            fake.listen_upgrade_hangs = False          # the next attempt is answered
            session = await fake.wait_session(0, timeout=5)   # past the give-up time otherwise
            elapsed = loop.time() - started
            await session.wait_audio_bytes(10 * FRAME)
            await recognizer.close()
            assert fake.attempts == 2 and fake.hung_upgrades == 1
    assert elapsed < bound + 1.0, f"reconnected after {elapsed:.2f} s"


async def test_a_call_that_ends_during_a_hung_connect_closes_at_once(recognizers):
    loop = asyncio.get_running_loop()
    async with nothing_left_behind():
        async with FakeDeepgram(api_key=PROVIDER_KEY) as fake:
            fake.listen_upgrade_hangs = True
            recognizer = await recognizers(fake, connect_timeout_s=5.0)
            await fake.wait_attempts(1)
            started = loop.time()
            await asyncio.wait_for(recognizer.close(), 15)
            elapsed = loop.time() - started
    assert elapsed < 1.0, f"closed after {elapsed:.2f} s"


async def test_a_stream_that_cannot_be_reopened_reports_failure(deepgram, recognizers):
    recognizer = await recognizers(deepgram, give_up_after_s=0.4)
    events = Events(recognizer)
    session = await deepgram.wait_session(0)
    deepgram.refuse(503)
    await session.drop()

    assert isinstance(await events.next(), RecognizerFailed)


async def test_the_api_key_never_reaches_the_logs(recognizers, caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeDeepgram(api_key="the-right-key") as fake:
        settings = plain_settings(deepgram_api_key="secret-key-123", deepgram_base_url=fake.url)
        recognizer = await recognizers(fake, settings)
        failed = await Events(recognizer).next()
    assert isinstance(failed, RecognizerFailed) and "401" in failed.reason
    assert fake.attempts == 1                 # a refused key is not retried
    assert "secret-key-123" not in caplog.text


# --- the scripted fake, as the end-to-end tests use it -------------------------------------------------------
async def test_spoken_audio_comes_back_as_the_scripted_line_with_deepgrams_message_sequence(recognizers):
    async with FakeDeepgram(script=["I'd like to book a cleaning."]) as fake:
        recognizer = await recognizers(fake)
        events = Events(recognizer)
        t = np.arange(8000) / 8000
        voice = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()   # 1 s "speech"
        silence = bytes(16000 + 8000)                                          # 1.5 s quiet
        audio = voice + silence
        for i in range(0, len(audio), FRAME):
            await recognizer.send(audio[i:i + FRAME])

        seen = [await events.next()]
        while not (isinstance(seen[-1], Transcript) and seen[-1].speech_final):
            seen.append(await events.next())
        # Deepgram also sends an UtteranceEnd a second after the last word; the endpoint has
        # already closed that turn, so the recognizer must swallow it.
        session = fake.sessions[0]
        await session.wait_until(lambda: any(m["type"] == "UtteranceEnd" for m in session.sent))
        await recognizer.close()
        after = await events.rest()

    assert seen[0] == SpeechStarted(0.0)
    assert any(isinstance(e, Transcript) and not e.is_final for e in seen)
    final = seen[-1]
    assert final.text == "I'd like to book a cleaning." and final.is_final
    assert final.end_s == pytest.approx(1.0)
    assert fake.heard == ["I'd like to book a cleaning."]
    assert after == []



async def spoken_line(recognizer: DeepgramRecognizer) -> str:
    """Send a second of "speech" and the silence after it; the final transcript that comes back."""
    events = Events(recognizer)
    t = np.arange(8000) / 8000
    audio = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes() + bytes(24000)
    for i in range(0, len(audio), FRAME):
        await recognizer.send(audio[i:i + FRAME])
    while not (isinstance(event := await events.next(), Transcript) and event.speech_final):
        pass
    return event.text


async def test_um_and_uh_are_in_the_transcript_because_zylin_asks_for_filler_words(recognizers):
    async with FakeDeepgram(script=["I'd like to book um"]) as fake:
        assert await spoken_line(await recognizers(fake)) == "I'd like to book um"


async def test_the_fake_strips_um_and_uh_unless_filler_words_is_asked_for_as_deepgram_does(recognizers):
    async with FakeDeepgram(script=["I'd like to book, uh, um", "Mhmm"]) as fake:
        recognizer = await recognizers(fake)
        recognizer.params.pop("request_options")     # the query as the SDK builds it by default
        assert await spoken_line(recognizer) == "I'd like to book,"
        assert await spoken_line(recognizer) == "Mhmm"   # only "uh" and "um" are stripped
        assert "filler_words" not in fake.sessions[0].query


async def test_a_caller_who_pauses_on_um_gets_one_answer_for_the_whole_sentence_with_nova_3():
    lines = ["I'd like to book um", "how much is a cleaning?"]
    async with FakeDeepgram(api_key=PROVIDER_KEY, script=lines) as fake, \
            running_zylin(use_mock_streaming=False, asr_provider="deepgram", llm_provider="mock",
                          tts_provider="mock", deepgram_api_key=PROVIDER_KEY, deepgram_base_url=fake.url) as zylin:
        result = await zylin.caller().call([
            CallerLine(lines[0]), CallerLine(lines[1], pause_before_ms=400, wait_for_reply=False),
        ], mock_script=False)
        record = await zylin.recorder.wait_ended(result.call_sid)

    caller = [t.text for t in record["turns"] if t.speaker == "caller"]
    assert caller == ["I'd like to book um how much is a cleaning?"], "held on the um, then one turn"
    zylin_said = [t.text for t in record["turns"] if t.speaker == "zylin"]
    assert len(zylin_said) == 2 and "$120" in zylin_said[1]


# --- Finalize "may" be answered: Zylin must not wait for it ------------------------------------------
def finalize_answers(session) -> list[str]:
    return [m["channel"]["alternatives"][0]["transcript"] for m in session.sent if m.get("from_finalize")]


async def test_the_fake_answers_finalize_only_when_audio_waits_to_be_transcribed(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    session = await deepgram.wait_session(0)

    await recognizer.finalize()                            # 1: no audio yet, nothing to flush
    for frame in frames(10):
        await recognizer.send(frame)
    await recognizer.finalize()                            # 2: 0.2 s untranscribed: answered
    await session.wait_until(lambda: len(finalize_answers(session)) == 1)
    await session.send_results("Hello.", is_final=True, start=0.0, duration=0.2)  # all transcribed
    await recognizer.finalize()                            # 3: nothing new since: no answer
    session.finalize_transcript = "Goodbye."
    await recognizer.finalize()                            # 4: words waiting: answered
    await session.wait_control("Finalize", count=4)
    await session.wait_until(lambda: len(finalize_answers(session)) == 2)

    # The fake handles messages in order: by the 4th answer, the 1st and 3rd were passed over.
    assert finalize_answers(session) == ["", "Goodbye."]


async def test_in_script_mode_finalize_flushes_speech_but_not_the_silence_between(recognizers):
    async with FakeDeepgram(script=["Hello there.", "Thanks."]) as fake:
        recognizer = await recognizers(fake)
        session = await fake.wait_session(0)
        for frame in voice(0.6):
            await recognizer.send(frame)
        await recognizer.finalize()                        # mid-speech: the words so far are final
        for frame in frames(25, value=0):
            await recognizer.send(frame)
        await recognizer.finalize()                        # between utterances: nothing to answer
        for frame in voice(0.6):
            await recognizer.send(frame)
        await recognizer.finalize()
        await session.wait_control("Finalize", count=3)
        await session.wait_until(lambda: len(finalize_answers(session)) == 2)

    assert finalize_answers(session) == ["Hello there.", "Thanks."]


async def test_a_turn_still_closes_at_deepgram_s_endpoint_when_finalize_is_never_answered(recognizers):
    async with FakeDeepgram(script=["I'd like to book a cleaning."], answer_finalize=False) as fake:
        recognizer = await recognizers(fake)
        events = Events(recognizer)
        for frame in voice(1.0):
            await recognizer.send(frame)
        await recognizer.finalize()                        # local VAD heard the end: unanswered
        for frame in frames(50, value=0):                  # 1 s of quiet after it
            await recognizer.send(frame)

        seen = [await events.next()]
        while not (isinstance(seen[-1], Transcript) and seen[-1].speech_final):
            seen.append(await events.next())
        session = fake.sessions[0]

    assert seen[-1].text == "I'd like to book a cleaning." and seen[-1].is_final
    assert "Finalize" in session.controls and finalize_answers(session) == []


async def test_a_caller_is_answered_through_the_engine_when_deepgram_never_answers_finalize():
    lines = ["What are your opening hours?", "How much is a cleaning?"]
    async with FakeDeepgram(api_key="test-key", script=lines, answer_finalize=False) as deepgram:
        async with running_zylin(use_mock_streaming=False, asr_provider="deepgram", llm_provider="mock",
                                 tts_provider="mock", deepgram_api_key="test-key",
                                 deepgram_base_url=deepgram.url) as zylin:
            result = await zylin.caller(speed=4.0).call([CallerLine(t) for t in lines])
            record = await zylin.recorder.wait_ended(result.call_sid)
        session = deepgram.sessions[0]

    assert not result.timeouts
    assert [t.text for t in record["turns"] if t.speaker == "caller"] == lines
    replies = [t.text for t in record["turns"] if t.speaker == "zylin"][1:]
    assert "open Monday 9 am to 5 pm" in replies[0] and "$120" in replies[1]
    # The engine asked for a Finalize at the end of each turn and never got an answer.
    assert session.controls.count("Finalize") >= len(lines) and finalize_answers(session) == []


# --- refusals: a 400 at the upgrade is final ----------------------------------------------------------
async def test_the_fake_refuses_an_unsupported_encoding_at_the_upgrade_with_400(deepgram):
    url = deepgram.url.replace("http://", "ws://") + "/v1/listen?encoding=mp3&sample_rate=8000"
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers={"Authorization": "Token test-key"}):
            pass
    assert caught.value.response.status_code == 400
    assert b"INVALID_QUERY_PARAMETER" in caught.value.response.body and b"mp3" in caught.value.response.body
    assert deepgram.refused == 1 and deepgram.sessions == []


async def test_a_query_deepgram_refuses_fails_the_recognizer_at_once_without_retrying(deepgram):
    recognizer = recognizer_for(settings_for(deepgram), retry_delays_s=(0.05,), give_up_after_s=10.0)
    recognizer.params["encoding"] = "mp3"      # not an encoding Deepgram streams
    await recognizer.start()
    try:
        # Well before give_up_after_s: a 400 is not retried until the time runs out.
        failed = await Events(recognizer).next(timeout=2.0)
        assert isinstance(failed, RecognizerFailed) and "400" in failed.reason
        assert deepgram.attempts == 1 and deepgram.refused == 1
        await recognizer.send(frames(1)[0])   # and sending afterwards is harmless
    finally:
        await recognizer.close()
