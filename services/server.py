"""uvicorn as Zylin runs it: `python main.py` and the in-process test server share this config.

uvicorn bounds how long a keep-alive connection may sit idle between requests, but not how long
a client may take to send a request's head or body, nor how many WebSocket upgrades it accepts
(its `limit_concurrency` 503 covers plain HTTP requests only). And an ASGI app cannot drop a
connection whose peer stopped reading: every send, the close included, first waits for the write
buffer to drain. Two small protocol subclasses add what a server on the internet needs:

- `LimitedHttpProtocol`: a request's head, then its body, each arrive within a deadline or the
  connection is dropped (slowloris, or a client that connected and said nothing); an upgrade
  beyond MAX_CONNECTIONS gets the same 503 as a request.
- `AbortableWebSocketProtocol`: offers the app `scope["extensions"][ABORT_EXTENSION]["abort"]`,
  which drops the connection at once, buffered data and all (a Twilio edge that stopped reading).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from services.settings import Settings

log = logging.getLogger("zylin.server")

ABORT_EXTENSION = "zylin.abort"
SERVICE_UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                       b"content-length: 19\r\nconnection: close\r\n\r\nService Unavailable")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client may take of the server (docs/security.md, "Limits and their settings")."""

    header_timeout_s: float
    body_timeout_s: float
    keep_alive_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(header_timeout_s=settings.http_header_timeout_s,
                   body_timeout_s=settings.http_body_timeout_s,
                   keep_alive_s=settings.http_keep_alive_s,
                   max_connections=settings.max_connections)


class ServerConfig(uvicorn.Config):
    """A uvicorn.Config whose protocols enforce `limits`."""

    def __init__(self, app: Any, *, limits: Limits, **options: Any) -> None:
        super().__init__(app, http=LimitedHttpProtocol, ws=AbortableWebSocketProtocol,
                         # uvicorn annotates an int but takes any number of seconds (asyncio's call_later)
                         timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
                         limit_concurrency=limits.max_connections, **options)
        self.limits = limits


def server_config(app: Any, settings: Settings, **options: Any) -> ServerConfig:
    """The one place uvicorn is configured, so tests run with the limits production has."""
    values: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": "warning",
                              "ws_max_size": 1 << 20, "proxy_headers": True, **options}
    return ServerConfig(app, limits=Limits.from_settings(settings), **values)


def _drop(transport: asyncio.Transport) -> None:
    """Close now: gracefully when nothing is left to send, else abort (it might never drain).
    (uvloop's transports do not subclass asyncio's: no isinstance test here.)"""
    if transport.get_write_buffer_size():
        transport.abort()
    elif not transport.is_closing():
        transport.close()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head and on its body.

    The head's clock starts when the connection opens (a client that sends nothing is as slow as
    one that sends a byte a second) or, on a kept-alive connection, with the next request's first
    byte (uvicorn's keep-alive timeout covers the idle time before it).
    """

    def __init__(self, config: ServerConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: Limits = config.limits
        self._deadline: asyncio.TimerHandle | None = None

    # uvicorn narrows asyncio's BaseTransport to Transport here, and ignores the override the same way
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, "request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.limits.header_timeout_s, "request head")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s, "request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol owns the connection from here
        if self._over_limit():
            log.warning("Exceeded concurrency limit: WebSocket upgrade refused with 503.")
            self.transport.write(SERVICE_UNAVAILABLE)
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def _over_limit(self) -> bool:
        """uvicorn's own test for a request, applied to an upgrade (which it lets through)."""
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)

    def _arm(self, timeout_s: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expired, what, timeout_s)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str, timeout_s: float) -> None:
        self._deadline = None
        log.debug("dropping %s: %s not received within %s s", self.client, what, timeout_s)
        _drop(self.transport)


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """websockets-sansio with an `abort` the app can call when its peer stopped reading."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # only set when the handshake goes ahead
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = {"abort": self.abort}

    def abort(self) -> None:
        """Drop the connection without a closing handshake: nothing more can reach the peer.
        uvicorn then sees the connection lost and hands the app `websocket.disconnect`."""
        if not self.disconnected:
            self.transport.abort()


def abort_of(scope: Mapping[str, Any]) -> Callable[[], None] | None:
    """The connection's abort, when the server offers one."""
    extension = scope.get("extensions", {}).get(ABORT_EXTENSION)
    return extension.get("abort") if isinstance(extension, dict) else None
