"""Summarise a py-spy collapsed-stack profile (`--format raw`): where the server spends its time.

    python -m bench.profile_report /tmp/zylin-server.txt [--top 25] [--match services/]

Self time = samples whose innermost frame is the function; total = samples with it anywhere on
the stack (counted once per sample). Idle samples (py-spy records only active threads with
--idle off) are what remains of 100 %.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


GROUPS = (  # first match from the innermost frame outwards decides; stdlib frames are skipped
    ("bench/", "bench measurement wrapper"),
    ("server.py", "bench measurement wrapper"),   # py-spy names bench/*.py by file name only
    ("common.py", "bench measurement wrapper"),
    ("services/", "Zylin: services/"),
    ("api/", "Zylin: api/ (the Media Streams edge)"),
    ("main.py", "Zylin: api/ (the Media Streams edge)"),
    ("aiosqlite/", "database (aiosqlite thread, SQLite)"),
    ("sqlalchemy/", "database (SQLAlchemy in the event loop)"),
    ("uvicorn/", "WebSocket protocol (uvicorn + websockets)"),
    ("websockets/", "WebSocket protocol (uvicorn + websockets)"),
    ("starlette/", "ASGI plumbing (Starlette)"),
)


def _group(frames: list[str]) -> str:
    for i in range(len(frames) - 1, -1, -1):  # only what runs inside the event loop is attributed
        if frames[i].startswith("Runner.run "):
            frames = frames[i + 1:]
            break
    for frame in reversed(frames):
        for marker, group in GROUPS:
            if f"({marker}" in frame:
                return group
    return "event loop: uvloop I/O, task and future switching (native), asyncio"


def groups(path: str) -> list[tuple[str, float]]:
    """Share of samples per layer (see GROUPS), innermost attributable frame first."""
    counts: Counter[str] = Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        counts[_group(frames)] += int(count)
        samples += int(count)
    return [(g, 100.0 * c / samples) for g, c in counts.most_common()] if samples else []


def summarise(path: str, top: int = 25, match: str | None = None) -> str:
    self_t: Counter[str] = Counter()
    total_t: Counter[str] = Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        self_t[frames[-1]] += n
        for f in set(frames):
            total_t[f] += n
    if not samples:
        return "no samples"
    out = [f"{samples} samples", "", f"{'self %':>7} {'total %':>8}  function"]
    keys = [k for k, _ in total_t.most_common()] if match else [k for k, _ in self_t.most_common()]
    shown = 0
    for k in keys:
        if match and match not in k:
            continue
        out.append(f"{100 * self_t[k] / samples:7.1f} {100 * total_t[k] / samples:8.1f}  {k}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="summarise a py-spy raw profile")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only functions whose name/file contains this, by total time")
    parser.add_argument("--groups", action="store_true", help="share of samples per layer instead")
    args = parser.parse_args(argv)
    if args.groups:
        for group, pct in groups(args.path):
            print(f"{pct:6.1f} %  {group}")
        return 0
    print(summarise(args.path, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
