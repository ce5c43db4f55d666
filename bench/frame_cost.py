"""CPU per inbound 20 ms frame inside Zylin's app, without sockets: the part Zylin's code owns.

    python -m bench.frame_cost [--frames 50000] [--calls 20] [--noise-dbfs -30] [--together] [--json PATH]
    VAD=energy python -m bench.frame_cost ...

Drives the real ASGI app (Starlette route -> api/media_stream -> parse_event -> CallSession.on_media
-> VAD -> mock recognizer) with `connected`, `start` and `--frames` media frames per call, through
a fake ASGI receive/send, and reports CPU microseconds per frame. The socket, uvicorn and the
WebSocket protocol come on top (bench.concurrency measures the whole: server CPU / frames per s).
Used for before/after figures of per-frame optimisations: it is deterministic where the
socket-level benches are at the mercy of the machine's other load. `--together` runs the calls at
once, each yielding to the loop after every frame, as a server with many calls serves them (so
the neural VAD's windows of different calls share model runs, as they do there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import AUTH_TOKEN, bench_settings, machine_line, make_settings, write_json

SILENCE = b"\xff" * 160


def line_frames(noise_dbfs: float | None) -> list[bytes]:
    """What the line carries between the caller's lines: digital silence, or seeded pink noise (a
    noisy line keeps the neural VAD's model running on every window)."""
    if noise_dbfs is None:
        return [SILENCE]
    import numpy as np

    from bench.turn_corpus import at_dbfs, pink, to_ulaw
    noise = to_ulaw(at_dbfs(pink(8000 * 10, np.random.default_rng(11)), noise_dbfs))
    return [noise[i:i + 160] for i in range(0, len(noise), 160)]


async def run(frames: int, calls: int, voiced_every: int = 0, noise_dbfs: float | None = None,
              together: bool = False) -> dict[str, Any]:
    from twilio.request_validator import RequestValidator

    from main import create_app
    from services.simulator.voice import speech_ulaw
    from services.telephony import media_streams as wire
    from services.telephony.webhook import StreamClaim, stream_parameters

    tmp = tempfile.TemporaryDirectory(prefix="zylin-frame-cost-")
    settings = make_settings(bench_settings(database_url=f"sqlite+aiosqlite:///{tmp.name}/bench.db",
                                            idle_timeout_s=1e6))
    app = create_app(settings)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(settings.media_stream_url, {})
    voice = speech_ulaw("How much is a cleaning?")
    voiced = [voice[i:i + 160] for i in range(0, len(voice) - 159, 160)]
    line = line_frames(noise_dbfs)
    per_frame = []
    runs = []
    windows_per_run: float | None = None
    started = asyncio.Event()
    waiting = [calls]
    async with app.router.lifespan_context(app):
        for c in range(calls):
            call_sid, stream_sid = f"CA{c:032d}", f"MZ{c:032d}"
            messages = [{"type": "websocket.connect"},
                        {"type": "websocket.receive", "text": wire.inbound_connected()},
                        {"type": "websocket.receive", "text": wire.inbound_start(
                            1, stream_sid, call_sid, "AC" + "0" * 32,
                            {**stream_parameters(StreamClaim(call_sid, "+15551230001", "+15559870000"),
                                                 settings.token_secret), "mockScript": "[]"})}]
            for i in range(frames):
                payload = (voiced[i % len(voiced)] if voiced_every and i % voiced_every < len(voiced)
                           else line[i % len(line)])
                messages.append({"type": "websocket.receive",
                                 "text": wire.inbound_media(i + 2, stream_sid, i + 1, i * 20, payload)})
            messages.append({"type": "websocket.receive",
                             "text": wire.inbound_stop(frames + 2, stream_sid, call_sid, "AC" + "0" * 32)})
            feed = iter(messages)
            clock: dict[str, float] = {}

            # this call's feed and clock, bound now (app() below is done with them within the iteration)
            async def receive(feed: Iterator[dict[str, Any]] = feed,
                              clock: dict[str, float] = clock) -> dict[str, Any]:
                message = next(feed, None)
                if message is None:
                    return {"type": "websocket.disconnect", "code": 1000}
                text = message.get("text", "")
                if text.startswith('{"event":"media"') and "cpu0" not in clock:
                    await asyncio.sleep(0.05)  # let the greeting go out before timing
                    if together:  # time from when every call is up
                        waiting[0] -= 1
                        if not waiting[0]:
                            started.set()
                        await started.wait()
                    clock["cpu0"] = time.process_time()
                elif '"stop"' in text[:30]:
                    clock["cpu1"] = time.process_time()
                elif together:
                    await asyncio.sleep(0)  # one frame of every call per loop turn, as the server serves them
                return message

            async def send(message: dict[str, Any]) -> None:
                return None

            scope = {"type": "websocket", "path": "/media-stream", "raw_path": b"/media-stream",
                     "query_string": b"", "headers": [(b"x-twilio-signature", signature.encode()),
                                                      (b"host", b"zylin.bench.test")],
                     "scheme": "ws", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
                     "subprotocols": [], "asgi": {"version": "3.0"}, "state": {}}
            if together:
                runs.append((app(scope, receive, send), clock))
            else:
                await app(scope, receive, send)
                per_frame.append((clock["cpu1"] - clock["cpu0"]) / frames * 1e6)
        if together:  # one figure: the CPU from the first timed frame to the last stop, over all frames
            batch = _vad_batch()
            before = (batch.runs, batch.windows) if batch is not None else (0, 0)
            await asyncio.gather(*(r for r, _ in runs))
            span = max(c["cpu1"] for _, c in runs) - min(c["cpu0"] for _, c in runs)
            per_frame.append(span / (frames * calls) * 1e6)
            if batch is not None and batch.runs > before[0]:
                windows_per_run = (batch.windows - before[1]) / (batch.runs - before[0])
    with contextlib.suppress(Exception):
        tmp.cleanup()
    per_frame.sort()
    result = {"frames_per_call": frames, "calls": calls, "together": together, "us_per_frame_best": per_frame[0],
              "us_per_frame_median": per_frame[len(per_frame) // 2],
              "calls_per_core_at_100pct": 1e6 / (per_frame[0] * 50)}
    if windows_per_run is not None:
        result["vad_windows_per_run"] = round(windows_per_run, 1)
    return result


def _vad_batch() -> Any:
    """The neural VAD's process batch, if this run's detectors use it (bench.vad_batch has the model side)."""
    from services.audio.silero_vad import shared_batch
    from services.settings import Settings
    return shared_batch() if Settings(_env_file=None).vad == "neural" else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU per inbound frame inside the app")
    parser.add_argument("--frames", type=int, default=5000, help="media frames per call")
    parser.add_argument("--calls", type=int, default=10, help="calls (the best and median are kept)")
    parser.add_argument("--voiced-every", type=int, default=250,
                        help="every N frames the caller says a line (0: silence only)")
    parser.add_argument("--noise-dbfs", type=float, help="pink noise at this level between the lines, not silence")
    parser.add_argument("--together", action="store_true",
                        help="run the calls at once, one frame of each per loop turn, as a loaded server does")
    parser.add_argument("--vad-batch", type=int, help="at most this many neural-VAD windows per model run "
                        "(1: each alone, as before batching)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 calls x 500 frames")
    parser.add_argument("--json", help="write results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.calls = 500, 2
    import logging
    logging.basicConfig(level="ERROR")
    from services.settings import Settings
    vad = Settings(_env_file=None).vad  # the bench's settings leave VAD to the environment, as main.py does
    if args.vad_batch:
        from services.audio.silero_vad import shared_batch
        shared_batch().limit = args.vad_batch
    results = {**asyncio.run(run(args.frames, args.calls, args.voiced_every, args.noise_dbfs, args.together)),
               "vad": vad}
    line = "silence" if args.noise_dbfs is None else f"pink noise at {args.noise_dbfs:g} dBFS"
    print(f"app-level CPU per inbound frame, VAD={vad}, {line} between lines ({machine_line()}):")
    if args.together:
        batched = (f", {results['vad_windows_per_run']} VAD windows per model run"
                   if "vad_windows_per_run" in results else "")
        print(f"  {results['us_per_frame_best']:.2f} us over {args.calls} calls at once x {args.frames} frames"
              f"{batched} (= {results['calls_per_core_at_100pct']:.0f} calls per core for this part alone)")
    else:
        print(f"  best {results['us_per_frame_best']:.2f} us, median {results['us_per_frame_median']:.2f} us "
              f"over {args.calls} calls x {args.frames} frames "
              f"(= {results['calls_per_core_at_100pct']:.0f} calls per core for this part alone)")
    write_json(args.json, "frame_cost", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
