"""End-to-end turn latency with providers as slow as the real ones: Zylin's share is invisible.

    python -m bench.realistic [--calls 10] [--window 60] [--quick] [--json PATH]

The mock providers are given the delays of public component figures:
- end of speech -> final transcript: the local VAD's end-of-speech silence of 300 ms (the same
  ~300 ms a streaming recognizer's endpointing takes; the mock recognizer answers `finalize` at once);
- LLM first token: 375 ms (MOCK_LLM_DELAY_MS);
- TTS first byte: 100 ms (MOCK_TTS_DELAY_MS).
Calls run at real time (the VAD counts 20 ms frames, so only real pace gives real endpointing),
each saying `--lines` lines and dialing again. Per turn: first_audio_ms (end of speech -> first
frame sent) with its parts, heard at the caller (last voiced frame sent -> first reply audio
received), and overhead_ms, what Zylin adds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import bench_settings, machine_line, percentile, table, write_json
from bench.loadgen import run_load
from bench.server import ServerProcess
from services.orchestrator.latency import LATENCY_FIELDS

PUBLIC_FIGURES = {"vad_end_silence_ms": 300, "mock_asr_endpointing_ms": 300, "mock_asr_delay_ms": 0.0,
                  "mock_llm_delay_ms": 375.0, "mock_tts_delay_ms": 100.0}
# The parts of a turn, then its totals; not tools: the load generator's lines call none.
PARTS = (*(f for f in LATENCY_FIELDS if f.part and f.name != "tool_ms"), *(f for f in LATENCY_FIELDS if not f.part))


def realistic_settings(**overrides: Any) -> dict[str, Any]:
    return bench_settings(**{**PUBLIC_FIGURES, **overrides})


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    turns = [t for t in r["server"]["turns"] if t.get("first_audio_ms") is not None]
    rows = []
    for part in PARTS:
        values = [t[part.name] for t in turns if t.get(part.name) is not None]
        rows.append({"part": part.short, "n": len(values), "p50": percentile(values, 50),
                     "p95": percentile(values, 95), "max": max(values) if values else None})
    caller = r["generator"]["replies_ms"]
    rows.append({"part": "caller: end of speech -> reply heard", "n": len(caller),
                 "p50": percentile(caller, 50), "p95": percentile(caller, 95),
                 "max": max(caller) if caller else None})
    first = [t["first_audio_ms"] for t in turns]
    over = [t["overhead_ms"] for t in turns]
    share = (percentile(over, 50) or 0) / (percentile(first, 50) or 1) * 100
    return {"rows": rows, "turns": len(turns), "overhead_share_pct_p50": share,
            "cpu": r["server"]["cpu_pct"], "other_cpu": r["other_cpu_pct"], "calls": r["n"]}


async def run(calls: int, window_s: float, lines: int, warm_s: float, server: Any = None,
              warm_up: bool = True, speed: float = 1.0) -> dict[str, Any]:
    """`speed` > 1 only for smoke runs: the VAD's endpointing shrinks with the pace."""
    options = dict(warm_s=warm_s, window_s=window_s, lines_per_call=lines, warm_up=warm_up, speed=speed)
    if server is None:
        with ServerProcess(realistic_settings()) as srv:
            r = await run_load(srv, calls, **options)
    else:
        r = await run_load(server, calls, **options)
    return summarise(r) | {"settings": PUBLIC_FIGURES, "speed": speed}


def render(results: dict[str, Any]) -> str:
    return "\n".join([
        f"realistic provider delays (endpointing 300 ms, LLM first token 375 ms, TTS first byte 100 ms), "
        f"{results['calls']} calls at "
        f"{'real time' if results.get('speed', 1.0) == 1.0 else str(results['speed']) + 'x real time'}, "
        f"{results['turns']} turns, ms ({machine_line()})", "",
        table(results["rows"], [("part", "part of the turn"), ("n", "turns"), ("p50", "p50"), ("p95", "p95"),
                                ("max", "max")]), "",
        f"Zylin's overhead is {results['overhead_share_pct_p50']:.2f} % of the median turn"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="end-to-end latency with realistic provider delays")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--warm", type=float, default=4.0)
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 calls, 3 s, 8x pace")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    speed = 1.0
    if args.quick:
        args.calls, args.window, args.warm, speed = 2, 3.0, 0.5, 8.0
    results = asyncio.run(run(args.calls, args.window, args.lines, args.warm, speed=speed))
    print(render(results))
    write_json(args.json, "realistic", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
