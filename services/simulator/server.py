"""Run an ASGI app with uvicorn in this process on a free loopback port (tests, demo, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from uvicorn.config import WS_PROTOCOLS

from services.server import server_config
from services.settings import Settings

# The sans-I/O websockets implementation; the legacy one is deprecated in uvicorn 0.54.
WS_PROTOCOL = "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"


def _settings_of(app: Any) -> Settings | None:
    """A Zylin app (main.create_app) carries its settings; a test's fake service does not."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    settings = getattr(runtime, "settings", None)
    return settings if isinstance(settings, Settings) else None


def _config(app: Any, settings: Settings | None, **options: Any) -> uvicorn.Config:
    """Zylin is served exactly as `python main.py` serves it, limits included; fakes plainly."""
    options.setdefault("timeout_graceful_shutdown", 3)
    if settings is not None:
        return server_config(app, settings, **options)
    options.setdefault("ws", WS_PROTOCOL)
    return uvicorn.Config(app, **options)


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, host: str = "127.0.0.1", log_level: str = "warning",
                    startup_timeout_s: float = 10.0, settings: Settings | None = None,
                    **config: Any) -> AsyncIterator[str]:
    """`async with serve_app(app) as base_url:` -> "http://127.0.0.1:PORT", stopped on exit.

    We bind the socket ourselves (port 0) so the port is known before uvicorn starts and
    two servers can never race for the same number. A Zylin app gets `services.server`'s
    config from `settings` (default: the app's own), the one `python main.py` runs with.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    settings = settings or _settings_of(app)
    server = uvicorn.Server(_config(app, settings, host=host, port=port, log_level=log_level, **config))

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits the process when lifespan start-up fails
            raise RuntimeError(f"uvicorn exited during start-up (code {exc.code})") from None

    task = asyncio.create_task(run(), name=f"uvicorn:{port}")
    try:
        deadline = asyncio.get_running_loop().time() + startup_timeout_s
        while not server.started:
            if task.done():
                task.result()  # a start-up failure surfaces here
                raise RuntimeError("uvicorn stopped before it started")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"uvicorn did not start within {startup_timeout_s} s")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), startup_timeout_s)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except RuntimeError:
            pass  # already raised to the caller from the start-up wait
        finally:
            sock.close()
