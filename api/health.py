"""Liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _database_reachable(runtime) -> bool:
    try:
        async with asyncio.timeout(2.0):
            async with runtime.storage.db.read() as session:
                await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def ready(request: Request) -> JSONResponse:
    """Ready = storage answers, providers are configured, the greeting is rendered."""
    runtime = request.app.state.runtime
    database = await _database_reachable(runtime)
    checks = {
        "providers": {k: runtime.settings.provider(k) for k in ("asr", "llm", "tts")},
        "greeting": runtime.greeting_ready,
        "database": database,
    }
    ok = runtime.greeting_ready and database
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)
