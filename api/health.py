"""Liveness and readiness for load balancers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    checks = {
        "providers": {k: runtime.settings.provider(k) for k in ("asr", "llm", "tts")},
        "greeting": runtime.greeting_ready,
    }
    ok = runtime.greeting_ready
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)
