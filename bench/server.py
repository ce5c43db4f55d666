"""The server under test, in its own process: Zylin's app exactly as `python main.py` runs it
(uvicorn, uvloop, websockets-sansio, httptools), wrapped in a thin ASGI layer that measures.

    python -m bench.server --port 0 --settings '{"mock_llm_delay_ms": 0}'    (prints "READY <port>")

The wrapper adds nothing to Zylin's code path but a timestamp per received WebSocket message:

- inbound frame lag: for each `media` frame of every 4th stream (the others run unwrapped, so the
  wrapper's cost stays out of the capacity figures), (moment the app picks it up from `receive()`) minus
  (moment the load generator was scheduled to send it). The generator passes its schedule in two
  custom parameters of the `start` event (`benchT0`, `benchSpeed`): frame timestamp T ms is due at
  benchT0 + T/1000/speed on the shared CLOCK_MONOTONIC. The lag therefore includes the generator's
  own lateness (reported separately), the loopback socket, uvicorn's parsing and queueing, and the
  wait for the event loop: everything that makes Zylin see a frame late.
- frame handling time: from picking a `media` frame up to asking for the next message (the work the
  app does per frame: parse, decode, VAD, recognizer).
- per-turn latency and greeting from a recorder that keeps numbers only (bounded), not calls.

GET /bench/stats?reset=1   lag + handling histograms, turns, greetings, open streams, RSS, CPU
                           (reset=1 starts a new window; reset=all also forgets greetings)
GET /bench/gc              gc.collect(), RSS, live objects (+ Zylin's per-call objects by type)
GET /bench/tracemalloc?action=start|snapshot|diff   top allocation growth since the snapshot

Experiment switches (environment of the server process; off = the app exactly as main.py runs it):
ZYLIN_BENCH_GC_FREEZE=1        gc.collect(); gc.freeze() once the server is up (bench.gc_pause)
ZYLIN_BENCH_BRAIN_BURST=1      the mock brain hands over its words without a loop turn between them
ZYLIN_BENCH_TTS_PACE=2         the TTS streams at most 2x real time after its first chunk
ZYLIN_BENCH_SWITCH_INTERVAL=s  sys.setswitchinterval(s) (GIL hand-over between threads)
ZYLIN_BENCH_SAMPLE_EVERY=4     time every 4th stream frame by frame (1: every stream)
ZYLIN_BENCH_VAD_BATCH=1        at most 1 neural-VAD window per model run: each alone, as before batching
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import Histogram, cpu_seconds, make_settings, rss_mb

MEDIA_PREFIX = '{"event":"media"'
TRACKED_TYPES = ("CallSession", "Reply", "Speaker", "Synthesis", "SpokenSentence", "MockRecognizer",
                 "OfflineBrain", "OutboundEncoder", "Resampler", "StreamSender", "TurnRecord", "WebSocket",
                 "WebSocketsSansIOProtocol", "Task", "Future")


class Stats:
    """Everything the wrapper and the recorder measure; reset between measurement windows."""

    def __init__(self) -> None:
        self.lag = Histogram()
        self.handling = Histogram(limit_ms=500.0, bin_ms=0.01)
        self.turns: deque[dict[str, Any]] = deque(maxlen=100_000)
        self.greetings: deque[float] = deque(maxlen=100_000)
        self.gc_pause = {0: Histogram(500.0, 0.01), 1: Histogram(500.0, 0.01), 2: Histogram(2000.0, 0.1)}
        self.streams_open = 0
        self.streams_total = 0
        self.db_writes = 0
        self.calls_ended = 0
        self.frames = 0
        self.since = time.monotonic()
        self.cpu_since = cpu_seconds()
        self.vad_since = _vad_batch()

    def reset(self, greetings: bool = True) -> None:
        self.lag.reset()
        self.handling.reset()
        for h in self.gc_pause.values():
            h.reset()
        self.turns.clear()
        if greetings:
            self.greetings.clear()
        self.calls_ended = 0
        self.frames = 0
        self.db_writes = 0
        self.since = time.monotonic()
        self.cpu_since = cpu_seconds()
        self.vad_since = _vad_batch()

    def as_dict(self) -> dict[str, Any]:
        wall = time.monotonic() - self.since
        runs, windows = (now - then for now, then in zip(_vad_batch(), self.vad_since, strict=True))
        return {
            "window_s": round(wall, 3),
            "cpu_pct": round(100.0 * (cpu_seconds() - self.cpu_since) / wall, 1) if wall > 0 else None,
            "rss_mb": round(rss_mb(), 2),
            "streams_open": self.streams_open, "streams_total": self.streams_total,
            "calls_ended": self.calls_ended, "frames": self.frames, "db_writes": self.db_writes,
            "lag": self.lag.to_json(), "handling": self.handling.to_json(),
            "gc_pause": {g: h.as_dict() for g, h in self.gc_pause.items()},
            "turns": list(self.turns), "greetings": list(self.greetings),
            "vad_runs": runs, "vad_windows": windows,
        }


def _vad_batch() -> tuple[int, int]:
    """The neural VAD's model runs and the windows they carried, so far (0, 0 if it is not loaded)."""
    module = sys.modules.get("services.audio.silero_vad")
    if module is None:
        return 0, 0
    batch = module.shared_batch()
    return batch.runs, batch.windows


STATS = Stats()
_gc_started = [0.0]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    """gc.callbacks hook: how long each collection stops the event loop, per generation."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        STATS.gc_pause[info["generation"]].add((time.perf_counter() - _gc_started[0]) * 1000.0)


def overhead_parts(lat: Any) -> dict[str, float | None]:
    """Where overhead_ms goes, from the turn's own instants (ms):
    turn_to_llm    final transcript -> brain asked (reply task scheduled, history built)
    first_sentence brain's first token -> first sentence handed to TTS (streaming + chunker;
                   a real LLM's token rate lands here too)
    audio_out      TTS first bytes -> first media frame sent (resample, encode, frame, send)"""
    def ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1000.0, 2)
    return {"turn_to_llm": ms(lat.transcript_at, lat.llm_request_at),
            "first_sentence": ms(lat.llm_first_at, lat.tts_request_at),
            "audio_out": ms(lat.tts_first_at, lat.first_audio_at)}


class TapRecorder:
    """Wraps the recorder production uses (whatever create_app chose: the database recorder, or
    the log recorder) and keeps the bench's numbers on the side; everything is passed on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def turn(self, call, turn) -> None:
        from services.storage.vocabulary import Speaker  # here: this module is imported by the load generator too

        self._inner.turn(call, turn)
        if turn.speaker == Speaker.CALLER and turn.latency is not None:
            STATS.turns.append(turn.latency.as_dict() | overhead_parts(turn.latency))

    def ended(self, call, reason, turns, history) -> None:
        self._inner.ended(call, reason, turns, history)
        STATS.calls_ended += 1
        if call.greeting_ms is not None:
            STATS.greetings.append(call.greeting_ms)


def _schedule(text: str) -> tuple[float, float] | None:
    """(benchT0, speed) from a `start` event's custom parameters, if the generator sent them."""
    try:
        params = json.loads(text)["start"]["customParameters"]
        return float(params["benchT0"]), float(params.get("benchSpeed", 1.0))
    except (KeyError, TypeError, ValueError):
        return None


def _timestamp_ms(text: str) -> int | None:
    at = text.find('"timestamp":"')
    if at < 0:
        return None
    at += 13
    end = text.find('"', at)
    try:
        return int(text[at:end])
    except ValueError:
        return None


SAMPLE_EVERY = int(os.environ.get("ZYLIN_BENCH_SAMPLE_EVERY") or 4)


def _timed(receive):
    """A receive() that notes, for each `media` frame, how late it is picked up and how long the
    app then works on it."""
    schedule: list[float] | None = None   # [t0, seconds per ms of stream time]
    picked: list[float] = []              # pickup time of the media frame being handled
    clock = time.monotonic
    lag, handling = STATS.lag, STATS.handling

    async def timed_receive():
        nonlocal schedule
        if picked:
            handling.add((clock() - picked.pop()) * 1000.0)
        message = await receive()
        text = message.get("text")
        if text is None:
            return message
        if text.startswith(MEDIA_PREFIX):
            now = clock()
            STATS.frames += 1
            if schedule is not None:
                ts = _timestamp_ms(text)
                if ts is not None:
                    lag.add((now - (schedule[0] + ts * schedule[1])) * 1000.0)
            picked.append(now)
        elif schedule is None and '"start"' in text[:40]:
            found = _schedule(text)
            if found is not None:
                schedule = [found[0], 0.001 / found[1]]
        return message

    return timed_receive


class Measured:
    """ASGI wrapper: times each WebSocket message as the app receives it; serves /bench/*."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._trace: tracemalloc.Snapshot | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            return await self._bench(scope, send)
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        STATS.streams_open += 1
        STATS.streams_total += 1
        # Every SAMPLE_EVERY-th stream is timed frame by frame; the others run untouched, so the
        # wrapper's own cost (an extra coroutine per message) stays out of the capacity figures.
        timed = STATS.streams_total % SAMPLE_EVERY == 1 or SAMPLE_EVERY == 1
        try:
            await self.app(scope, _timed(receive) if timed else receive, send)
        finally:
            STATS.streams_open -= 1

    async def _bench(self, scope, send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        path = scope["path"]
        if path == "/bench/stats":
            body = STATS.as_dict()
            if query.get("reset"):  # reset=1: a new window; reset=all: greetings too
                STATS.reset(greetings=query["reset"][0] == "all")
        elif path == "/bench/gc":
            body = gc_report(detail=bool(query.get("types")))
        elif path == "/bench/tracemalloc":
            body = self._tracemalloc(query.get("action", ["snapshot"])[0])
        else:
            body = {"error": "unknown"}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def _tracemalloc(self, action: str) -> dict[str, Any]:
        if action == "start":
            tracemalloc.start(1)
            self._trace = None
            return {"tracing": True}
        if not tracemalloc.is_tracing():
            return {"error": "not tracing"}
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")])
        out: dict[str, Any] = {"traced_mb": round(tracemalloc.get_traced_memory()[0] / 1e6, 3)}
        if action == "diff" and self._trace is not None:
            stats = snap.compare_to(self._trace, "lineno")
            out["growth_kb"] = round(sum(s.size_diff for s in stats) / 1e3, 1)
            out["top"] = [{"where": str(s.traceback[0]), "size_diff_kb": round(s.size_diff / 1e3, 1),
                           "count_diff": s.count_diff} for s in stats[:15]]
        self._trace = snap
        return out


def gc_report(detail: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - started) * 1000.0   # what a full (gen 2) collection stalls
    gc.collect()
    _malloc_trim()
    objects = gc.get_objects()
    out: dict[str, Any] = {"rss_mb": round(rss_mb(), 3), "objects": len(objects),
                           "full_collect_ms": round(full_ms, 2), "frozen": gc.get_freeze_count(),
                           "streams_open": STATS.streams_open, "asyncio_tasks": len(asyncio.all_tasks())}
    if detail:
        counts = dict.fromkeys(TRACKED_TYPES, 0)
        for obj in objects:
            name = type(obj).__name__
            if name in counts:
                counts[name] += 1
        out["types"] = counts
    return out


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS, so RSS shows live memory rather than glibc's cache."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build_app(settings_values: dict[str, Any], recorder: str = "default"):
    """Zylin's app as `python main.py` builds it (its default recorder), with the bench tap.
    `recorder="log"` swaps in the plain LogRecorder (no database) to see what storage costs."""
    from main import create_app

    settings = make_settings(settings_values)
    app = create_app(settings)
    runtime = app.state.runtime
    if recorder == "log":
        from services.orchestrator.record import LogRecorder
        runtime.recorder = LogRecorder(settings.latency_target_ms)
    runtime.recorder = TapRecorder(runtime.recorder)
    writer = getattr(getattr(runtime, "storage", None), "writer", None)
    if writer is not None and hasattr(writer, "submit"):  # count database writes (not per frame)
        submit = writer.submit

        def counted_submit(*args: Any, **kwargs: Any) -> Any:
            STATS.db_writes += 1
            return submit(*args, **kwargs)
        writer.submit = counted_submit
    if os.environ.get("ZYLIN_BENCH_BRAIN_BURST") == "1":
        # experiment: the mock brain hands over its words without a loop turn between them
        import types

        import services.receptionist.offline.brain as mock_brain

        async def sleep(delay: float, *args: Any) -> None:
            if delay:
                await asyncio.sleep(delay, *args)
        mock_brain.asyncio = types.SimpleNamespace(sleep=sleep)
    pace = float(os.environ.get("ZYLIN_BENCH_TTS_PACE") or 0)
    if pace > 0:
        runtime.tts = PacedSynthesizer(runtime.tts, pace)
    return Measured(app), settings


class PacedSynthesizer:
    """A TTS that streams its audio no faster than `pace` x real time after the first chunk, as a
    network TTS does (the mock otherwise hands a whole sentence over at once)."""

    def __init__(self, inner: Any, pace: float) -> None:
        self._inner = inner
        self._pace = pace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def synthesize(self, text: str):
        bytes_per_s = self._inner.sample_rate * (2 if self._inner.encoding == "pcm16" else 1)
        sent = 0
        start = None
        stream = self._inner.synthesize(text)
        try:
            async for chunk in stream:
                now = time.monotonic()
                if start is None:
                    start = now
                due = start + sent / bytes_per_s / self._pace
                if due > now:
                    await asyncio.sleep(due - now)
                sent += len(chunk)
                yield chunk
        finally:
            await stream.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--settings", default="{}", help="JSON object of Settings values")
    parser.add_argument("--loop", default="auto", help="uvicorn loop: auto (uvloop) | asyncio")
    parser.add_argument("--recorder", default="default", help="default (as main.py) | log")
    parser.add_argument("--ws", default="auto", help="uvicorn WebSocket protocol (auto = websockets-sansio)")
    parser.add_argument("--reuse-port", type=int, default=0,
                        help="also serve on this port with SO_REUSEPORT (several processes share it; "
                             "--port then stays private to this process, for /bench/*)")
    args = parser.parse_args(argv)

    import uvicorn

    values = json.loads(args.settings)
    logging.basicConfig(level=values.get("log_level", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, settings = build_app(values, args.recorder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sockets = [sock]
    if args.reuse_port:  # the kernel spreads new connections over every process bound here
        shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind(("127.0.0.1", args.reuse_port))
        sockets.append(shared)
    # The same uvicorn options as `python main.py` (main.serve), on a loopback socket.
    config = uvicorn.Config(app, log_level="warning", ws_max_size=1 << 20, proxy_headers=True,
                            loop=args.loop, ws=args.ws, backlog=4096)
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        # experiments for docs/benchmarks.md (what main.py could do; off = as main.py runs today)
        if os.environ.get("ZYLIN_BENCH_GC_FREEZE") == "1":
            gc.collect()
            gc.freeze()
        if os.environ.get("ZYLIN_BENCH_SWITCH_INTERVAL"):
            sys.setswitchinterval(float(os.environ["ZYLIN_BENCH_SWITCH_INTERVAL"]))
        if os.environ.get("ZYLIN_BENCH_VAD_BATCH"):
            from services.audio.silero_vad import shared_batch
            shared_batch().limit = int(os.environ["ZYLIN_BENCH_VAD_BATCH"])
        gc.callbacks.append(_gc_timer)
        print(f"READY {sock.getsockname()[1]}", flush=True)

    async def run() -> None:
        task = asyncio.ensure_future(announce())
        await server.serve(sockets=sockets)
        task.cancel()

    from uvicorn._compat import asyncio_run
    asyncio_run(run(), loop_factory=config.get_loop_factory())  # as uvicorn.Server.run does
    return 0


def _die_with_parent() -> None:
    """In the child: if the bench process dies, the server under test goes too (Linux)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """Starts `bench.server` in a child process; `with ServerProcess(values) as srv: srv.base_url`."""

    def __init__(self, settings_values: dict[str, Any], loop: str = "auto", recorder: str = "default",
                 log_path: str | None = None, startup_timeout_s: float = 30.0,
                 extra_env: dict[str, str] | None = None, ws: str = "auto", reuse_port: int = 0) -> None:
        self.settings_values = dict(settings_values)
        self.reuse_port = reuse_port
        self.loop = loop
        self.ws = ws
        self.recorder = recorder
        self._tmp = tempfile.TemporaryDirectory(prefix="zylin-bench-")
        self.log_path = log_path or os.path.join(self._tmp.name, "server.log")
        # a fresh database per server: the bench never touches data/zylin.db
        self.settings_values.setdefault("database_url", f"sqlite+aiosqlite:///{self._tmp.name}/bench.db")
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.reuse_port or self.port}"

    def start(self) -> ServerProcess:
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--settings", json.dumps(self.settings_values),
             "--loop", self.loop, "--recorder", self.recorder, "--ws", self.ws,
             "--reuse-port", str(self.reuse_port)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
            if not line and self.proc.poll() is not None:
                break
        self._log.flush()
        tail = Path(self.log_path).read_text()[-3000:] if os.path.exists(self.log_path) else ""
        self.stop()
        raise RuntimeError(f"bench server did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()  # the READY pipe: left open, it is a ResourceWarning at exit
        if getattr(self, "_log", None):
            self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- HTTP to the bench endpoints (plain sockets: no client library in the measured loop) ----

    def get(self, path: str, timeout_s: float = 30.0) -> dict[str, Any]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    async def aget(self, path: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.get, path, timeout_s)


if __name__ == "__main__":
    sys.exit(main())


class ServerGroup:
    """`workers` server processes sharing one port with SO_REUSEPORT, as `uvicorn --workers` or
    several instances behind a load balancer would: a call's webhook and its WebSocket may land
    on different processes (docs/twilio.md: everything the socket needs travels with it). The
    /bench/* figures are fetched from each process's private port and merged."""

    def __init__(self, settings_values: dict[str, Any], workers: int, **options: Any) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        values = dict(settings_values)
        self._tmp = tempfile.TemporaryDirectory(prefix="zylin-bench-group-")
        values.setdefault("database_url", f"sqlite+aiosqlite:///{self._tmp.name}/bench.db")  # shared
        self.members = [ServerProcess(values, reuse_port=self.port, **options) for _ in range(workers)]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    def __enter__(self) -> ServerGroup:
        try:
            for member in self.members:  # one after the other: each migrates the database on start
                member.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        self._tmp.cleanup()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, path: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return merge([m.get(path, timeout_s) for m in self.members])

    async def aget(self, path: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.get, path, timeout_s)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of several processes as one: counts and CPU add up, lists join, histograms merge."""
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        values = [p.get(key) for p in parts]
        if isinstance(value, dict) and "bins" in value:
            h = Histogram.from_json(values[0])
            for other in values[1:]:
                h.merge(Histogram.from_json(other))
            out[key] = h.to_json()
        elif isinstance(value, list):
            out[key] = [x for v in values for x in v]
        elif isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
            out[key] = value
        elif key in ("window_s", "full_collect_ms"):
            out[key] = max(values)
        else:
            out[key] = round(sum(values), 3)
    out["processes"] = len(parts)
    return out
