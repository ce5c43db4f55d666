"""Shared by the bench scripts: machine facts, percentiles, tables, JSON, /proc readings, settings.

Plain functions, no framework: each bench script stays readable on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
PUBLIC_URL = "https://zylin.bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- the machine -------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": _loadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_line() -> str:
    m = machine()
    return f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['date']}, load avg {m['loadavg']}"


# --- numbers -------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    values = [v for v in values if v is not None]
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None}


class Histogram:
    """Fixed 0.1 ms bins up to `limit_ms` (the last bin holds everything above): constant memory,
    O(1) per sample, so the per-frame path of the server under test barely notices it."""

    def __init__(self, limit_ms: float = 2000.0, bin_ms: float = 0.1) -> None:
        self.bin_ms = bin_ms
        self.counts = [0] * (int(limit_ms / bin_ms) + 1)
        self.n = 0
        self.max_ms = 0.0
        self.sum_ms = 0.0

    def add(self, ms: float) -> None:
        if ms < 0:
            ms = 0.0
        i = int(ms / self.bin_ms)
        counts = self.counts
        counts[i if i < len(counts) else -1] += 1
        self.n += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def reset(self) -> None:
        self.counts = [0] * len(self.counts)
        self.n = 0
        self.max_ms = 0.0
        self.sum_ms = 0.0

    def merge(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.n += other.n
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float | None:
        if not self.n:
            return None
        rank = max(1, math.ceil(p / 100.0 * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return round(min((i + 1) * self.bin_ms, self.max_ms), 2)  # upper edge of the bin
        return round(self.max_ms, 2)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": round(self.sum_ms / self.n, 3) if self.n else None,
                "p50": self.percentile(50), "p95": self.percentile(95), "p99": self.percentile(99),
                "max": round(self.max_ms, 2) if self.n else None}

    def to_json(self) -> dict[str, Any]:
        nonzero = {i: c for i, c in enumerate(self.counts) if c}
        return {"bin_ms": self.bin_ms, "size": len(self.counts), "bins": nonzero, "n": self.n,
                "max_ms": self.max_ms, "sum_ms": self.sum_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        h = cls(limit_ms=(data["size"] - 1) * data["bin_ms"], bin_ms=data["bin_ms"])
        for i, c in data["bins"].items():
            h.counts[int(i)] = c
        h.n, h.max_ms, h.sum_ms = data["n"], data["max_ms"], data["sum_ms"]
        return h


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 1) -> str:
    """A Markdown table: `columns` are (key, header) pairs; numbers right-aligned."""
    rows = list(rows)
    cells = [[fmt(row.get(key), digits) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = "| " + " | ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    out = [line, rule]
    for c in cells:
        out.append("| " + " | ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)) + " |")
    return "\n".join(out)


def write_json(path: str | None, name: str, args: Any, results: Any) -> None:
    if not path:
        return
    doc = {"bench": name, "command": " ".join([Path(sys.executable).name] + sys.argv),
           "args": vars(args) if hasattr(args, "__dict__") else args, "machine": machine(),
           "results": results}
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


# --- a process, seen from /proc ------------------------------------------------------------------

def cpu_seconds(pid: int | str = "self", thread: int | None = None) -> float:
    """User + system CPU time of a process (or of one of its threads) so far."""
    where = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    fields = Path(where).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size in MB (from statm: cheap and exact to the page)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 1e6


class CpuMeter:
    """CPU % of one process (100 % = one core fully busy) between `start()` and `read()`."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.start()

    def start(self) -> None:
        import time
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def read(self) -> float:
        import time
        wall = time.monotonic() - self._wall
        return 100.0 * (cpu_seconds(self.pid) - self._cpu) / wall if wall > 0 else 0.0


# --- settings for the server under test -----------------------------------------------------------

def bench_settings(**overrides: Any) -> dict[str, Any]:
    """Settings values (JSON-able) for a mock-mode server, as the tests build them."""
    values: dict[str, Any] = dict(
        public_url=PUBLIC_URL, twilio_auth_token=AUTH_TOKEN, use_mock_streaming=True,
        business_profile=str(ROOT / "business.example.toml"), log_level="WARNING",
        idle_timeout_s=30.0,
    )
    values.update(overrides)
    return values


def make_settings(values: dict[str, Any]):
    from services.settings import Settings
    return Settings(_env_file=None, **values)


def add_repo_to_path() -> None:
    """`python bench/NAME.py` puts bench/ on sys.path, not the repo root: fix that."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
