"""Codec throughput and resampler delay: what every call costs per second of audio, per core.

    python -m bench.codec [--seconds 20] [--quick] [--json PATH]

Throughput is measured the way the server runs the code: inbound 20 ms frames one at a time
(mu-law -> PCM16 + the VAD's energy), outbound TTS chunks (24 kHz PCM16, 4,801 bytes like the mock
and like HTTP chunks, odd sizes included) through Zylin's own OutboundEncoder (soxr resample to
8 kHz + mu-law + 20 ms framing), and each step on its own. "x real time" = seconds of audio
processed per second of one core (CPU time of this process, single thread).

Delay per soxr quality (24 kHz -> 8 kHz, streaming): how much input soxr needs before the first
output sample appears, how far the output trails the input on average, and what `flush()` gives
back at a sentence end. Plus the frequency response that buys it: telephone band (300-3,400 Hz)
and rejection of what would alias into it (4.4-7 kHz).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np
import soxr

from bench.common import machine_line, table, write_json
from services.audio.codec import (
    FRAME_BYTES,
    OutboundEncoder,
    Resampler,
    pcm_to_ulaw,
    rms,
    ulaw_to_pcm,
)
from services.telephony.media_streams import inbound_media, media_message, parse_event

QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
TTS_RATE = 24000
TTS_CHUNK = 4801            # bytes: 100 ms of 24 kHz PCM16 plus one, as real HTTP chunks split samples
TONES_HZ = (300, 1000, 3000, 3400, 4400, 5000, 7000)


def _speechlike(seconds: float, rate: int) -> np.ndarray:
    """Band-limited noise with a syllable envelope: busier than silence, like speech for a codec."""
    rng = np.random.default_rng(7)
    n = int(seconds * rate)
    x = rng.standard_normal(n)
    t = np.arange(n) / rate
    env = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    return np.clip(x * env * 4000, -32768, 32767).astype("<i2")


def _cpu_per_batch(fn, min_cpu_s: float, repeats: int = 5) -> float:
    """CPU seconds of one call of `fn`: the best of `repeats` rounds of about min_cpu_s/repeats
    each (the minimum, as timeit does: other processes on the machine only ever add time)."""
    fn()  # warm up
    best = float("inf")
    for _ in range(repeats):
        batches = 0
        start = time.process_time()
        while True:
            fn()
            batches += 1
            used = time.process_time() - start
            if used >= min_cpu_s / repeats:
                break
        best = min(best, used / batches)
    return best


def throughput(seconds_of_audio: float, min_cpu_s: float) -> list[dict]:
    rows = []
    pcm8 = _speechlike(seconds_of_audio, 8000).tobytes()
    ulaw = pcm_to_ulaw(pcm8)
    frames = [ulaw[i:i + FRAME_BYTES] for i in range(0, len(ulaw) - FRAME_BYTES + 1, FRAME_BYTES)]
    audio_s = len(frames) * 0.020

    def add(step: str, fn, unit: str = "20 ms frame") -> None:
        per = _cpu_per_batch(fn, min_cpu_s)
        rows.append({"step": step, "unit": unit, "x_real_time": audio_s / per,
                     "us_per_frame": per / len(frames) * 1e6})

    # inbound, per 20 ms frame, as session.on_media does it
    add("decode mu-law -> PCM16 (audioop)", lambda: [ulaw_to_pcm(f) for f in frames])
    add("decode + VAD energy (on_media's codec work)", lambda: [rms(ulaw_to_pcm(f)) for f in frames])
    messages = [inbound_media(i, "MZ" + "0" * 32, i, i * 20, f) for i, f in enumerate(frames)]
    add("inbound frame: parse JSON + base64 + decode + energy",
        lambda: [rms(ulaw_to_pcm(parse_event(m).payload)) for m in messages])

    # outbound, per TTS chunk
    pcm24 = _speechlike(seconds_of_audio, TTS_RATE).tobytes()
    chunks = [pcm24[i:i + TTS_CHUNK] for i in range(0, len(pcm24), TTS_CHUNK)]
    pcm8_frames = [pcm8[i:i + 2 * FRAME_BYTES] for i in range(0, len(pcm8), 2 * FRAME_BYTES)]
    add("encode PCM16 -> mu-law (audioop)", lambda: [pcm_to_ulaw(f) for f in pcm8_frames])
    for q in QUALITIES:
        def resample(q=q) -> None:
            r = Resampler(TTS_RATE, 8000, q)
            for c in chunks:
                r.push(c)
            r.flush()
        add(f"resample 24k -> 8k soxr {q} (Resampler)", resample, "TTS chunk")
    for q in QUALITIES:
        def outbound(q=q) -> None:
            enc = OutboundEncoder(TTS_RATE, "pcm16", q)
            for c in chunks:
                enc.push(c)
            enc.flush()
        add(f"outbound: resample {q} + encode + frame", outbound, "TTS chunk")
    out_ulaw = ulaw[: len(ulaw) - len(ulaw) % 8000]
    add("outbound message: base64 + JSON (1 s per message)",
        lambda: [media_message("MZ" + "0" * 32, out_ulaw[i:i + 8000]) for i in range(0, len(out_ulaw), 8000)],
        "1 s message")
    return rows


def _response_db(quality: str) -> dict[int, float]:
    out = {}
    for f in TONES_HZ:
        t = np.arange(TTS_RATE) / TTS_RATE
        x = (np.sin(2 * np.pi * f * t) * 16000).astype(np.int16)
        s = soxr.ResampleStream(TTS_RATE, 8000, 1, dtype="int16", quality=quality)
        y = np.concatenate([s.resample_chunk(x[i:i + 2400]) for i in range(0, len(x), 2400)]
                           + [s.resample_chunk(np.zeros(0, np.int16), last=True)]).astype(float)
        y = y[800:-800]
        level = np.sqrt(np.mean(y ** 2)) / (16000 / np.sqrt(2))
        out[f] = round(20 * np.log10(level + 1e-9), 1)
    return out


def delays() -> list[dict]:
    """Streaming delay per quality, fed in 1 ms and in 20 ms pieces of a speech-like signal."""
    x = _speechlike(2.0, TTS_RATE)
    rows = []
    for q in QUALITIES:
        row: dict = {"quality": q}
        for piece_ms in (1, 20, 100):
            step = TTS_RATE * piece_ms // 1000
            s = soxr.ResampleStream(TTS_RATE, 8000, 1, dtype="int16", quality=q)
            fed = out = 0
            first = None
            trail = []
            for i in range(0, len(x), step):
                y = s.resample_chunk(x[i:i + step])
                fed += len(x[i:i + step])
                out += len(y)
                if first is None and out:
                    first = fed / TTS_RATE * 1000
                trail.append(fed / TTS_RATE * 1000 - out / 8)
            tail = len(s.resample_chunk(np.zeros(0, np.int16), last=True)) / 8
            if piece_ms == 1:
                row.update(first_out_ms=first, trail_mean_ms=float(np.mean(trail)),
                           trail_max_ms=float(max(trail)), flush_tail_ms=tail, soxr_delay_ms=s.delay() / 8)
            row[f"first_out_{piece_ms}ms_pieces"] = first
        response = _response_db(q)
        row.update({f"db_{f}": v for f, v in response.items()})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="codec throughput and soxr delay")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per batch")
    parser.add_argument("--min-cpu", type=float, default=1.0, help="CPU seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny batches")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.min_cpu = 2.0, 0.05
    results = run(args.seconds, args.min_cpu)
    print(render(results))
    write_json(args.json, "codec", args, results)
    return 0


def run(seconds: float, min_cpu: float) -> dict:
    return {"throughput": throughput(seconds, min_cpu), "delay": delays()}


def render(results: dict) -> str:
    out = [f"codec, one core ({machine_line()})", "",
           table(results["throughput"], [("step", "step"), ("unit", "fed per"),
                                          ("x_real_time", "x real time / core"),
                                          ("us_per_frame", "us per 20 ms of audio")], digits=2),
           "", "soxr 24 kHz -> 8 kHz, streaming delay (ms of audio) and response (dB)", "",
           table(results["delay"], [("quality", "quality"), ("first_out_ms", "1st output after"),
                                    ("first_out_20ms_pieces", "1st out (20 ms pieces)"),
                                    ("first_out_100ms_pieces", "1st out (100 ms pieces)"),
                                    ("trail_mean_ms", "trails by (mean)"), ("trail_max_ms", "(max)"),
                                    ("flush_tail_ms", "flush tail")]
                 + [(f"db_{f}", f"{f} Hz") for f in TONES_HZ])]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
