"""Deepgram Aura speech synthesis, with the real SDK, against the fake Deepgram on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from deepgram.core.api_error import ApiError

from services.audio.codec import FRAME_BYTES, OutboundEncoder
from services.tts.deepgram_aura import AuraSynthesizer
from tests.factories import PROVIDER_KEY, plain_settings
from tests.fakes.deepgram_server import speak_audio

TEXT = "Your cleaning is booked for Tuesday at ten."


@pytest.fixture
async def aura(deepgram):
    tts = AuraSynthesizer(plain_settings(deepgram_api_key=PROVIDER_KEY, deepgram_base_url=deepgram.url))
    yield tts
    await tts.close()


async def collect(tts: AuraSynthesizer, text: str = TEXT) -> list[bytes]:
    async def run():
        return [chunk async for chunk in tts.synthesize(text)]
    return await asyncio.wait_for(run(), 10)


def test_it_describes_its_audio_as_twilios_own_format():
    tts = AuraSynthesizer(plain_settings(deepgram_api_key="k", deepgram_tts_model="aura-2-orion-en"))
    assert (tts.sample_rate, tts.encoding) == (8000, "mulaw")
    assert tts.cache_key == "deepgram:aura-2-orion-en:mulaw8k"


async def test_the_request_asks_for_headerless_mulaw_at_8k_with_the_voice_setting(deepgram, aura):
    await collect(aura)
    request = deepgram.speak_requests[0]
    assert request.method == "POST" and request.path == "/v1/speak"
    assert request.headers["authorization"] == "Token test-key"
    assert {k: v[0] for k, v in request.query.items()} == {
        "model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": "8000", "container": "none"}
    assert request.json() == {"text": TEXT}


async def test_mulaw_bytes_come_through_unchanged_and_frame_without_resampling(deepgram, aura):
    chunks = await collect(aura)
    audio = b"".join(chunks)
    assert audio == speak_audio(TEXT, "mulaw", 8000, deepgram.speak_seconds_per_char)   # no WAV header
    assert [len(c) for c in chunks[:4]] == [1601, 3, 799, 2401]

    encoder = OutboundEncoder(aura.sample_rate, aura.encoding)
    framed = b"".join(encoder.push(c) for c in chunks) + encoder.flush()
    assert framed == audio and len(framed) // FRAME_BYTES == len(audio) // FRAME_BYTES


async def test_closing_the_synthesis_early_stops_the_http_stream(deepgram, aura):
    deepgram.speak_hold_after = 1
    stream = aura.synthesize(TEXT)
    assert len(await asyncio.wait_for(anext(stream), 5)) == 1601

    await stream.aclose()

    record = deepgram.speak_streams[0]
    await asyncio.wait_for(record.closed_early.wait(), 5)
    assert not record.finished.is_set()


async def test_a_rejected_request_raises(deepgram, aura):
    deepgram.speak_error = (400, "bad voice")
    with pytest.raises(ApiError) as raised:
        await collect(aura)
    assert raised.value.status_code == 400
