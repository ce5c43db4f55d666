"""The neural VAD with every call's windows in one onnxruntime run (silero_vad.WindowBatch).

    python -m bench.vad_batch [--calls 200] [--seconds 20] [--rounds 3] [--noise-dbfs -30] [--json PATH]

1. The model's CPU per window by batch size: what running windows together can win, and where it
   stops winning (the batch limit).
2. `--calls` detectors fed one 20 ms frame each per tick, in turn, as the event loop serves the
   calls, on simulated speech lines with a quiet line between them (below the level floor, as on
   most calls; `--noise-dbfs` puts noise above it there, so every window is inferred): CPU per
   frame with each window run alone (before) and with the batch (after), in interleaved rounds;
   the mean windows per run; and how many frames later than alone each speech start and end
   comes out of `update`. CPU of other processes during each round is reported, as this VM is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import CLK_TCK, machine, machine_line, write_json

FRAME_BYTES = 320
SIZES = [1, 2, 4, 8, 16, 32, 64, 128]
LINES = ["How much is a cleaning?", "I need to cancel my appointment on Friday.", "Do you take walk-ins?",
         "Can I speak to someone, please?", "What time do you close today?", "Is Doctor Lee in on Monday?"]


def _busy() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:3]) + sum(fields[5:7])) / CLK_TCK


class Load:
    """This process's CPU and the rest of the machine's over a span (as % of all cores)."""

    def __enter__(self) -> Load:
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), _busy()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        self.cpu_s = time.process_time() - self.cpu
        other = _busy() - self.busy - self.cpu_s
        self.other_pct = round(max(0.0, 100 * other / (wall * machine()["cores"])), 1)


def model_cost(rounds: int, reps: int = 200) -> list[dict[str, Any]]:
    """µs of CPU per window for a run of n windows (the best of `rounds` medians)."""
    import numpy as np

    from services.audio.silero_vad import shared_model
    model = shared_model()
    rng = np.random.default_rng(0)
    rows = []
    for n in SIZES:
        x = (rng.standard_normal((n, model.context + model.window)) * 0.1).astype(np.float32)
        lstm = np.zeros((2, n, 128), dtype=np.float32)
        medians, others = [], []
        for _ in range(rounds):
            times = []
            with Load() as load:
                for _ in range(reps):
                    t = time.process_time()
                    model.infer_batch(x, lstm)
                    times.append(time.process_time() - t)
            medians.append(statistics.median(times) * 1e6 / n)
            others.append(load.other_pct)
        rows.append({"batch": n, "us_per_window": round(min(medians), 1), "other_cpu_pct": max(others)})
    return rows


def call_lines(calls: int, seconds: float, noise_dbfs: float | None) -> list[list[bytes]]:
    """A line of `seconds` per call: the caller's lines 2-4 s apart (the first within a second),
    over a quiet line; call k starts k frames in, so the calls' windows complete on different ticks."""
    import numpy as np

    from bench.turn_corpus import at_dbfs, pink
    from services.simulator.voice import speech_pcm
    ticks = int(seconds * 50)
    rng = np.random.default_rng(1)
    if noise_dbfs is None:
        floor = (at_dbfs(pink(8000 * 10, rng), -60.0) * 32767).astype(np.int16).tobytes()
    else:
        floor = (at_dbfs(pink(8000 * 10, rng), noise_dbfs) * 32767).astype(np.int16).tobytes()
    quiet = [floor[i:i + FRAME_BYTES] for i in range(0, len(floor), FRAME_BYTES)]
    distinct = []
    for k in range(min(calls, 12)):
        frames: list[bytes] = []
        while len(frames) < ticks + calls:
            gap = int(rng.integers(100, 200) if frames else rng.integers(10, 60))
            frames += [quiet[(len(frames) + i) % len(quiet)] for i in range(gap)]
            said = speech_pcm(LINES[(k + len(frames)) % len(LINES)], seed=k)
            frames += [said[i:i + FRAME_BYTES] for i in range(0, len(said), FRAME_BYTES)]
        distinct.append(frames)
    return [distinct[k % len(distinct)][k:k + ticks] for k in range(calls)]


def feed(lines: list[list[bytes]], batched: bool, limit: int) -> dict[str, Any]:
    """Every call's frame t, call after call, tick after tick; CPU per frame and the events."""
    from services.audio.silero_vad import SileroVad, WindowBatch, shared_model
    batch = WindowBatch(shared_model(), limit) if batched else None
    vads = [SileroVad(shared_model(), min_rms=400, batch=batch) for _ in lines]
    updates = [v.update for v in vads]
    events: list[list[tuple[int, Any]]] = [[] for _ in lines]
    ticks = len(lines[0])
    with Load() as load:
        for t in range(ticks):
            now = t * 0.02
            for c, update in enumerate(updates):
                if (event := update(lines[c][t], now)) is not None:
                    events[c].append((t, event))
        if batch is not None:
            batch.run()
    for c, vad in enumerate(vads):  # decided on the last frame: the next update would return it
        if vad._held is not None:
            events[c].append((ticks, vad._held))
    frames = ticks * len(lines)
    return {"us_per_frame": load.cpu_s / frames * 1e6, "other_cpu_pct": load.other_pct,
            "windows_per_run": batch.windows / batch.runs if batch is not None and batch.runs else 1.0,
            "events": events}


def lateness(alone: list[list[tuple[int, Any]]], batched: list[list[tuple[int, Any]]]) -> dict[str, Any]:
    """Frames between an event alone and the same event batched; the events must be the same."""
    late: dict[int, int] = {}
    for a, b in zip(alone, batched, strict=True):
        if [e for _, e in a] != [e for _, e in b]:
            raise AssertionError("batched windows changed a call's speech events")
        for (ta, _), (tb, _) in zip(a, b, strict=True):
            late[tb - ta] = late.get(tb - ta, 0) + 1
    return {"events": sum(late.values()), "frames_late": dict(sorted(late.items()))}


def run(calls: int, seconds: float, rounds: int, noise_dbfs: float | None, limit: int,
        progress: bool = True) -> dict[str, Any]:
    sizes = model_cost(rounds)
    if progress:
        for row in sizes:
            print(f"  batch {row['batch']:>3}: {row['us_per_window']:6.1f} µs per window "
                  f"(other CPU {row['other_cpu_pct']} %)", flush=True)
    lines = call_lines(calls, seconds, noise_dbfs)
    feed(lines[:4], True, limit)   # warm the model at the shapes the batch uses
    before, after = [], []
    for r in range(rounds):
        for batched, out in ((False, before), (True, after)) if r % 2 == 0 else ((True, after), (False, before)):
            result = feed(lines, batched, limit)
            out.append(result)
            if progress:
                print(f"  round {r + 1} {'batched' if batched else 'alone  '}: {result['us_per_frame']:6.2f} µs "
                      f"per frame, {result['windows_per_run']:.1f} windows per run, "
                      f"other CPU {result['other_cpu_pct']} %", flush=True)
    late = lateness(before[0]["events"], after[0]["events"])
    best_before = min(r["us_per_frame"] for r in before)
    best_after = min(r["us_per_frame"] for r in after)
    return {"model_cost": sizes, "calls": calls, "seconds": seconds, "limit": limit,
            "us_per_frame_alone": [round(r["us_per_frame"], 2) for r in before],
            "us_per_frame_batched": [round(r["us_per_frame"], 2) for r in after],
            "other_cpu_pct": [r["other_cpu_pct"] for r in before + after],
            "windows_per_run": round(statistics.mean(r["windows_per_run"] for r in after), 1),
            "best_alone": round(best_before, 2), "best_batched": round(best_after, 2),
            "ratio": round(best_after / best_before, 3), **late}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the neural VAD's windows of many calls in one run")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="of line per call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each")
    parser.add_argument("--noise-dbfs", type=float, help="noise at this level between the lines (above the floor)")
    parser.add_argument("--limit", type=int, default=None, help="windows per run (default: silero_vad.BATCH_LIMIT)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 calls x 2 s, 1 round")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds, args.rounds = 8, 2.0, 1
    from services.audio.silero_vad import BATCH_LIMIT
    limit = args.limit or BATCH_LIMIT
    line = "a quiet line" if args.noise_dbfs is None else f"noise at {args.noise_dbfs:g} dBFS"
    print(f"neural VAD, {args.calls} calls x {args.seconds:g} s, {line} between the lines, "
          f"batch limit {limit} ({machine_line()}):", flush=True)
    results = run(args.calls, args.seconds, args.rounds, args.noise_dbfs, limit)
    print(f"  CPU per frame: alone {results['best_alone']} µs, batched {results['best_batched']} µs "
          f"(best of {args.rounds}; ratio {results['ratio']}), {results['windows_per_run']} windows per run; "
          f"{results['events']} speech events, frames late: {results['frames_late']}")
    write_json(args.json, "vad_batch", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
