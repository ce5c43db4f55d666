"""What a call costs in memory while it is up, and whether anything stays behind when it ends.

    python -m bench.memory [--hold 50,100,200] [--sequential 1000] [--tracemalloc] [--quick] [--json PATH]

1. Per active call: a fresh server process; one warm-up call; RSS after gc (and malloc_trim, so
   glibc's free lists do not count) with no calls; then N calls held open and talking at real
   time; RSS sampled every second over a window (peak and after gc). MB per call = growth / N.
2. Leak check: `--sequential` calls one after another (`--parallel` lines dialing in turn, each
   call: greeting, one line, the reply, hang up; paced `--speed` x real time). After every tenth
   of them, with no call up: gc, RSS, live Python objects, and the per-call objects still alive
   (CallSession, Speaker, recognizer, encoder ... must all be back to zero). No growth = no leak.
   `--tracemalloc` also diffs allocations from the first checkpoint to the last (by source line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import bench_settings, machine_line, rss_mb, table, write_json
from bench.loadgen import LoadGenerator, warm_up_call
from bench.server import ServerProcess

PER_CALL_TYPES = ("CallSession", "Reply", "Speaker", "Synthesis", "MockRecognizer", "OfflineBrain",
                  "OutboundEncoder", "Resampler", "StreamSender")


async def _wait_idle(srv: ServerProcess, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await srv.aget("/bench/stats"))["streams_open"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


class _Given:
    """Use a running server as if started here (smoke tests share one)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def __enter__(self) -> Any:
        return self.server

    def __exit__(self, *exc) -> None:
        return None


RECORDER = {"name": "default"}  # --recorder: which recorder the server processes use


def _server(settings: dict[str, Any], server: Any):
    return _Given(server) if server is not None else ServerProcess(settings, recorder=RECORDER["name"])


async def hold(n: int, window_s: float, warm_s: float, settings: dict[str, Any], server: Any = None,
               warm_up: bool = True) -> dict[str, Any]:
    with _server(settings, server) as srv:
        if warm_up:
            await warm_up_call(srv)
        await _wait_idle(srv)
        idle = await srv.aget("/bench/gc")
        async with LoadGenerator(srv.base_url) as gen:
            await gen.ramp(n, n / 50.0)
            await asyncio.sleep(warm_s)
            samples = []
            end = time.monotonic() + window_s
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                samples.append(sum(rss_mb(pid) for pid in srv.pids))
            held = await srv.aget("/bench/gc?types=1")
            failed = len(gen.failed)
            await gen.hang_up_all()
        await _wait_idle(srv)
        after = await srv.aget("/bench/gc?types=1")
    peak = max(samples)
    mean = sum(samples) / len(samples)
    return {"n": n, "failed": failed, "rss_idle": idle["rss_mb"], "rss_peak": peak, "rss_mean": mean,
            "rss_held_gc": held["rss_mb"], "per_call_peak": (peak - idle["rss_mb"]) / n,
            "per_call_mean": (mean - idle["rss_mb"]) / n, "per_call_gc": (held["rss_mb"] - idle["rss_mb"]) / n,
            "sessions_held": held["types"]["CallSession"], "rss_after": after["rss_mb"],
            "sessions_after": after["types"]["CallSession"]}


async def sequential(total: int, parallel: int, speed: float, checkpoints: int, trace: bool,
                     settings: dict[str, Any], progress: bool = True, server: Any = None,
                     warm_up: bool = True) -> dict[str, Any]:
    rows = []
    diff = None
    with _server(settings, server) as srv:
        if warm_up:
            await warm_up_call(srv)
        await _wait_idle(srv)
        if trace:
            await srv.aget("/bench/tracemalloc?action=start")
        per_checkpoint = max(1, total // checkpoints)
        done = 0
        failed = 0
        started = time.monotonic()
        async with LoadGenerator(srv.base_url, speed=speed) as gen:
            while True:
                await _wait_idle(srv)
                await srv.aget("/bench/stats?reset=all")  # the bench's own per-turn numbers go too
                snap = await srv.aget("/bench/gc?types=1")
                if trace:
                    t = await srv.aget("/bench/tracemalloc?action=" + ("snapshot" if done == 0 else "diff"))
                    if done:
                        diff = t
                row = {"calls": done, "rss_mb": snap["rss_mb"], "objects": snap["objects"],
                       "tasks": snap["asyncio_tasks"], "elapsed_s": time.monotonic() - started}
                row.update({k: snap["types"][k] for k in PER_CALL_TYPES})
                row["per_call_alive"] = sum(snap["types"][k] for k in PER_CALL_TYPES)
                rows.append(row)
                if progress:
                    print(f"  after {done} calls: RSS {row['rss_mb']:.2f} MB, {row['objects']:,} objects, "
                          f"{row['per_call_alive']} per-call objects alive", flush=True)
                if done >= total:
                    break
                batch = min(per_checkpoint, total - done)
                queue: asyncio.Queue[None] = asyncio.Queue()
                for _ in range(batch):
                    queue.put_nowait(None)

                async def dial(queue: asyncio.Queue[None]) -> None:
                    nonlocal failed
                    while not queue.empty():
                        queue.get_nowait()
                        call = await gen.place(lines=1)
                        if call.stats.error:
                            failed += 1
                            continue
                        try:
                            await asyncio.wait_for(call.closed.wait(), 60.0)
                        except TimeoutError:
                            call.hang_up()

                await asyncio.gather(*(dial(queue) for _ in range(parallel)))
                gen.calls.clear()  # the generator keeps no per-call state between checkpoints
                done += batch
    # the first fifth of the calls warm the process up (allocator arenas, caches filling to their
    # bounds); growth is judged after that: end to end, and as a least-squares slope
    settled = [r for r in rows if r["calls"] >= total // 5] or rows
    first, last = settled[0], rows[-1]
    span = last["calls"] - first["calls"]
    return {"rows": rows, "failed": failed, "tracemalloc": diff,
            "growth_mb": last["rss_mb"] - first["rss_mb"],
            "growth_kb_per_call": (last["rss_mb"] - first["rss_mb"]) * 1000 / span if span else None,
            "slope_kb_per_call": _slope([(r["calls"], r["rss_mb"] * 1000) for r in settled]),
            "objects_growth": last["objects"] - first["objects"],
            "per_call_alive_at_end": last["per_call_alive"], "compared_from_calls": first["calls"]}


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


HOLD_COLUMNS = [("n", "calls held"), ("failed", "failed"), ("rss_idle", "RSS idle MB"),
                ("rss_mean", "RSS mean MB"), ("rss_peak", "RSS peak MB"), ("rss_held_gc", "RSS after gc MB"),
                ("per_call_mean", "MB/call (mean)"), ("per_call_peak", "MB/call (peak)"),
                ("per_call_gc", "MB/call (after gc)"), ("sessions_held", "sessions alive"),
                ("rss_after", "RSS after hang-up MB"), ("sessions_after", "sessions after")]
SEQ_COLUMNS = [("calls", "calls done"), ("elapsed_s", "s"), ("rss_mb", "RSS MB (after gc)"),
               ("objects", "live objects"), ("tasks", "asyncio tasks"), ("per_call_alive", "per-call objects alive")]


async def run(hold_ns: list[int], window_s: float, warm_s: float, total: int, parallel: int, speed: float,
              checkpoints: int, trace: bool, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = settings or bench_settings()
    held = []
    for n in hold_ns:
        held.append(await hold(n, window_s, warm_s, settings))
        print(f"  {n} calls held: {held[-1]['per_call_peak']:.3f} MB/call at peak", flush=True)
    seq = await sequential(total, parallel, speed, checkpoints, trace, settings) if total else None
    return {"hold": held, "sequential": seq}


def render(results: dict[str, Any]) -> str:
    out = [f"memory ({machine_line()})", "", "RSS per active call (real-time calls, talking)", "",
           table(results["hold"], HOLD_COLUMNS, digits=2)]
    seq = results["sequential"]
    if seq:
        slope = seq["slope_kb_per_call"]
        out += ["", "sequential calls: memory with no call up, after gc", "", table(seq["rows"], SEQ_COLUMNS, digits=2),
                "", f"growth from {seq['compared_from_calls']} to {seq['rows'][-1]['calls']} calls: "
                f"{seq['growth_mb']:+.2f} MB RSS ({seq['growth_kb_per_call']:+.2f} KB/call end to end, "
                f"{slope if slope is None else round(slope, 2)} "
                f"KB/call fitted), "
                f"{seq['objects_growth']:+,} live objects; per-call objects alive at the end: "
                f"{seq['per_call_alive_at_end']}; failed calls: {seq['failed']}"]
        if seq.get("tracemalloc") and seq["tracemalloc"].get("top"):
            out += ["", f"tracemalloc, growth by line (total {seq['tracemalloc']['growth_kb']:+.1f} KB):"]
            out += [f"  {t['size_diff_kb']:+8.1f} KB {t['count_diff']:+6d} blocks  {t['where']}"
                    for t in seq["tracemalloc"]["top"][:10]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS per active call and after many sequential calls")
    parser.add_argument("--hold", default="50,100,200", help="calls held open at once, per run")
    parser.add_argument("--window", type=float, default=10.0, help="seconds sampled while held")
    parser.add_argument("--warm", type=float, default=6.0)
    parser.add_argument("--sequential", type=int, default=1000, help="calls for the leak check (0: skip)")
    parser.add_argument("--parallel", type=int, default=8, help="lines dialing in turn for the leak check")
    parser.add_argument("--speed", type=float, default=10.0, help="pace of the sequential calls")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--tracemalloc", action="store_true", help="diff allocations first -> last checkpoint")
    parser.add_argument("--recorder", default="default", help="default (as main.py: database) | log")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 calls held, 10 sequential")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    hold_ns = [int(x) for x in args.hold.split(",") if x.strip()]
    RECORDER["name"] = args.recorder
    if args.quick:
        hold_ns, args.window, args.warm, args.sequential, args.checkpoints = [5], 1.0, 1.0, 10, 2
    results = asyncio.run(run(hold_ns, args.window, args.warm, args.sequential, args.parallel, args.speed,
                              args.checkpoints, args.tracemalloc))
    print()
    print(render(results))
    write_json(args.json, "memory", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
