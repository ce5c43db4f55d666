"""What Zylin itself adds to a turn, and how fast the greeting starts, at 1, 10 and 100 calls.

    python -m bench.turn_overhead [--calls 1,10,100] [--window 40] [--quick] [--json PATH]

Mock providers with zero delay, so the providers' own time is ~0 and what is left is Zylin's.
Per caller turn the server records (docs/architecture.md, "Latency") first_audio_ms = end of caller speech -> first
outbound media frame sent, and overhead_ms = first_audio_ms - (asr + llm first token + tools + tts
first byte): the turn manager, the brain loop, the sentence chunker, resampling, framing and the
socket. asr_ms holds the local VAD's 300 ms end-of-speech silence, so it is not overhead.
Greeting = `start` event -> greeting sent (server, CallInfo.greeting_ms) and `start` sent -> first
greeting audio received (caller side, over the loopback socket).

Calls churn: each line of the switchboard places a call, says `--lines` lines (waiting for each
reply), hangs up, and dials again, so greetings keep coming. The server runs in its own process
(bench.server), the callers in this one (bench.loadgen). N=1 runs its callers `--solo-speed` times
faster than real time to collect many turns in little time (one call leaves the server idle >95 %
of the time either way); N >= 10 run at real time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import bench_settings, machine_line, percentile, summary, table, write_json
from bench.loadgen import run_load
from bench.server import ServerProcess

TARGET_OVERHEAD_P99_MS = 10.0
TARGET_GREETING_P99_MS = 30.0


def row_of(r: dict[str, Any]) -> dict[str, Any]:
    s, g = r["server"], r["generator"]
    turns = [t for t in s["turns"] if t.get("overhead_ms") is not None]
    over = summary([t["overhead_ms"] for t in turns])
    greet = summary(s["greetings_ms"])
    parts = {k: percentile([t[k] for t in turns if t.get(k) is not None], 99)
             for k in ("turn_to_llm", "first_sentence", "audio_out")}
    greet_client = summary(g["greetings_ms"])
    return {
        "n": r["n"], "speed": r["speed"], "turns": over["n"],
        "overhead_p50": over["p50"], "overhead_p95": over["p95"], "overhead_p99": over["p99"],
        "overhead_max": over["max"], "turn_to_llm_p99": parts["turn_to_llm"],
        "first_sentence_p99": parts["first_sentence"], "audio_out_p99": parts["audio_out"],
        "first_audio_p50": percentile([t["first_audio_ms"] for t in turns], 50),
        "llm_tts_p50": percentile([(t["llm_ttft_ms"] or 0) + (t["tts_ttfb_ms"] or 0) for t in turns], 50),
        "greetings": greet["n"], "greeting_p50": greet["p50"], "greeting_p99": greet["p99"],
        "greeting_max": greet["max"], "greeting_client_p99": greet_client["p99"],
        "lag_p99": s["lag"]["p99"], "cpu": s["cpu_pct"], "other_cpu": r["other_cpu_pct"],
        "steal": r.get("steal_pct"), "cold_greeting": r["cold_call"]["greeting_ms"],
        "cold_greeting_heard": r["cold_call"]["greeting_heard_ms"],
    }


COLUMNS = [("n", "calls"), ("speed", "pace x"), ("turns", "turns"), ("overhead_p50", "overhead p50"),
           ("overhead_p95", "p95"), ("overhead_p99", "p99"), ("overhead_max", "max"),
           ("turn_to_llm_p99", "p99 of: transcript->brain"), ("first_sentence_p99", "first token->first sentence"),
           ("audio_out_p99", "tts bytes->frame sent"),
           ("first_audio_p50", "first audio p50"), ("llm_tts_p50", "llm+tts p50"),
           ("greetings", "greetings"), ("greeting_p50", "greeting p50"), ("greeting_p99", "greeting p99"),
           ("greeting_max", "greeting max"), ("greeting_client_p99", "greeting heard p99"),
           ("cold_greeting_heard", "1st call's greeting heard"),
           ("lag_p99", "frame lag p99"), ("cpu", "server CPU %"), ("other_cpu", "other CPU %"), ("steal", "steal %")]


async def run(calls: list[int], window_s: float, solo_speed: float, lines: int, warm_s: float,
              settings: dict[str, Any] | None = None, progress: bool = True, server: Any = None,
              warm_up: bool = True, server_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One fresh server process per N (or the given `server`, for a smoke test)."""
    rows, raw = [], []
    for n in calls:
        speed = solo_speed if n == 1 else 1.0
        if server is not None:
            r = await run_load(server, n, warm_s=warm_s, window_s=window_s, speed=speed,
                               lines_per_call=lines, warm_up=warm_up)
        else:
            with ServerProcess(settings or bench_settings(), extra_env=server_env) as srv:
                r = await run_load(srv, n, warm_s=warm_s, window_s=window_s, speed=speed,
                                   lines_per_call=lines, warm_up=warm_up)
        row = row_of(r)
        rows.append(row)
        raw.append(r)
        if progress:
            print(f"  N={n}: {row['turns']} turns, overhead p99 {row['overhead_p99']} ms, "
                  f"{row['greetings']} greetings, p99 {row['greeting_p99']} ms", flush=True)
    return {"rows": rows, "raw": raw,
            "targets": {"overhead_p99_ms": TARGET_OVERHEAD_P99_MS, "greeting_p99_ms": TARGET_GREETING_P99_MS}}


def render(results: dict[str, Any]) -> str:
    return "\n".join([
        f"turn overhead and greeting, zero-delay mocks, all times in ms ({machine_line()})", "",
        table(results["rows"], COLUMNS), "",
        f"targets: overhead p99 <= {TARGET_OVERHEAD_P99_MS:g} ms at 100 calls; "
        f"greeting p99 <= {TARGET_GREETING_P99_MS:g} ms"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="turn overhead and greeting latency")
    parser.add_argument("--calls", default="1,10,100", help="concurrent calls per run")
    parser.add_argument("--window", type=float, default=40.0, help="measurement window per run (s)")
    parser.add_argument("--warm", type=float, default=4.0)
    parser.add_argument("--lines", type=int, default=3, help="caller lines per call before hanging up")
    parser.add_argument("--solo-speed", type=float, default=8.0, help="pace of the N=1 run")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server process (experiments, see bench.server)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one call, 2 s")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    calls = [int(x) for x in args.calls.split(",") if x.strip()]
    if args.quick:
        calls, args.window, args.warm = [1], 2.0, 0.5
    results = asyncio.run(run(calls, args.window, args.solo_speed, args.lines, args.warm,
                              server_env=dict(kv.split("=", 1) for kv in args.server_env)))
    print()
    print(render(results))
    write_json(args.json, "turn_overhead", args, {"rows": results["rows"], "targets": results["targets"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
