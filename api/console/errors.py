"""The console's errors as responses, through Starlette's exception handlers: an endpoint raises
and never catches, and each error is answered once, here, as JSON under /api/ and as the error page
elsewhere (with the same status and text either way)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from api.console.pages import render
from api.console.query import BadFilter


async def bad_filter(request: Request, exc: Exception) -> Response:
    """A filter that cannot be read is the caller's mistake: 400, naming the parameter."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=400)
    return render(request, "error.html", {"title": "Bad filter", "message": str(exc)}, status_code=400)


CONSOLE_EXCEPTION_HANDLERS: Mapping[Any, ExceptionHandler] = {BadFilter: bad_filter}
