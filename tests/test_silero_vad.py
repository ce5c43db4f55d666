"""The neural VAD (services/audio/silero_vad.py) on real speech and on what must not start a turn.

Speech is espeak-ng's, made at test time and carried through 8 kHz mu-law as Twilio sends it
(bench/turn_corpus.py); noise, hum, bursts and echo are seeded. The targets are the issue's: no
speech start from stationary noise or hum up to -25 dBFS, from a non-speech burst up to 300 ms,
or from Zylin's own voice coming back at -25 dB; a caller's line starts speech within a few frames.
"""

from __future__ import annotations

import asyncio
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
from services.audio.silero_vad import SileroModel, SileroVad, WindowBatch, shared_batch, shared_model
from services.audio.vad import EnergyVad, Vad, VadEvent
from services.providers import build_vad
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
    return build_vad(settings(vad="neural"))


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
    vad = build_vad(settings(vad="energy"))
    assert isinstance(vad, EnergyVad) and vad.start_frames == 5 and vad.end_silence_frames == 15
    x, onset, _ = caller_line()
    first = starts(vad, x)
    assert first and onset <= first[0] <= onset + 10


def test_the_energy_detector_is_what_noise_fools_and_the_neural_one_is_not() -> None:
    noise = at_dbfs(pink(3 * TWILIO_RATE, np.random.default_rng(7)), -25.0)
    assert starts(build_vad(settings(vad="energy")), noise) != []
    assert starts(neural(), noise) == []


def test_neural_is_the_default_and_its_thresholds_are_settings() -> None:
    vad = build_vad(settings(vad_speech_threshold=0.6, vad_silence_threshold=0.4, vad_min_rms=200,
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


# --- the windows of many calls in one run (WindowBatch) ------------------------------------------------

LINES = ["How much is a cleaning?", "I need to cancel my appointment on Friday.", "Do you take walk-ins?",
         "Can I speak to someone, please?", "What time do you close today?"]


class Recorded(SileroVad):
    """A detector that keeps every window's probability, in order."""

    def __init__(self, batch: WindowBatch | None) -> None:
        super().__init__(shared_model(), min_rms=400, start_frames=3, end_silence_frames=15, batch=batch)
        self.windows: list[float] = []

    def update(self, frame_pcm: bytes, now: float) -> VadEvent | None:
        before = self.probability, self._fill
        event = super().update(frame_pcm, now)
        if self._batch is None and self._fill < before[1] and self._fresh is False:
            self.windows.append(self.probability)   # inline: this frame completed a loud window
        return event

    def _resolved(self, probability: float) -> None:
        super()._resolved(probability)
        self.windows.append(probability)


def caller_frames(k: int) -> list[bytes]:
    """Call k's line: simulated speech with quiet between the lines, offset so that the calls'
    windows complete on different frames."""
    from services.simulator.voice import speech_pcm

    quiet = b"\x00\x00" * FRAME
    pcm = quiet * (3 + k) + b"".join(speech_pcm(line, seed=k) + quiet * 40 for line in LINES[k:] + LINES[:k])
    return [pcm[i:i + 2 * FRAME] for i in range(0, len(pcm) - 2 * FRAME + 1, 2 * FRAME)]


def interleave(vads: list[Recorded], lines: list[list[bytes]], leave: dict[int, int] | None = None,
               ) -> list[list[tuple[int, VadEvent, float]]]:
    """One frame of every call per 20 ms tick, as the event loop serves them; (tick, event,
    last_voiced_at) per call, as `update` returns them. `leave`: call -> the tick it hangs up at."""
    out: list[list[tuple[int, VadEvent, float]]] = [[] for _ in vads]
    for t in range(max(map(len, lines))):
        for c, (vad, frames) in enumerate(zip(vads, lines, strict=True)):
            if t < len(frames) and t < (leave or {}).get(c, len(frames)):
                if (event := vad.update(frames[t], t * 0.02)) is not None:
                    out[c].append((t, event, vad.last_voiced_at))
    return out


def test_batched_windows_give_every_call_the_probabilities_and_events_it_gets_alone() -> None:
    lines = [caller_frames(k) for k in range(len(LINES))]
    alone = [Recorded(None) for _ in lines]
    batch = WindowBatch(shared_model(), limit=4)   # 5 calls: full batches run at once, the rest at the next frame
    batched = [Recorded(batch) for _ in lines]
    expected, got = interleave(alone, lines), interleave(batched, lines)
    batch.run()
    assert batch.runs > 0 and batch.windows / batch.runs > 2   # they did share runs
    for a, b, want, have in zip(alone, batched, expected, got, strict=True):
        assert len(b.windows) == len(a.windows) > 100
        np.testing.assert_allclose(b.windows, a.windows, atol=1e-5)
        np.testing.assert_allclose(b._state.lstm, a._state.lstm, atol=1e-5)
        assert VadEvent.SPEECH_START in [e for _, e, _ in want]
        assert [e for _, e, _ in have] == [e for _, e, _ in want]
        assert all(0 <= h[0] - w[0] <= 1 for h, w in zip(have, want, strict=True))  # at most a frame late
        assert any(h[0] > w[0] for h, w in zip(have, want, strict=True))
        assert b.last_voiced_at == a.last_voiced_at and b.speaking == a.speaking


def test_a_call_that_hangs_up_with_a_window_in_the_batch_does_not_hold_up_the_others() -> None:
    lines = [caller_frames(k) for k in range(3)]
    probe = Recorded(WindowBatch(shared_model()))
    for t, frame in enumerate(lines[2]):   # a frame of call 2's first line that leaves a window waiting
        probe.update(frame, t * 0.02)
        if t >= 40 and probe._waiting:
            break
    leave = {2: t + 1}  # call 2 (served last in each tick) hangs up right after that frame
    batch = WindowBatch(shared_model())
    batched = [Recorded(batch) for _ in lines]
    alone = [Recorded(None) for _ in lines]
    expected, got = interleave(alone, lines, leave), interleave(batched, lines, leave)
    assert not batched[2]._waiting   # the others' next frames ran its window with theirs
    del batched[2], alone[2]
    for a, b, want, have in zip(alone, batched, expected[:2], got[:2], strict=True):
        np.testing.assert_allclose(b.windows, a.windows, atol=1e-5)
        assert [e for _, e, _ in have] == [e for _, e, _ in want]


def test_a_lone_call_runs_each_window_on_its_own() -> None:
    batch = WindowBatch(shared_model())
    vad, alone = Recorded(batch), Recorded(None)
    frames = caller_frames(0)[:200]
    interleave([vad], [frames]), interleave([alone], [frames])
    batch.run()
    assert batch.runs == batch.windows == len(vad.windows) == len(alone.windows)
    assert vad.windows == alone.windows   # the same single-window run, not a batch of one


def test_a_failed_batch_counts_as_silence_and_leaves_no_call_waiting(caplog) -> None:
    class Broken(SileroModel):
        def infer_batch(self, samples, lstm):
            raise RuntimeError("onnxruntime fell over")

    batch = WindowBatch(Broken())
    vads = [SileroVad(batch.model, batch=batch) for _ in range(2)]
    tone = (np.sin(np.arange(2 * FRAME) * 0.3) * 8000).astype(np.int16).tobytes()
    for _ in range(2):
        for vad in vads:
            vad.update(tone, 0.0)
    batch.run()
    assert "failed on a batch of 2 windows" in caplog.text
    assert all(not v._waiting and v.probability == 0.0 for v in vads)


async def test_calls_in_the_event_loop_share_the_process_batch() -> None:
    a, b = neural(), neural()
    assert isinstance(a, SileroVad) and isinstance(b, SileroVad)
    assert a._batch is b._batch is shared_batch()
    offline = await asyncio.to_thread(neural)   # no event loop in that thread: each window at once
    assert isinstance(offline, SileroVad) and offline._batch is None
