"""How many simultaneous real-time calls one Zylin server process carries.

    python -m bench.concurrency [--steps 10,50,100,200,300,400,500,600,800] [--window 20] [--quick] [--json PATH]

The server runs in its own process (bench.server: the app as `python main.py` builds it, uvicorn +
uvloop, its default recorder and database on a temp file); the load generator (bench.loadgen: one
process, one shared 20 ms ticker, raw WebSocket client) places N calls through the signed webhook
and holds them at real-time pace: caller audio in, replies out, marks echoed after playout, a new
line after each reply. Per N, over a steady window after the ramp:

- lag p99: how late the server picks inbound frames up vs when they were due (see bench.server);
- gaps: reply audio that reached the caller after its playout deadline (see bench.loadgen);
- turn overhead p99 (overhead_ms, docs/architecture.md "Latency"), server CPU % and RSS;
- the generator's own tick lateness and CPU, to show it is not what limits the figure.

Capacity = the largest N with lag p99 < 20 ms, no caller hearing a gap, and every call answered.
Steps stop at the first N that fails (--keep-going to run them all).
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
from bench.server import ServerGroup, ServerProcess

LAG_LIMIT_MS = 20.0


def step_row(r: dict[str, Any]) -> dict[str, Any]:
    s, g = r["server"], r["generator"]
    overhead = [t["overhead_ms"] for t in s["turns"] if t.get("overhead_ms") is not None]
    n = r["n"]
    ok = (s["lag"]["p99"] is not None and s["lag"]["p99"] < LAG_LIMIT_MS and g["gaps"] == 0
          and g["failed"] == 0 and g["closed_by_server"] == 0 and g["timeouts"] == 0)
    return {
        "n": n, "failed": g["failed"] + g["closed_by_server"],
        "cpu": s["cpu_pct"], "loop_cpu": r.get("loop_cpu_pct"), "rss": s["rss_peak_mb"],
        "rss_per_call": (s["rss_peak_mb"] - r["rss_idle_mb"]) / n if n else None,
        "fps": g["frames_sent"] / r["window_s"],
        "loop_us": (r.get("loop_cpu_total_pct") or r.get("loop_cpu_pct") or 0) * 1e4
                   / max(g["frames_sent"] / r["window_s"], 1),
        "lag_p50": s["lag"]["p50"], "lag_p99": s["lag"]["p99"], "lag_max": s["lag"]["max"],
        "handling_p99": s["handling"]["p99"],
        "gc2_n": (s.get("gc_pause") or {}).get("2", {}).get("n"),
        "gc2_max": (s.get("gc_pause") or {}).get("2", {}).get("max"),
        "gaps": g["gaps"], "calls_with_gap": g["calls_with_gap"], "gap_max": g["gap_max_ms"],
        "turns": len(overhead), "overhead_p50": percentile(overhead, 50),
        "overhead_p99": percentile(overhead, 99),
        "greeting_p99": percentile(s["greetings_ms"], 99), "timeouts": g["timeouts"],
        "gen_lag_p99": g["gen_lag"]["p99"], "gen_cpu": r["gen_cpu_pct"],
        "other_cpu": r["other_cpu_pct"], "steal": r.get("steal_pct"), "ok": ok,
        "db_writes_s": (s.get("db_writes") or 0) / r["window_s"],
        "vad_batch": s["vad_windows"] / s["vad_runs"] if s.get("vad_runs") else None,
    }


BOUNDS = [("n", "calls"), ("ok", "within bounds"), ("lag_p50", "lag p50 ms"), ("lag_p99", "lag p99 ms"),
          ("lag_max", "lag max ms"), ("gaps", "gaps heard"), ("gap_max", "max gap ms"),
          ("failed", "failed calls"), ("timeouts", "unanswered lines"), ("turns", "turns"),
          ("overhead_p50", "overhead p50 ms"), ("overhead_p99", "overhead p99 ms"),
          ("greeting_p99", "greeting p99 ms")]
COSTS = [("n", "calls"), ("cpu", "server CPU %"), ("loop_cpu", "event-loop thread CPU % (per process)"),
         ("loop_us", "loop us per frame"), ("fps", "frames/s in"), ("rss", "RSS MB"),
         ("rss_per_call", "MB/call"), ("db_writes_s", "db writes/s"), ("vad_batch", "VAD windows per run"),
         ("gc2_max", "gc gen2 max ms"),
         ("gen_lag_p99", "generator lag p99 ms"), ("gen_cpu", "generator CPU %"),
         ("other_cpu", "other CPU %"), ("steal", "steal %")]


async def run(steps: list[int], window_s: float, warm_s: float, keep_going: bool, loop: str,
              recorder: str, settings: dict[str, Any], tts_pace: float = 0.0,
              progress: bool = True, profile: str | None = None,
              server_env: dict[str, str] | None = None, server: Any = None,
              warm_up: bool = True, workers: int = 1, retries: int = 0,
              noisy_pct: float = 25.0) -> dict[str, Any]:
    """One fresh server process per step (or the given `server`, for a smoke test)."""
    rows, raw = [], []
    env = dict(server_env or {})
    if tts_pace:
        env["ZYLIN_BENCH_TTS_PACE"] = str(tts_pace)
    for n in steps:
        options = dict(warm_s=warm_s, window_s=window_s, warm_up=warm_up,
                       profile=f"{profile}-{n}.txt" if profile else None)
        for attempt in range(retries + 1):
            if server is not None:
                r = await run_load(server, n, **options)
            elif workers > 1:
                with ServerGroup(settings, workers, loop=loop, recorder=recorder, extra_env=env) as srv:
                    r = await run_load(srv, n, **options)
            else:
                with ServerProcess(settings, loop=loop, recorder=recorder, extra_env=env) as srv:
                    r = await run_load(srv, n, **options)
            row = step_row(r)
            row["attempt"] = attempt + 1
            if row["ok"] or row["other_cpu"] + (row["steal"] or 0) < noisy_pct:
                break
            if progress:  # other processes took the CPU: that failure says nothing about Zylin
                print(f"  N={n}: out of bounds while other processes used {row['other_cpu']} % CPU; "
                      "measuring again", flush=True)
        rows.append(row)
        raw.append(r)
        if progress:
            print(f"  N={n}: {'ok' if row['ok'] else 'OUT OF BOUNDS'}  lag p99 {row['lag_p99']} ms, "
                  f"gaps {row['gaps']}, CPU {row['cpu']} % (loop thread {row['loop_cpu']} %), "
                  f"overhead p99 {row['overhead_p99']} ms, "
                  f"gc2 max {row['gc2_max']} ms, generator lag p99 {row['gen_lag_p99']} ms, "
                  f"other CPU {row['other_cpu']} %", flush=True)
        if not row["ok"] and not keep_going:
            break
    passing = [row["n"] for row in rows if row["ok"]]
    capacity = 0
    for row in rows:  # the largest N below the first failure
        if not row["ok"]:
            break
        capacity = row["n"]
    return {"steps": rows, "capacity": capacity, "passing": passing,
            "raw": [{k: v for k, v in r.items() if k != "server"} | {"server": {
                k: v for k, v in r["server"].items() if k not in ("turns",)}} for r in raw]}


def render(results: dict[str, Any], window_s: float, workers: int = 1) -> str:
    where = "one server process" if workers == 1 else f"{workers} server processes on one port (SO_REUSEPORT)"
    return "\n".join([
        f"concurrency, {where}, real-time calls, {window_s:g} s window per step ({machine_line()})",
        "", table(results["steps"], BOUNDS), "", table(results["steps"], COSTS), "",
        f"capacity (lag p99 < {LAG_LIMIT_MS:g} ms, no gap, every call answered): {results['capacity']} calls"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="concurrent real-time calls on one server process")
    parser.add_argument("--steps", default="10,50,100,200,300,400,500,600,800,1000")
    parser.add_argument("--window", type=float, default=20.0, help="measurement window per step (s)")
    parser.add_argument("--warm", type=float, default=8.0, help="seconds between ramp and window")
    parser.add_argument("--keep-going", action="store_true", help="run every step, even past a failure")
    parser.add_argument("--loop", default="auto", help="server event loop: auto (uvloop, as main.py) | asyncio")
    parser.add_argument("--recorder", default="default", help="default (as main.py) | log (no database)")
    parser.add_argument("--tts-pace", type=float, default=0.0,
                        help="stream mock TTS at this multiple of real time (0: as fast as it renders)")
    parser.add_argument("--profile", help="py-spy the server during each window: PREFIX-N.txt "
                        "(summarise with python -m bench.profile_report)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port (SO_REUSEPORT), as uvicorn --workers")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a failed step again when other processes used > 25 %% CPU")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server process (e.g. ZYLIN_BENCH_GC_FREEZE=1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 calls, 2 s window")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    steps = [int(x) for x in args.steps.split(",") if x.strip()]
    if args.quick:
        steps, args.window, args.warm = [3], 2.0, 1.0
    results = asyncio.run(run(steps, args.window, args.warm, args.keep_going, args.loop, args.recorder,
                              bench_settings(), args.tts_pace, profile=args.profile,
                              server_env=dict(kv.split("=", 1) for kv in args.server_env),
                              workers=args.workers, retries=args.retries))
    print()
    print(render(results, args.window, args.workers))
    write_json(args.json, "concurrency", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
