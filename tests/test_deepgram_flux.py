"""The Flux recognizer (listen v2), with the real SDK, against the fake Deepgram on 127.0.0.1."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.asr.base import EagerTurnEnd, RecognizerFailed, Transcript, TurnEnded, TurnResumed, TurnStarted
from services.asr.deepgram_flux import FluxRecognizer, flux_keyterms
from services.audio.codec import pcm_to_ulaw
from services.providers import build_recognizer, flux_arguments
from services.settings import ConfigError, Settings
from tests.factories import PROVIDER_KEY, dental_profile, plain_settings
from tests.fakes.deepgram_server import FakeDeepgram
from tests.leftovers import nothing_left_behind

PROFILE = dental_profile(services=[{"name": "Cleaning", "duration_min": 45},
                                   {"name": "Teeth Whitening", "duration_min": 60}])
FRAME = 160  # 20 ms of mu-law at 8 kHz
SILENCE = b"\xff" * FRAME


def voice(seconds: float) -> list[bytes]:
    """A 220 Hz tone as Twilio would send it (mu-law), in 20 ms frames."""
    t = np.arange(int(8000 * seconds)) / 8000
    ulaw = pcm_to_ulaw((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return [ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME)]


def quiet(seconds: float) -> list[bytes]:
    return [SILENCE] * int(seconds / 0.02)


def settings_for(fake: FakeDeepgram, **overrides) -> Settings:
    return plain_settings(deepgram_api_key=PROVIDER_KEY, deepgram_base_url=fake.url,
                          deepgram_model="flux-general-en", **overrides)


@pytest.fixture
async def recognizers():
    made: list[FluxRecognizer] = []

    async def make(fake: FakeDeepgram, settings: Settings | None = None, **kwargs) -> FluxRecognizer:
        options = {"retry_delays_s": (0.05,), "give_up_after_s": 1.0, "close_timeout_s": 1.0, **kwargs}
        recognizer = FluxRecognizer(**flux_arguments(settings or settings_for(fake), PROFILE), **options)
        made.append(recognizer)
        await recognizer.start()
        return recognizer

    yield make
    for recognizer in made:
        await recognizer.close()


async def next_events(recognizer: FluxRecognizer, count: int, timeout: float = 5.0) -> list:
    events = recognizer.events()
    return [await asyncio.wait_for(anext(events), timeout) for _ in range(count)]


async def send_all(recognizer: FluxRecognizer, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await recognizer.send(chunk)


# --- opening the stream -----------------------------------------------------------------------------
async def test_deepgram_model_flux_selects_the_flux_recognizer_with_the_documented_query(deepgram, recognizers):
    settings = settings_for(deepgram, asr_provider="deepgram")
    assert isinstance(build_recognizer(settings, PROFILE, {}), FluxRecognizer)
    await recognizers(deepgram, settings)
    session = await deepgram.wait_session(0)

    assert session.request.path == "/v2/listen"
    assert session.headers["authorization"] == "Token test-key"
    q = session.query
    assert q["model"] == ["flux-general-en"]
    assert q["encoding"] == ["mulaw"] and q["sample_rate"] == ["8000"]
    assert q["eot_threshold"] == ["0.7"] and q["eager_eot_threshold"] == ["0.5"] and q["eot_timeout_ms"] == ["5000"]
    assert q["keyterm"] == ["Bright Smile Dental", "Cleaning", "Teeth Whitening"]
    assert session.sent[0]["type"] == "Connected" and session.sent[0]["sequence_id"] == 0


async def test_thresholds_follow_the_settings_and_an_eager_threshold_of_zero_leaves_eager_off(
        deepgram, recognizers):
    await recognizers(deepgram, settings_for(deepgram, flux_eot_threshold=0.85, flux_eager_eot_threshold=0,
                                             flux_eot_timeout_ms=3000))
    q = (await deepgram.wait_session(0)).query
    assert q["eot_threshold"] == ["0.85"] and q["eot_timeout_ms"] == ["3000"]
    assert "eager_eot_threshold" not in q


def test_keyterms_flux_would_refuse_are_left_out():
    assert flux_keyterms(["Cleaning", " ", "", "x" * 101, " Crown "]) == ["Cleaning", "Crown"]


@pytest.mark.parametrize("overrides, problem", [
    (dict(flux_eot_threshold=0.4), "FLUX_EOT_THRESHOLD"),
    (dict(flux_eager_eot_threshold=0.2), "FLUX_EAGER_EOT_THRESHOLD"),
    (dict(flux_eager_eot_threshold=0.8, flux_eot_threshold=0.7), "above FLUX_EOT_THRESHOLD"),
    (dict(flux_eot_timeout_ms=100), "FLUX_EOT_TIMEOUT_MS"),
])
def test_settings_deepgram_would_refuse_stop_the_start(overrides, problem):
    settings = plain_settings(asr_provider="deepgram", deepgram_api_key=PROVIDER_KEY,
                              deepgram_model="flux-general-en", **overrides)
    with pytest.raises(ConfigError, match=problem):
        settings.check()


# --- audio and events -----------------------------------------------------------------------------
async def test_mulaw_goes_to_flux_as_twilio_sent_it(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    session = await deepgram.wait_session(0)
    chunks = voice(0.1)
    await send_all(recognizer, chunks)
    await session.wait_audio_bytes(len(b"".join(chunks)))
    assert bytes(session.audio) == b"".join(chunks)


async def test_turn_info_events_become_turn_events_in_call_time(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    session = await deepgram.wait_session(0)
    await session.send_turn_info("StartOfTurn", start=0.5, end=0.52)
    await session.send_turn_info("Update", "I'd like", start=0.5, end=0.9)
    await session.send_turn_info("EagerEndOfTurn", "I'd like to book", start=0.5, end=1.2, confidence=0.55)
    await session.send_turn_info("TurnResumed", "I'd like to book", start=0.5, end=1.4)
    await session.send_turn_info("EndOfTurn", "I'd like to book on Thursday.", start=0.5, end=2.0, confidence=0.9)

    started, update, eager, resumed, ended = await next_events(recognizer, 5)

    assert started == TurnStarted(0.5)
    assert isinstance(update, Transcript) and update.text == "I'd like" and not update.is_final
    assert eager == EagerTurnEnd("I'd like to book", 0.55, 0.5, 1.2)
    assert resumed == TurnResumed(1.4)
    assert ended == TurnEnded("I'd like to book on Thursday.", 0.9, 0.5, 2.0)
    assert session.sent[-1]["trigger"] == "model" and session.sent[-1]["turn_index"] == 0


async def test_scripted_speech_takes_the_thresholds_timing_and_a_pause_resumes_the_turn(recognizers):
    async with FakeDeepgram(api_key=PROVIDER_KEY, script=["I'd like to book | on Thursday."]) as fake:
        settings = settings_for(fake, flux_eot_threshold=0.9, flux_eager_eot_threshold=0.3)
        recognizer = await recognizers(fake, settings)
        session = await fake.wait_session(0)
        # eager at 0.3 * 0.6 s = 180 ms of silence, the end at 0.9 * 0.6 s = 540 ms
        await send_all(recognizer, voice(0.4) + quiet(0.3) + voice(0.4) + quiet(0.8))
        await fake.wait_heard(1)

    assert session.events == ["StartOfTurn", "Update", "EagerEndOfTurn", "TurnResumed", "Update",
                              "EagerEndOfTurn", "EndOfTurn"]
    turn_infos = [m for m in session.sent if m.get("type") == "TurnInfo"]
    assert turn_infos[2]["transcript"] == "I'd like to book"
    assert turn_infos[-1]["transcript"] == "I'd like to book on Thursday."
    assert fake.heard == ["I'd like to book on Thursday."]
    assert turn_infos[-1]["audio_window_end"] == pytest.approx(1.1, abs=0.03)   # the last word's end
    assert turn_infos[-1]["end_of_turn_confidence"] >= 0.9


async def test_finalize_is_not_passed_on_and_close_sends_close_stream(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    session = await deepgram.wait_session(0)
    await recognizer.send(SILENCE)
    await recognizer.finalize()
    await session.wait_audio_bytes(FRAME)

    await recognizer.close()

    await session.wait_closed()
    assert session.controls == ["CloseStream"] and session.close_code == 1000
    assert [e async for e in recognizer.events()] == []


async def test_a_connection_lost_after_an_eager_end_ends_the_turn_with_its_words(deepgram, recognizers):
    recognizer = await recognizers(deepgram)
    session = await deepgram.wait_session(0)
    await session.send_turn_info("EagerEndOfTurn", "Is Thursday free?", start=0.5, end=1.0, confidence=0.6)
    eager, = await next_events(recognizer, 1)
    await session.drop()

    ended, = await next_events(recognizer, 1)
    assert eager == EagerTurnEnd("Is Thursday free?", 0.6, 0.5, 1.0)
    assert ended == TurnEnded("Is Thursday free?", 0.6, 0.5, 1.0)
    await deepgram.wait_session(1)   # and the stream is reopened


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, problem", [
    ("model=nova-3&encoding=mulaw&sample_rate=8000", b"not a Flux model"),
    ("model=flux-general-en&encoding=mulaw", b"sample_rate"),
    ("model=flux-general-en&eager_eot_threshold=0.8", b"must not exceed"),
    ("model=flux-general-en&eot_timeout_ms=100", b"eot_timeout_ms"),
    ("model=flux-general-en&keyterm=", b"keyterm"),
])
async def test_the_fake_refuses_what_flux_refuses_at_the_upgrade_with_400(deepgram, query, problem):
    url = deepgram.url.replace("http://", "ws://") + "/v2/listen?" + query
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers={"Authorization": "Token test-key"}):
            pass
    assert caught.value.response.status_code == 400 and problem in caught.value.response.body
    assert deepgram.refused == 1 and deepgram.sessions == []


async def test_a_flux_upgrade_that_hangs_fails_the_recognizer_within_the_connect_bound(recognizers):
    # As for listen v1: the SDK's handshake ignores cancellation until its own 10 s open timeout.
    bound = 0.5
    loop = asyncio.get_running_loop()
    async with nothing_left_behind():
        async with FakeDeepgram(api_key=PROVIDER_KEY) as fake:
            fake.listen_upgrade_hangs = True
            started = loop.time()
            recognizer = await recognizers(fake, connect_timeout_s=bound, give_up_after_s=0.1)
            failed, = await next_events(recognizer, 1, timeout=15)
            elapsed = loop.time() - started
            await recognizer.close()
            assert fake.hung_upgrades == 1
            assert fake.attempts == 1
        # The fake's stop cuts the hung connection: the attempt given up on ends now, quietly.
    assert elapsed < bound + 1.0, f"RecognizerFailed after {elapsed:.2f} s"
    assert isinstance(failed, RecognizerFailed) and "timed out" in failed.reason


async def test_a_refused_flux_query_fails_the_recognizer_at_once(deepgram, recognizers):
    recognizer = FluxRecognizer(**flux_arguments(settings_for(deepgram), PROFILE),
                                retry_delays_s=(0.05,), give_up_after_s=10.0)
    recognizer.params["eager_eot_threshold"] = 0.9   # above eot_threshold 0.7
    await recognizer.start()
    try:
        failed, = await next_events(recognizer, 1, timeout=2.0)
        assert isinstance(failed, RecognizerFailed) and "400" in failed.reason
        assert deepgram.attempts == 1
    finally:
        await recognizer.close()
