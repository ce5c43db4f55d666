"""How long a full garbage collection stops the event loop, with and without gc.freeze().

    python -m bench.gc_pause [--calls 100] [--json PATH]

Python collects its oldest generation when enough long-lived objects have piled up; the pass walks
every tracked object, so it stalls every call on the process at once. Most of those objects are
the server's own start-up state (imports, SQLAlchemy, Twilio, the profile), which never becomes
garbage. `gc.freeze()` after start-up moves them out of the collector's sight. Measured here on a
fresh server process (`ZYLIN_BENCH_GC_FREEZE=1` does gc.collect(); gc.freeze() once it is up):
the time of gc.collect() idle, and with `--calls` real-time calls up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import bench_settings, machine_line, table, write_json
from bench.loadgen import LoadGenerator, warm_up_call
from bench.server import ServerProcess


async def run(calls: int, hold_s: float = 8.0, repeat: int = 3) -> list[dict[str, Any]]:
    rows = []
    for freeze in (False, True):
        env = {"ZYLIN_BENCH_GC_FREEZE": "1"} if freeze else {}
        with ServerProcess(bench_settings(), extra_env=env) as srv:
            await warm_up_call(srv)
            idle = [await srv.aget("/bench/gc") for _ in range(repeat)]
            async with LoadGenerator(srv.base_url) as gen:
                await gen.ramp(calls, calls / 50.0)
                await asyncio.sleep(hold_s)
                busy = [await srv.aget("/bench/gc") for _ in range(repeat)]
        rows.append({"gc_freeze": freeze, "frozen_objects": idle[-1]["frozen"],
                     "tracked_idle": idle[-1]["objects"], "full_gc_idle_ms": max(x["full_collect_ms"] for x in idle),
                     "tracked_busy": busy[-1]["objects"], "full_gc_busy_ms": max(x["full_collect_ms"] for x in busy)})
    return rows


def render(rows: list[dict[str, Any]], calls: int) -> str:
    return "\n".join([f"full garbage collection, worst of 3 ({machine_line()})", "", table(rows, [
        ("gc_freeze", "gc.freeze() after start-up"), ("frozen_objects", "frozen objects"),
        ("tracked_idle", "tracked objects, idle"), ("full_gc_idle_ms", "full gc idle ms"),
        ("tracked_busy", f"tracked objects, {calls} calls up"),
        ("full_gc_busy_ms", f"full gc, {calls} calls up, ms")])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="full-collection stall with and without gc.freeze()")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 calls, 1 s")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    hold_s = 8.0
    if args.quick:
        args.calls, hold_s = 5, 1.0
    rows = asyncio.run(run(args.calls, hold_s))
    print(render(rows, args.calls))
    write_json(args.json, "gc_pause", args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
