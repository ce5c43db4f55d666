"""OpenAI speech synthesis, with the real SDK, against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import openai
import pytest

from services.tts.openai_tts import OpenAISynthesizer
from tests.factories import PROVIDER_KEY, plain_settings
from tests.fakes.openai_server import FakeOpenAI

TEXT = "Thanks for calling Bright Smile Dental. How can I help you today?"


@pytest.fixture
async def synthesizer(openai_fake):
    tts = OpenAISynthesizer(plain_settings(openai_api_key=PROVIDER_KEY, openai_base_url=openai_fake.base_url),
                            max_retries=0)
    yield tts
    await tts.close()


async def collect(tts: OpenAISynthesizer, text: str = TEXT) -> list[bytes]:
    async def run():
        return [chunk async for chunk in tts.synthesize(text)]
    return await asyncio.wait_for(run(), 10)


def test_it_describes_its_audio_and_its_cache_key():
    tts = OpenAISynthesizer(plain_settings(openai_api_key="k", openai_tts_model="tts-1",
                                           openai_tts_voice="coral"))
    assert (tts.sample_rate, tts.encoding, tts.cache_key) == (24000, "pcm16", "openai:tts-1:coral")


async def test_the_request_asks_for_raw_pcm_with_the_model_and_voice_settings(openai_fake, synthesizer):
    await collect(synthesizer)
    request = openai_fake.speech_requests[0]
    assert openai_fake.requests[0].path == "/v1/audio/speech"
    assert openai_fake.requests[0].headers["authorization"] == "Bearer test-key"
    assert request["response_format"] == "pcm"
    assert (request["model"], request["voice"], request["input"]) == ("gpt-4o-mini-tts", "marin", TEXT)
    assert "receptionist" in request["instructions"]


async def test_tts_1_gets_no_style_instructions(openai_fake):
    tts = OpenAISynthesizer(plain_settings(openai_api_key=PROVIDER_KEY, openai_tts_model="tts-1",
                                           openai_base_url=openai_fake.base_url))
    await collect(tts)
    await tts.close()
    assert "instructions" not in openai_fake.speech_requests[0]


async def test_odd_sized_chunks_are_passed_through_intact_and_in_order(openai_fake, synthesizer):
    chunks = await collect(synthesizer)
    audio = b"".join(chunks)
    assert audio == FakeOpenAI.speech_audio(TEXT)              # 24 kHz PCM16, byte for byte
    assert any(len(c) % 2 for c in chunks)                      # odd lengths reached us as they came
    assert [len(c) for c in chunks[:5]] == [4801, 1, 2399, 7, 9601]


async def test_audio_is_handed_on_before_the_rest_has_arrived(openai_fake, synthesizer):
    openai_fake.speech_hold_after = 1       # the server sends one odd chunk, then waits
    stream = synthesizer.synthesize(TEXT)
    first = await asyncio.wait_for(anext(stream), 5)
    assert len(first) == 4801
    openai_fake.release.set()
    rest = [chunk async for chunk in stream]
    assert first + b"".join(rest) == FakeOpenAI.speech_audio(TEXT)


async def test_closing_the_synthesis_early_stops_the_http_stream(openai_fake, synthesizer):
    openai_fake.speech_hold_after = 2
    stream = synthesizer.synthesize(TEXT)
    await asyncio.wait_for(anext(stream), 5)

    await stream.aclose()                    # barge-in

    record = openai_fake.speech_streams[0]
    await asyncio.wait_for(record.closed_early.wait(), 5)
    assert not record.finished.is_set()


async def test_cancelling_a_synthesis_task_stops_the_http_stream(openai_fake, synthesizer):
    openai_fake.speech_hold_after = 1
    task = asyncio.create_task(collect(synthesizer))
    await openai_fake.wait_speech_streams(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(openai_fake.speech_streams[0].closed_early.wait(), 5)


async def test_the_next_sentence_can_start_while_the_current_one_still_streams(openai_fake, synthesizer):
    openai_fake.speech_hold_after = 1
    first, second = synthesizer.synthesize("First sentence."), synthesizer.synthesize("Second one.")
    await asyncio.wait_for(anext(first), 5)
    await asyncio.wait_for(anext(second), 5)   # both requests are in flight at once
    openai_fake.release.set()
    await first.aclose()
    await second.aclose()


async def test_a_server_error_surfaces_as_the_sdk_error(openai_fake, synthesizer):
    openai_fake.speech_errors.append((500, "The server had an error"))
    with pytest.raises(openai.InternalServerError):
        await collect(synthesizer)
