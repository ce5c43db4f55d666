"""Phone-line audio: G.711 mu-law, streaming resampling to 8 kHz and 20 ms framing."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from services.audio.codec import (
    FRAME_BYTES,
    Framer,
    OutboundEncoder,
    Resampler,
    pcm_to_ulaw,
    rms,
    ulaw_to_pcm,
)

# Irregular network-ish chunk sizes in BYTES, many of them odd so samples get split in half.
CHUNK_BYTES = (1, 4801, 333, 2, 7, 1000, 999, 3, 4096, 161, 5, 2400, 17)


def sine(rate: int, seconds: float = 1.0, hz: float = 440.0, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


def pieces(data: bytes, sizes=CHUNK_BYTES) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i, k = i + n, k + 1
    return out


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.int64)


def max_jump(x: np.ndarray) -> int:
    return int(np.abs(np.diff(x.astype(np.int64))).max())


# --- mu-law -----------------------------------------------------------------------------------

def test_mulaw_round_trip_of_a_sine_stays_within_g711_quantisation_error() -> None:
    x = sine(8000)
    ulaw = pcm_to_ulaw(x.tobytes())
    assert len(ulaw) == len(x)  # one byte per sample
    y = samples(ulaw_to_pcm(ulaw))
    assert len(y) == len(x)
    error = np.abs(y - x.astype(np.int64))
    # mu-law's step grows with the level: the error stays a small fraction of the sample.
    assert (error <= np.abs(x) / 32 + 8).all()
    snr_db = 10 * np.log10((x.astype(float) ** 2).sum() / (error.astype(float) ** 2).sum())
    assert snr_db > 35


def test_silence_survives_mulaw_and_has_zero_energy() -> None:
    silence = bytes(320)
    assert ulaw_to_pcm(pcm_to_ulaw(silence)) == silence
    assert rms(silence) == 0
    assert rms(sine(8000, 0.02).tobytes()) > 8000  # a loud tone is not silence


# --- Resampler ----------------------------------------------------------------------------------

def test_chunked_resampling_matches_one_shot_without_clicks() -> None:
    x = sine(24000)
    reference = soxr.resample(x, 24000, 8000, quality="HQ").astype(np.int64)

    resampler = Resampler(24000, 8000, quality="HQ")
    out = b"".join(resampler.push(p) for p in pieces(x.tobytes())) + resampler.flush()
    chunked = samples(out)

    assert abs(len(chunked) - len(reference)) <= 2
    n = min(len(chunked), len(reference))
    assert np.abs(chunked[:n] - reference[:n]).max() <= 2
    assert max_jump(chunked) <= max_jump(reference) + 2


def test_resampling_chunk_by_chunk_without_state_would_click() -> None:
    """The comparison above can fail: a stateless per-chunk resample is visibly different."""
    x = sine(24000)
    reference = soxr.resample(x, 24000, 8000, quality="HQ")
    stateless = np.concatenate([soxr.resample(x[i:i + 480], 24000, 8000, quality="HQ")
                                for i in range(0, len(x), 480)])
    assert max_jump(stateless) > max_jump(reference) + 2


def test_an_odd_byte_is_carried_so_no_sample_is_lost_or_split() -> None:
    x = sine(8000, 0.1)
    same_rate = Resampler(8000, 8000)
    out = b"".join(same_rate.push(p) for p in pieces(x.tobytes(), (1, 3, 5, 160, 7)))
    assert out == x.tobytes()  # every sample arrives whole, in order, byte-aligned
    assert len(out) % 2 == 0
    assert same_rate.flush() == b""


def test_a_lone_byte_waits_for_its_partner() -> None:
    r = Resampler(8000, 8000)
    assert r.push(b"\x01") == b""
    assert r.push(b"\x02\x03") == b"\x01\x02"
    assert r.push(b"\x04") == b"\x03\x04"


def test_same_rate_is_a_passthrough() -> None:
    pcm = sine(8000, 0.05).tobytes()
    assert Resampler(8000, 8000).push(pcm) == pcm


def test_flush_leaves_the_resampler_ready_for_a_new_sentence() -> None:
    x = sine(24000)
    used = Resampler(24000)
    first = b"".join(used.push(p) for p in pieces(x[:6000].tobytes())) + used.flush()
    assert abs(len(first) // 2 - 2000) <= 2  # the first sentence came out whole

    again = samples(b"".join(used.push(p) for p in pieces(x.tobytes())) + used.flush())
    fresh_r = Resampler(24000)
    fresh = samples(fresh_r.push(x.tobytes()) + fresh_r.flush())
    assert len(again) == len(fresh)
    assert np.abs(again - fresh).max() <= 2  # nothing of the first sentence leaks into the second


# --- Framer -------------------------------------------------------------------------------------

def test_framer_yields_whole_frames_and_keeps_the_rest() -> None:
    framer = Framer()
    data = bytes(range(256)) * 3  # 768 bytes
    assert framer.push(data[:100]) == b""
    two = framer.push(data[100:350])
    assert two == data[:320]
    three = framer.push(data[350:])
    assert three == data[320:640]
    assert framer.flush() == data[640:]
    assert framer.flush() == b""


@pytest.mark.parametrize("size", [0, 1, 159, 160, 161, 480, 1000])
def test_framer_output_is_always_a_multiple_of_a_20ms_frame(size: int) -> None:
    out = Framer().push(bytes(size))
    assert len(out) % FRAME_BYTES == 0
    assert len(out) == size // FRAME_BYTES * FRAME_BYTES


# --- OutboundEncoder ----------------------------------------------------------------------------

def test_encoder_turns_24k_pcm_into_whole_8k_mulaw_frames_until_flush() -> None:
    x = sine(24000)
    encoder = OutboundEncoder(24000, "pcm16")
    outs = [encoder.push(p) for p in pieces(x.tobytes())]
    assert all(len(o) % FRAME_BYTES == 0 for o in outs)
    tail = encoder.flush()
    assert len(tail) < 800  # only the filter's delay waits for the flush, well under 100 ms

    ulaw = b"".join(outs) + tail
    assert abs(len(ulaw) - 8000) <= 4  # one second at 8000 bytes per second
    heard = samples(ulaw_to_pcm(ulaw))
    reference = soxr.resample(x, 24000, 8000, quality="HQ").astype(np.int64)
    n = min(len(heard), len(reference))
    assert (np.abs(heard[:n] - reference[:n]) <= np.abs(reference[:n]) / 16 + 16).all()


def test_encoder_passes_8k_mulaw_through_framing_unchanged() -> None:
    ulaw = bytes((i * 37) % 256 for i in range(1234))
    encoder = OutboundEncoder(8000, "mulaw")
    outs = [encoder.push(p) for p in pieces(ulaw, (1, 100, 333, 7))]
    assert all(len(o) % FRAME_BYTES == 0 for o in outs)
    assert b"".join(outs) + encoder.flush() == ulaw


def test_encoder_rejects_mulaw_that_is_not_8k() -> None:
    with pytest.raises(ValueError, match="8 kHz"):
        OutboundEncoder(24000, "mulaw")


def test_reset_drops_the_rest_of_an_interrupted_sentence() -> None:
    x = sine(24000)
    half = x[:1001].tobytes() + b"\x07"  # half a sentence: a partial frame and an odd byte

    interrupted = OutboundEncoder(24000)
    interrupted.push(half)
    interrupted.reset()
    assert interrupted.flush() == b""

    barged = OutboundEncoder(24000)
    barged.push(half)
    barged.reset()
    after = barged.push(x.tobytes()) + barged.flush()
    fresh_e = OutboundEncoder(24000)
    fresh = fresh_e.push(x.tobytes()) + fresh_e.flush()
    assert len(after) == len(fresh)
    diff = np.abs(samples(ulaw_to_pcm(after)) - samples(ulaw_to_pcm(fresh)))
    # At most one mu-law step apart (a 2-LSB resampler difference can flip a code).
    assert (diff <= np.abs(samples(ulaw_to_pcm(fresh))) / 16 + 16).all()
