"""Liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse

from services.runtime import Runtime
from services.storage import Storage

DATABASE_TIMEOUT_S = 2.0  # a database that does not answer by then is as good as down
PROVIDERS: tuple[Literal["asr", "llm", "tts"], ...] = ("asr", "llm", "tts")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _database_reachable(storage: Storage) -> bool:
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            await storage.calls.ping()
    except Exception:
        return False
    return True


async def ready(request: Request) -> JSONResponse:
    """Ready = storage answers, providers are configured, the greeting is rendered."""
    runtime: Runtime = request.app.state.runtime
    database = await _database_reachable(runtime.storage)
    checks = {
        "providers": {k: runtime.settings.provider(k) for k in PROVIDERS},
        "greeting": runtime.greeting_ready,
        "database": database,
    }
    ok = runtime.greeting_ready and database
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)
