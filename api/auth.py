"""Who may read the call log: ADMIN_TOKEN as an HTTP Basic password or a Bearer token.

With no token set, review is served only to requests that are plainly from this machine: a
loopback client, a Host that names this machine (localhost, 127.x.x.x, [::1], any port) and no
proxy headers. The client address alone is not enough: a web page whose name an attacker
re-resolves to 127.0.0.1 (DNS rebinding) and a plain TCP tunnel both arrive from loopback, and
uvicorn, trusting 127.0.0.1 as a proxy, takes the client address from X-Forwarded-For. Behind
ngrok, a load balancer or any tunnel, set ADMIN_TOKEN.
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
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via")
LOOPBACK_NAMES = ("localhost",)
REMEDY = "set ADMIN_TOKEN to use the call log through a proxy or from another machine"
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


def not_local(request: Request) -> str | None:
    """None when the request is plainly from this machine, else why it is not."""
    proxied = [name for name in PROXY_HEADERS if name in request.headers]
    if proxied:
        return f"it came through a proxy ({', '.join(proxied)} header)"
    hosts = request.headers.getlist("host")
    if len(hosts) != 1 or not loopback_host(hosts[0]):
        shown = ", ".join(repr(h[:80]) for h in hosts) or "none"
        return f"its Host ({shown}) is not this machine's name (localhost, 127.0.0.1, [::1])"
    client = request.client.host if request.client else ""
    if not _loopback_address(client):
        return f"it came from {client or 'an unknown address'}, not from this machine"
    return None


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine: localhost or a loopback address, any port."""
    host = host.strip().lower()
    if host.startswith("["):  # [IPv6]:port
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return False
        return _port(port[1:]) and _loopback_address(name) and ":" in name
    name, _, port = host.partition(":")  # no colon left in name: an address can only be IPv4
    return _port(port) and (name in LOOPBACK_NAMES or _loopback_address(name))


def _port(port: str) -> bool:
    return port == "" or (port.isascii() and port.isdigit() and len(port) <= 5)


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    why = not_local(request)
    if why is None:
        return None
    log.warning("call log refused to %s: no ADMIN_TOKEN set and %s",
                request.client.host if request.client else "?", why)
    message = (f"Refused: {why}. With no ADMIN_TOKEN set, the call log is served only to this "
               f"machine, directly; {REMEDY}.")
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
            "machine (http://localhost or 127.0.0.1, not through a proxy or tunnel). "
            "Set ADMIN_TOKEN to read it remotely.")
