"""The aiohttp server the wire-level fakes run on, and what they record of the requests they get.

aiohttp parses the requests and frames the answers: plain, chunked (`web.StreamResponse`, one
chunk per write) and WebSocket (`web.WebSocketResponse`). It also tells a fake when a client walks
away: the server runs with `handler_cancellation`, so a client that hangs up cancels its handler at
once, wherever the handler waits (a stall, a paced chunk), and a write to the closed connection
raises ConnectionResetError. `streaming()` turns either into a stream's `closed_early`, which the
tests await to prove that Zylin hung up on a stream rather than waiting it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["FakeServer", "Handler", "RecordedRequest", "StreamRecord", "json_response", "stream_chunks"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, kept after aiohttp's request object is gone."""
    method: str
    target: str                      # path plus query, as sent
    headers: dict[str, str]          # lower-case names
    body: bytes = b""

    @classmethod
    async def of(cls, request: web.Request) -> RecordedRequest:
        return cls(request.method, request.raw_path, {k.lower(): v for k, v in request.headers.items()},
                   await request.read())

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class StreamRecord:
    """One streamed response as the server saw it."""
    request: RecordedRequest
    chunks: list[bytes] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)       # sent to the end
    closed_early: asyncio.Event = field(default_factory=asyncio.Event)   # client left mid-stream

    @property
    def bytes_sent(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None, *,
                  dumps: Callable[[Any], str] = json.dumps) -> web.Response:
    """`obj` as the service's JSON body: content type application/json (no charset, as the services
    send it), serialised by `dumps`."""
    return web.Response(status=status, body=dumps(obj).encode(), content_type="application/json",
                        headers=headers)


class FakeServer:
    """An aiohttp application on 127.0.0.1 and a free port; subclasses give `routes()`, and may
    give `middlewares()` (recording, authentication) that run before every route."""

    # Recordings and audio files are posted whole; aiohttp's 1 MiB default would refuse them.
    client_max_size = 64 * 1024 * 1024

    def __init__(self) -> None:
        self.port = 0
        self.stopping = False               # set while the fake shuts down: nobody walked away
        self._runner: web.AppRunner | None = None
        self._in_flight: set[asyncio.Transport] = set()   # connections with a request being answered

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        raise NotImplementedError

    def middlewares(self) -> Sequence[Middleware]:
        return ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self.stopping = False
        app = web.Application(client_max_size=self.client_max_size,
                              middlewares=[self._track, *self.middlewares()])
        app.add_routes(self.routes())
        # handler_cancellation: a client that hangs up cancels its handler (see the module docstring).
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop at once: answers still stalled or streaming are cut off, as a killed server cuts them."""
        if self._runner is None:
            return
        self.stopping = True
        for transport in list(self._in_flight):
            transport.abort()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def streaming(self, record: StreamRecord) -> Iterator[None]:
        """Around a streamed answer: a client that leaves before it ends sets `closed_early`.
        A failed write ends the handler quietly (there is no one to answer); a cancellation,
        aiohttp's word that the client is gone, goes on up."""
        try:
            yield
        except ConnectionResetError:
            self._left(record)
        except asyncio.CancelledError:
            self._left(record)
            raise

    def _left(self, record: StreamRecord) -> None:
        if not self.stopping and not record.finished.is_set():
            record.closed_early.set()

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:  # None: the client is gone already, and the handler will find out
            self._in_flight.add(transport)
        try:
            return await handler(request)
        finally:
            if transport is not None:
                self._in_flight.discard(transport)


async def stream_chunks(response: web.StreamResponse, record: StreamRecord, data: bytes, sizes: Sequence[int],
                        bytes_per_s: float | None, hold_after: int | None, release: asyncio.Event) -> None:
    """Send `data` on a prepared chunked response, one chunk per write in the given (cycling) sizes,
    optionally paced to `bytes_per_s`, or held after `hold_after` chunks until `release` is set.
    Run it inside `FakeServer.streaming(record)`, which notes a client that leaves."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    offset, n = 0, 0
    while offset < len(data):
        if hold_after is not None and n == hold_after:
            await release.wait()
        piece = data[offset:offset + sizes[n % len(sizes)]]
        if bytes_per_s:
            ahead = (offset + len(piece)) / bytes_per_s - (loop.time() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await response.write(piece)
        record.chunks.append(piece)
        offset += len(piece)
        n += 1
    await response.write_eof()
    record.finished.set()
