"""Who may read the call log: ADMIN_TOKEN as an HTTP Basic password or a Bearer token.

With no token set, review is served only to clients on this machine (loopback) that did not
come through a proxy: behind ngrok or a load balancer, set ADMIN_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

log = logging.getLogger("zylin.api.auth")

REALM = "Zylin call log"
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host")
Endpoint = Callable[[Request], Awaitable[Response]]


def presented_token(request: Request) -> str | None:
    """The token in `Authorization`: Bearer, or Basic's password (any user name)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def is_local(request: Request) -> bool:
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "testclient"  # Starlette's in-process TestClient


def refusal(request: Request) -> Response | None:
    """None when the request may read the call log, else the response that says why not."""
    token = request.app.state.runtime.settings.admin_token
    wants_json = request.url.path.startswith("/api/")
    if token:
        given = presented_token(request)
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            return None
        headers = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        message = "ADMIN_TOKEN required (HTTP Basic password or Bearer token)"
        if wants_json:
            return JSONResponse({"error": message}, status_code=401, headers=headers)
        return PlainTextResponse(message, status_code=401, headers=headers)
    if is_local(request):
        return None
    log.warning("call log refused to %s: no ADMIN_TOKEN set, so only this machine may read it",
                request.client.host if request.client else "?")
    message = "The call log is served only on this machine until ADMIN_TOKEN is set."
    if wants_json:
        return JSONResponse({"error": message}, status_code=403)
    return PlainTextResponse(message, status_code=403)


def admin_only(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        refused = refusal(request)
        return refused if refused is not None else await endpoint(request)
    return guarded


def access_banner(admin_token: str) -> str:
    if admin_token:
        return "Call log (/calls, /api/calls): ADMIN_TOKEN required (HTTP Basic password or Bearer)."
    return ("Call log (/calls, /api/calls): ADMIN_TOKEN is not set, so it is served only to this "
            "machine (loopback, not through a proxy). Set ADMIN_TOKEN to read it remotely.")
