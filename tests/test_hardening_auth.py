"""With no ADMIN_TOKEN the call log is for this machine only, through the real server: a loopback
client is not enough when the Host names another site (DNS rebinding, a TCP forwarder) or the
request came through a proxy (uvicorn trusts X-Forwarded-For from 127.0.0.1, so the client
address alone would say "loopback")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from api.auth import access_banner
from tests.conftest import running_zylin

EXPLANATION = "set ADMIN_TOKEN to use the call log through a proxy or from another machine"
PATHS = ["/calls", "/api/calls", "/bookings", "/api/bookings", "/messages", "/api/messages"]


@contextlib.asynccontextmanager
async def tcp_forwarder(target: str) -> AsyncIterator[str]:
    """A plain TCP relay on loopback to `target`, as socat, an SSH or ngrok TCP tunnel would be:
    bytes in, bytes out, no headers added. Yields its own base URL."""
    target_port = urlsplit(target).port

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w), return_exceptions=True)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def get_all(base_url: str, headers: dict[str, str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        return [await http.get(path, headers=headers) for path in PATHS]


def assert_refused(responses: list[httpx.Response]) -> None:
    for path, response in zip(PATHS, responses, strict=True):
        assert response.status_code == 403, (path, response.status_code)
        said = response.json()["error"] if path.startswith("/api/") else response.text
        assert EXPLANATION in said, said


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1", "127.0.0.1:{port}",
                                  "[::1]", "[::1]:{port}", "localhost:{port}"])
async def test_a_request_for_this_machine_by_a_loopback_name_is_served(host):
    async with running_zylin(database=True, admin_token="") as zylin:
        port = str(urlsplit(zylin.base_url).port)
        responses = await get_all(zylin.base_url, {"Host": host.replace("{port}", port)})
    assert [r.status_code for r in responses] == [200] * len(PATHS)


@pytest.mark.parametrize("host", ["rebind.attacker.example", "rebind.attacker.example:{port}",
                                  "127.0.0.1.nip.io:{port}", "localhost.attacker.example",
                                  "10.0.0.5:{port}", "[::ffff:203.0.113.7]", "[::1", "::1", "127.0.0.1:80x",
                                  "localhost@attacker.example", ""])
async def test_a_foreign_host_header_from_loopback_is_refused_as_dns_rebinding(host):
    """A page on attacker.example, re-resolved to 127.0.0.1, is a loopback client for the server."""
    async with running_zylin(database=True, admin_token="") as zylin:
        port = str(urlsplit(zylin.base_url).port)
        responses = await get_all(zylin.base_url, {"Host": host.replace("{port}", port)})
    assert_refused(responses)


@pytest.mark.parametrize(("header", "value"), [
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-For", "127.0.0.1"),   # uvicorn then reports the client as 127.0.0.1
    ("Forwarded", "for=127.0.0.1;proto=https"),
    ("X-Forwarded-Host", "localhost"),
    ("X-Forwarded-Proto", "https"),
    ("X-Real-IP", "127.0.0.1"),
    ("Via", "1.1 ngrok"),
])
async def test_a_request_through_a_proxy_from_loopback_is_refused(header, value):
    async with running_zylin(database=True, admin_token="") as zylin:
        responses = await get_all(zylin.base_url, {header: value})
    assert_refused(responses)


async def test_a_request_through_a_plain_tcp_forwarder_is_refused_by_its_host():
    """No proxy header and a loopback client address: only the Host tells where it came from."""
    async with running_zylin(database=True, admin_token="") as zylin:
        async with tcp_forwarder(zylin.base_url) as forwarded:
            public = await get_all(forwarded, {"Host": "zylin.example.com"})
            local = await get_all(forwarded, {})  # Host 127.0.0.1:<forwarder port>: this machine
    assert_refused(public)
    assert [r.status_code for r in local] == [200] * len(PATHS), "the relay itself is faithful"


async def raw_get(base_url: str, head: bytes) -> bytes:
    """One HTTP/1.1 request written by hand (clients will not send two Host headers)."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_two_host_headers_are_refused_even_if_one_is_loopback():
    async with running_zylin(database=True, admin_token="") as zylin:
        answers = [await raw_get(zylin.base_url, b"GET /api/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n" + second)
                   for second in (b"Host: rebind.attacker.example\r\n", b"")]
    assert answers[0].startswith(b"HTTP/1.1 403 Forbidden") and EXPLANATION.encode() in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 200 OK"), "the same request with one Host is served"


async def test_with_a_token_a_proxied_request_is_served_and_the_banner_says_how_to_read_remotely():
    async with running_zylin(database=True, admin_token="owner-secret") as zylin:
        async with tcp_forwarder(zylin.base_url) as forwarded:
            async with httpx.AsyncClient(base_url=forwarded, timeout=10) as http:
                served = await http.get("/api/calls", headers={
                    "Host": "zylin.example.com", "X-Forwarded-For": "203.0.113.7",
                    "Authorization": "Bearer owner-secret"})
    assert served.status_code == 200
    assert "ADMIN_TOKEN required" in access_banner("owner-secret")
    banner = access_banner("")
    assert "localhost" in banner and "proxy" in banner and "Set ADMIN_TOKEN" in banner
