"""A/B server variants at one load, interleaved, to tell a real difference from the machine's noise.

    python -m bench.compare --calls 200 --repeat 3 \
        --variant main= --variant freeze=env:ZYLIN_BENCH_GC_FREEZE=1 --variant nodb=recorder:log

Each variant is `name=` followed by comma-separated options: `env:KEY=VALUE` (server environment,
see bench.server for the experiment switches), `recorder:log` (no database), `pace:2` (TTS
streamed at 2x real time). Runs go A, B, C, A, B, C, ... so slow drifts of a shared machine hit
every variant alike; each run is a fresh server process holding `--calls` real-time calls.
Reported per variant: the median over runs of event-loop-thread CPU per inbound frame (all work
of the process's event loop, divided by frames), lag p99, gaps, overhead p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import bench_settings, machine_line, percentile, table, write_json
from bench.loadgen import run_load
from bench.server import ServerProcess


def parse_variant(text: str) -> dict[str, Any]:
    name, _, spec = text.partition("=")
    variant: dict[str, Any] = {"name": name, "env": {}, "recorder": "default"}
    for option in filter(None, spec.split(",")):
        kind, _, value = option.partition(":")
        if kind == "env":
            key, _, val = value.partition("=")
            variant["env"][key] = val
        elif kind == "recorder":
            variant["recorder"] = value
        elif kind == "pace":
            variant["env"]["ZYLIN_BENCH_TTS_PACE"] = value
        else:
            raise SystemExit(f"unknown variant option {option!r}")
    return variant


async def run(variants: list[dict[str, Any]], calls: int, repeat: int, window_s: float,
              warm_s: float, progress: bool = True) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {v["name"]: [] for v in variants}
    for i in range(repeat):
        for v in variants:
            with ServerProcess(bench_settings(), recorder=v["recorder"], extra_env=v["env"]) as srv:
                r = await run_load(srv, calls, warm_s=warm_s, window_s=window_s)
            s, g = r["server"], r["generator"]
            overhead = [t["overhead_ms"] for t in s["turns"] if t.get("overhead_ms") is not None]
            one = {"loop_us_per_frame": r["loop_cpu_pct"] * 1e4 / (g["frames_sent"] / r["window_s"]),
                   "cpu": s["cpu_pct"], "loop_cpu": r["loop_cpu_pct"], "lag_p99": s["lag"]["p99"],
                   "gaps": g["gaps"], "overhead_p99": percentile(overhead, 99),
                   "other_cpu": r["other_cpu_pct"], "steal": r.get("steal_pct"),
                   "gc2_max": (s.get("gc_pause") or {}).get("2", {}).get("max")}
            runs[v["name"]].append(one)
            if progress:
                print(f"  run {i + 1} {v['name']}: loop {one['loop_cpu']} % = {one['loop_us_per_frame']:.1f} us/frame, "
                      f"lag p99 {one['lag_p99']} ms, gaps {one['gaps']}, other CPU {one['other_cpu']} %", flush=True)
    rows = []
    for v in variants:
        rs = runs[v["name"]]
        med = {k: (statistics.median(vals) if (vals := [x[k] for x in rs if x[k] is not None]) else None)
               for k in ("loop_us_per_frame", "cpu", "loop_cpu", "lag_p99", "overhead_p99", "other_cpu")}
        rows.append({"variant": v["name"], "runs": len(rs), **med, "gaps": sum(x["gaps"] for x in rs),
                     "lag_p99_all": " / ".join(str(x["lag_p99"]) for x in rs),
                     "gc2_max": max((x["gc2_max"] or 0) for x in rs) or None})
    return {"calls": calls, "rows": rows, "runs": runs}


COLUMNS = [("variant", "variant"), ("runs", "runs"), ("loop_us_per_frame", "loop-thread us/frame"),
           ("loop_cpu", "loop-thread CPU %"), ("cpu", "process CPU %"), ("lag_p99", "lag p99 ms (median)"),
           ("lag_p99_all", "lag p99 per run"), ("gaps", "gaps (all runs)"), ("overhead_p99", "overhead p99 ms"),
           ("gc2_max", "gc gen2 max ms"), ("other_cpu", "other CPU %")]


def render(results: dict[str, Any]) -> str:
    return "\n".join([f"A/B at {results['calls']} real-time calls, medians over interleaved runs ({machine_line()})",
                      "", table(results["rows"], COLUMNS)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="interleaved A/B of server variants")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--warm", type=float, default=8.0)
    parser.add_argument("--variant", action="append", required=True, help="name=option,option...")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 calls, one round, 2 s")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeat, args.window, args.warm = 3, 1, 2.0, 1.0
    results = asyncio.run(run([parse_variant(v) for v in args.variant], args.calls, args.repeat,
                              args.window, args.warm))
    print()
    print(render(results))
    write_json(args.json, "compare", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
