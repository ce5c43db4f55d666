"""The neural VAD (services/audio/silero_vad.py) on real speech and on what must not start a turn.

Speech is espeak-ng's, made at test time and carried through 8 kHz mu-law as Twilio sends it
(bench/turn_corpus.py); noise, hum, bursts and echo are seeded. The targets are the issue's: no
speech start from stationary noise or hum up to -25 dBFS, from a non-speech burst up to 300 ms,
or from Zylin's own voice coming back at -25 dB; a caller's line starts speech within a few frames.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.turn_corpus import (
    FRAME,
    TWILIO_RATE,
    ZYLIN_LINES,
    ZYLIN_VOICE,
    _active_db,
    at_dbfs,
    bandpass,
    cough,
    espeak,
    espeak_available,
    hum,
    pink,
    rms_db,
    speech_labels,
    to_ulaw,
)
from services.audio.codec import ulaw_to_pcm
from services.audio.silero_vad import SileroVad, shared_model
from services.audio.vad import EnergyVad, Vad, VadEvent, make_vad
from services.settings import Settings

needs_espeak = pytest.mark.skipif(not espeak_available() and not os.environ.get("CI"),
                                  reason="espeak-ng is not installed (CI installs it: .ci/run)")
ONSET_FRAMES = 8       # speech start within 160 ms of the first voiced frame (32 ms windows, 60 ms start)
SECONDS = 10


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def frames(x: np.ndarray) -> list[bytes]:
    """20 ms PCM16 frames as on_media decodes them from Twilio's mu-law."""
    pcm = ulaw_to_pcm(to_ulaw(x))
    return [pcm[i:i + 2 * FRAME] for i in range(0, len(pcm), 2 * FRAME)]


def run(vad: Vad, x: np.ndarray) -> list[tuple[int, VadEvent]]:
    out = []
    for i, frame in enumerate(frames(x)):
        event = vad.update(frame, i * 0.02)
        if event is not None:
            out.append((i, event))
    return out


def starts(vad: Vad, x: np.ndarray) -> list[int]:
    return [i for i, e in run(vad, x) if e is VadEvent.SPEECH_START]


def neural() -> Vad:
    return make_vad(settings(vad="neural"))


def quiet_line(n: int, rng: np.random.Generator) -> np.ndarray:
    return at_dbfs(pink(n, rng), -60.0)


def caller_line(text: str = "How much is a cleaning?", voice: str = "en-us", rate: int = 160,
                level_db: float = -20.0) -> tuple[np.ndarray, int, int]:
    """Half a second of quiet line, the line spoken at `level_db` (active level), a second of
    quiet; with the frames where the labels say speech begins and ends."""
    said = espeak(text, voice, rate)
    said = at_dbfs(said, level_db + rms_db(said) - _active_db(said))
    x = np.concatenate([np.zeros(TWILIO_RATE // 2), said, np.zeros(TWILIO_RATE)])
    labels = speech_labels(x)
    voiced = np.flatnonzero(labels)
    return x + quiet_line(len(x), np.random.default_rng(1)), int(voiced[0]), int(voiced[-1]) + 1


# --- speech ---------------------------------------------------------------------------------------

@needs_espeak
@pytest.mark.parametrize(("voice", "rate", "level"), [("en-us", 160, -20.0), ("en-gb", 185, -26.0),
                                                      ("en+f3", 145, -16.0)])
def test_a_spoken_line_starts_speech_within_a_few_frames_and_ends_after_it(voice, rate, level) -> None:
    x, onset, end = caller_line(voice=voice, rate=rate, level_db=level)
    vad = neural()
    events = run(vad, x)
    assert events[0][1] is VadEvent.SPEECH_START
    assert onset <= events[0][0] <= onset + ONSET_FRAMES
    assert [e for _, e in events] == [VadEvent.SPEECH_START, VadEvent.SPEECH_END]  # one line, one turn
    assert end <= events[1][0] <= end + 15 + 10   # the 300 ms end silence, give or take two windows
    assert vad.speaking is False
    assert end - 10 <= round(vad.last_voiced_at / 0.02) <= end + 5


@needs_espeak
def test_a_line_under_pink_noise_at_10_db_snr_still_starts_speech() -> None:
    x, onset, _ = caller_line("I need to cancel my appointment.")
    noisy = x + at_dbfs(pink(len(x), np.random.default_rng(2)), -30.0)
    first = starts(neural(), noisy)
    assert first and onset <= first[0] <= onset + ONSET_FRAMES


# --- what must not start a turn ---------------------------------------------------------------------

@pytest.mark.parametrize("level", [-25.0, -35.0])
def test_pink_noise_up_to_minus_25_dbfs_starts_no_speech(level) -> None:
    rng = np.random.default_rng(3)
    assert starts(neural(), at_dbfs(pink(SECONDS * TWILIO_RATE, rng), level)) == []


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_mains_hum_at_minus_25_dbfs_starts_no_speech(mains_hz) -> None:
    rng = np.random.default_rng(4)
    n = SECONDS * TWILIO_RATE
    assert starts(neural(), at_dbfs(hum(n, mains_hz, rng), -25.0) + quiet_line(n, rng)) == []


def test_coughs_and_clicks_of_300_ms_start_no_speech() -> None:
    rng = np.random.default_rng(5)
    n = SECONDS * TWILIO_RATE
    x = quiet_line(n, rng)
    for k in range(6):  # a loud 300 ms burst every 1.5 s
        at = TWILIO_RATE // 2 + k * int(1.5 * TWILIO_RATE)
        burst = at_dbfs(cough(0.3, rng), -12.0)
        x[at:at + len(burst)] += burst
        x[at + 4000:at + 4048] += 0.3 * np.sin(np.arange(48) * 1.3) * np.exp(-np.arange(48) / 8)  # a click
    assert starts(neural(), x) == []


@needs_espeak
def test_zylins_own_voice_coming_back_at_minus_25_db_starts_no_speech() -> None:
    voice, rate = ZYLIN_VOICE
    talk = np.concatenate([espeak(line, voice, rate) for line in ZYLIN_LINES[:2]])
    talk = at_dbfs(bandpass(talk, 250, 3400), -20.0 + rms_db(talk) - _active_db(talk))  # Zylin at -20 dBFS
    echo = talk * 10 ** (-25 / 20)
    assert starts(neural(), echo + quiet_line(len(echo), np.random.default_rng(6))) == []


# --- the energy setting, and the model's sharing -------------------------------------------------------

@needs_espeak
def test_vad_energy_still_gives_the_energy_detector_and_it_hears_the_line() -> None:
    vad = make_vad(settings(vad="energy"))
    assert isinstance(vad, EnergyVad) and vad.start_frames == 5 and vad.end_silence_frames == 15
    x, onset, _ = caller_line()
    first = starts(vad, x)
    assert first and onset <= first[0] <= onset + 10


def test_the_energy_detector_is_what_noise_fools_and_the_neural_one_is_not() -> None:
    noise = at_dbfs(pink(3 * TWILIO_RATE, np.random.default_rng(7)), -25.0)
    assert starts(make_vad(settings(vad="energy")), noise) != []
    assert starts(neural(), noise) == []


def test_neural_is_the_default_and_its_thresholds_are_settings() -> None:
    vad = make_vad(settings(vad_speech_threshold=0.6, vad_silence_threshold=0.4, vad_min_rms=200,
                            vad_start_ms=100, vad_end_silence_ms=400))
    assert isinstance(vad, SileroVad)
    assert (vad.threshold, vad.neg_threshold, vad.min_rms) == (0.6, 0.4, 200)
    assert (vad.start_frames, vad.end_silence_frames) == (5, 20)
    with pytest.raises(ValueError):
        settings(vad="webrtc")


def test_calls_share_one_model_session_but_not_their_state() -> None:
    a, b = neural(), neural()
    assert isinstance(a, SileroVad) and isinstance(b, SileroVad)
    assert a._model is b._model is shared_model()
    tone = (np.sin(np.arange(TWILIO_RATE) * 2 * np.pi * 220 / TWILIO_RATE) * 8000).astype(np.int16).tobytes()
    for i in range(0, len(tone), 320):
        a.update(tone[i:i + 320], 0.0)
    assert a.probability > 0.0 and b.probability == 0.0 and not b._state.lstm.any()


class CountingModel:
    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def infer(self, samples, state) -> float:
        self.calls += 1
        return self.model.infer(samples, state)


def test_a_quiet_line_costs_no_inference_and_a_voice_costs_one_per_window() -> None:
    vad = neural()
    assert isinstance(vad, SileroVad)
    vad._model = counting = CountingModel(vad._model)  # type: ignore[assignment]
    for frame in frames(quiet_line(TWILIO_RATE, np.random.default_rng(8))):  # 50 frames of a quiet line
        vad.update(frame, 0.0)
    assert counting.calls == 0 and vad.probability == 0.0
    tone = at_dbfs(np.sin(np.arange(TWILIO_RATE) * 2 * np.pi * 220 / TWILIO_RATE), -20.0)
    for frame in frames(tone):  # 50 loud frames = 8,000 samples = 31 windows of 256
        vad.update(frame, 0.0)
    assert counting.calls == 31
