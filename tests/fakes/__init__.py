"""Wire-level stand-ins for the services Zylin calls, served on 127.0.0.1 by the tests.

The real SDKs talk to these exactly as they talk to the real services, so a green test means
the production code path works; nothing here mocks a Python object. This module holds the small
HTTP/1.1 server both fakes build on: it reads requests, writes plain or chunked responses, and
notices at once when a client walks away from a streaming response.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ClientGone", "HttpRequest", "HttpServer", "ResponseWriter", "StreamRecord"]

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class HttpRequest:
    method: str
    target: str                      # path plus query, as sent
    headers: dict[str, str]          # lower-case names
    body: bytes = b""
    head: bytes = b""                # the raw request head, for a WebSocket upgrade

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
    request: HttpRequest
    chunks: list[bytes] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)       # sent to the end
    closed_early: asyncio.Event = field(default_factory=asyncio.Event)   # client left mid-stream

    @property
    def bytes_sent(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


class ResponseWriter:
    """Writes one HTTP/1.1 response; streaming uses chunked transfer encoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._gone: asyncio.Future | None = None

    @property
    def gone(self) -> asyncio.Future:
        """Completes when the client hangs up. Watching consumes the connection: a response
        that streams or stalls is sent with `connection: close` and the connection ends after."""
        if self._gone is None:
            # An HTTP/1.1 client sends nothing while it awaits the response, so a read that
            # completes can only be the EOF of a client that left.
            self._gone = asyncio.ensure_future(self._reader.read(1))
        return self._gone

    @property
    def reusable(self) -> bool:
        return self._gone is None

    async def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> None:
        extra = {} if self.reusable else {"connection": "close"}
        head = self._head(status, {"content-type": content_type, "content-length": str(len(body)),
                                   **extra, **(headers or {})})
        self._writer.write(head + body)
        await self._drain()

    async def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        await self.send(status, json.dumps(obj).encode(), headers)

    async def begin(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        _ = self.gone  # start watching for a client that leaves mid-stream
        self._writer.write(self._head(status, {"content-type": content_type,
                                               "transfer-encoding": "chunked", "connection": "close",
                                               **(headers or {})}))
        await self._drain()

    async def chunk(self, data: bytes) -> None:
        """One chunk on the wire, flushed now (so the client can read it before the next)."""
        if self.gone.done():
            raise ClientGone
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self._drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._drain()

    async def hold(self, until: asyncio.Event | None = None, seconds: float | None = None) -> None:
        """Stall the response until `until` is set, `seconds` pass, or the client leaves."""
        waiters: list[asyncio.Future] = [self.gone]
        if until is not None:
            waiters.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters[1:]:
                w.cancel()
        if self.gone.done():
            raise ClientGone

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    def finish(self) -> None:
        if self._gone is not None and not self._gone.done():
            self._gone.cancel()


class HttpServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 and a free port; subclasses implement `handle`."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, request: HttpRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        """Answer one request; return False to close the connection afterwards."""
        raise NotImplementedError

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None or not await self.handle(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ClientGone):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        elif int(headers.get("content-length", "0") or 0):
            body = await reader.readexactly(int(headers["content-length"]))
        return HttpRequest(method, target, headers, body, head)
