"""Peers that stop reading, send slowly or say nothing: each is dropped within its limit.

Everything goes through the real server (services/server.py's uvicorn config, as `python main.py`
runs it). Peers that must misbehave at the socket level are bare sockets: a simulated Twilio
edge built on websockets' sans-I/O client, so the test decides when, if ever, it reads.
"""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri

import main
from services.server import LimitedHttpProtocol, ServerConfig, server_config
from services.simulator.caller import CallerLine
from services.telephony import media_streams as wire
from services.telephony.media_streams import StreamSender
from tests.conftest import Running, running_zylin
from tests.factories import AUTH_TOKEN, EXAMPLE_PROFILE, make_settings

SLACK_S = 2.5  # scheduling headroom on a shared 2-core machine; every bound below adds it once


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _address(zylin: Running) -> tuple[str, int]:
    parts = urlsplit(zylin.base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _open_socket(zylin: Running, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window the server sees is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # An internet-sized segment: on loopback (64 KB segments) the server's kernel would
        # size its send buffer to megabytes and absorb a whole greeting before anything waits.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.setblocking(False)
    await _loop().sock_connect(sock, _address(zylin))
    return sock


async def _closed_by_server(sock: socket.socket, within_s: float) -> float | None:
    """Seconds until the server ended the connection (EOF or reset), reading whatever is left;
    None if it still stands after `within_s`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(within_s):
            while await _loop().sock_recv(sock, 65536):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - started


class RawTwilioEdge:
    """Twilio's side of a Media Stream on a bare socket: it writes frames and reads only when told."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol

    @classmethod
    async def connect(cls, zylin: Running, stream_url: str, rcvbuf: int | None = None) -> RawTwilioEdge:
        sock = await _open_socket(zylin, rcvbuf)
        protocol = ClientProtocol(parse_uri(zylin.ws_url), max_size=None)
        request = protocol.connect()
        request.headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(stream_url, {})
        protocol.send_request(request)
        edge = cls(sock, protocol)
        await edge._flush()
        await edge._handshake()
        return edge

    async def _flush(self) -> None:
        await _loop().sock_sendall(self.sock, b"".join(self.protocol.data_to_send()))

    async def _handshake(self) -> None:
        """Reads the 101 and nothing more: the server sends no frame before `start`."""
        async with asyncio.timeout(5):
            while True:
                self.protocol.receive_data(await _loop().sock_recv(self.sock, 4096))
                responses = [e for e in self.protocol.events_received() if isinstance(e, Response)]
                if responses:
                    assert responses[0].status_code == 101, responses[0].status_code
                    return

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    def close(self) -> None:
        self.sock.close()


async def _start_stream(zylin: Running, call_sid: str, rcvbuf: int | None = None) -> RawTwilioEdge:
    url, params = await zylin.stream_twiml(call_sid)
    edge = await RawTwilioEdge.connect(zylin, url, rcvbuf)
    await edge.send_text(wire.inbound_connected())
    await edge.send_text(wire.inbound_start(1, "MZ" + call_sid[2:], call_sid, "AC" + "1" * 32, params))
    return edge


def _long_greeting_profile(tmp_path) -> str:
    """A greeting of ~40 s (~400 KB of messages): several times what the socket buffers hold."""
    greeting = "Thanks for calling Bright Smile Dental, this is Zylin. " + "We are so glad you called. " * 20
    text = EXAMPLE_PROFILE.read_text()
    lines = [f'greeting = "{greeting}"' if line.startswith("greeting =") else line
             for line in text.splitlines()]
    path = tmp_path / "long-greeting.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# --- 1. a Twilio edge that stops reading --------------------------------------------------------

async def test_a_peer_that_stops_reading_is_dropped_and_the_call_recorded_within_the_send_timeout(tmp_path):
    send_timeout_s = 0.5
    async with running_zylin(max_call_s=1.0, send_timeout_s=send_timeout_s,
                             business_profile=_long_greeting_profile(tmp_path)) as zylin:
        call_sid = "CA" + "5" * 32
        edge = await _start_stream(zylin, call_sid, rcvbuf=4096)  # and never reads again
        started = time.monotonic()
        try:
            record = await zylin.recorder.wait_ended(call_sid, timeout_s=send_timeout_s + SLACK_S)
            ended_after = time.monotonic() - started
            # The server dropped the connection: once we read, the buffered audio ends in EOF/reset.
            assert await _closed_by_server(edge.sock, within_s=SLACK_S) is not None
        finally:
            edge.close()

    assert record["ended"] == "twilio stopped reading"
    assert ended_after < send_timeout_s + SLACK_S
    greeting = next(t for t in record["turns"] if t.speaker == "zylin")
    assert greeting.text.startswith("Thanks for calling Bright Smile Dental")
    assert greeting.interrupted, "the caller cannot have heard the greeting to its end"


async def test_a_goodbye_whose_mark_never_comes_back_still_ends_at_the_hard_limit():
    """A Twilio edge that reads but stops playing (no mark echoes): the sends never wait, so only
    the watchdog's hard limit (MAX_CALL_S + 60 s) can end the call, and it held only while the
    call was streaming, not once the goodbye (state ENDING) was waiting for its mark."""
    async with running_zylin(max_call_s=1.0) as zylin:
        call_sid = "CA" + "6" * 32
        _, params = await zylin.stream_twiml(call_sid)
        stream_sid = "MZ" + "6" * 32
        async with zylin.media_socket() as ws:
            await ws.send(wire.inbound_connected())
            await ws.send(wire.inbound_start(1, stream_sid, call_sid, "AC" + "1" * 32, params))
            marks = []
            while len(marks) < 2:  # the greeting's mark, echoed; then the goodbye's, never echoed
                out = wire.parse_outbound(await asyncio.wait_for(ws.recv(), 10))
                if out.event == "mark" and not out.name.endswith(".start"):  # sentence ends only
                    marks.append(out.name)
                    if len(marks) == 1:
                        await ws.send(wire.inbound_mark(2, stream_sid, out.name))
            zylin.recorder.calls[call_sid]["info"].started_at -= 61  # the hard limit is now past
            record = await zylin.recorder.wait_ended(call_sid, timeout_s=SLACK_S)

    assert record["ended"] == "maximum call length"
    goodbye = [t for t in record["turns"] if t.speaker == "zylin"][-1]
    assert "time limit" in goodbye.text


class _Blocked:
    """A socket whose write buffer never drains: every send and close waits until aborted."""

    def __init__(self) -> None:
        self.aborted = asyncio.Event()
        self.aborts = 0
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        await self.aborted.wait()
        raise ConnectionResetError("aborted")

    async def close(self) -> None:
        await self.aborted.wait()

    def abort(self) -> None:
        self.aborts += 1
        self.aborted.set()


async def _within(bound_s: float, coro) -> tuple[object, float]:
    started = time.monotonic()
    async with asyncio.timeout(bound_s):
        result = await coro
    return result, time.monotonic() - started


async def test_a_send_into_a_full_buffer_gives_up_after_the_timeout_and_aborts_once():
    socket_ = _Blocked()
    sender = StreamSender(socket_.send_text, "MZ1", socket_.close, timeout_s=0.2, abort=socket_.abort)
    sent, waited = await _within(0.2 + SLACK_S, sender.media(b"\xff" * 160))
    assert sent is False and sender.stuck and sender.closed
    assert waited >= 0.2 - 0.05  # not before the bound
    assert socket_.aborts == 1
    # Everything after is refused at once, and the close sends nothing into the dead socket.
    assert await asyncio.wait_for(sender.clear(), 0.05) is False
    await asyncio.wait_for(sender.close(), 0.05)
    assert socket_.aborts == 1


async def test_a_close_into_a_full_buffer_gives_up_after_the_timeout():
    socket_ = _Blocked()
    sender = StreamSender(socket_.send_text, "MZ1", socket_.close, timeout_s=0.2, abort=socket_.abort)
    _, waited = await _within(0.2 + SLACK_S, sender.close())
    assert sender.stuck and socket_.aborts == 1 and waited >= 0.2 - 0.05


async def test_a_close_is_bounded_even_where_the_server_offers_no_abort():
    socket_ = _Blocked()
    sender = StreamSender(socket_.send_text, "MZ1", socket_.close, timeout_s=0.2)
    await _within(0.2 + SLACK_S, sender.close())
    assert sender.stuck and sender.closed


async def test_a_clear_queued_behind_a_stuck_send_returns_once_the_socket_is_dropped():
    socket_ = _Blocked()
    sender = StreamSender(socket_.send_text, "MZ1", socket_.close, timeout_s=0.2, abort=socket_.abort)
    media = asyncio.create_task(sender.media(b"\xff" * 160))
    await asyncio.sleep(0)  # the media send holds the lock, waiting on the buffer
    cleared, _ = await _within(0.2 + SLACK_S, sender.clear())
    assert cleared is False and await media is False and socket_.aborts == 1


async def test_a_slow_but_moving_socket_is_not_taken_for_a_stuck_one():
    async def slow(text: str) -> None:
        await asyncio.sleep(0.06)  # each send well inside the bound; all of them far beyond it

    aborts: list[int] = []
    sender = StreamSender(slow, "MZ1", timeout_s=0.1, abort=lambda: aborts.append(1))
    results = [await sender.media(b"\xff" * 160) for _ in range(8)]
    assert results == [True] * 8 and not sender.stuck and not aborts


# --- 2. slow and idle clients ----------------------------------------------------------------

async def _slowloris(zylin: Running, stop: asyncio.Event) -> tuple[socket.socket, asyncio.Task]:
    """A request head sent a byte at a time, never finished."""
    sock = await _open_socket(zylin)

    async def drip() -> None:
        head = b"GET /health HTTP/1.1\r\nHost: zylin\r\nX-Padding: " + b"a" * 10_000
        for byte in head:
            if stop.is_set():
                return
            try:
                await _loop().sock_sendall(sock, bytes([byte]))
            except OSError:
                return  # dropped: what we wait for
            await asyncio.sleep(0.05)

    return sock, asyncio.create_task(drip())


async def test_slow_header_connections_are_dropped_after_the_header_timeout_while_a_call_goes_on():
    header_timeout_s = 1.0
    async with running_zylin(http_header_timeout_s=header_timeout_s) as zylin:
        stop = asyncio.Event()
        healthy = asyncio.create_task(zylin.caller().call([CallerLine("What are your opening hours?")]))
        slow, drips = zip(*[await _slowloris(zylin, stop) for _ in range(30)], strict=True)
        silent = [await _open_socket(zylin) for _ in range(10)]  # connected, never a byte
        try:
            closed = await asyncio.gather(*(_closed_by_server(s, header_timeout_s + SLACK_S)
                                            for s in [*slow, *silent]))
            result = await asyncio.wait_for(healthy, 60)
        finally:
            stop.set()
            await asyncio.gather(*drips)
            for sock in [*slow, *silent]:
                sock.close()
        record = await zylin.recorder.wait_ended(result.call_sid)

    assert all(c is not None for c in closed), f"{closed.count(None)} of {len(closed)} still open"
    assert not result.timeouts and not result.protocol_errors
    assert any("open" in t.text for t in record["turns"] if t.speaker == "zylin")


async def test_a_body_that_never_completes_is_dropped_after_the_body_timeout():
    async with running_zylin(http_body_timeout_s=1.0) as zylin:
        sock = await _open_socket(zylin)
        try:
            await _loop().sock_sendall(sock, b"POST /api/twilio/status HTTP/1.1\r\nHost: zylin\r\n"
                                             b"Content-Type: application/x-www-form-urlencoded\r\n"
                                             b"Content-Length: 500\r\n\r\nCallSid=CA")
            assert await _closed_by_server(sock, 1.0 + SLACK_S) is not None
        finally:
            sock.close()


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout():
    async with running_zylin(http_keep_alive_s=0.5) as zylin:
        sock = await _open_socket(zylin)
        try:
            await _loop().sock_sendall(sock, b"GET /health HTTP/1.1\r\nHost: zylin\r\n\r\n")
            assert await _closed_by_server(sock, 0.5 + SLACK_S) is not None
        finally:
            sock.close()


async def _closed_code(ws, within_s: float) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(within_s):
            while True:
                await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_streams_that_never_send_start_are_closed_with_1008_after_the_start_timeout():
    start_timeout_s = 1.0
    async with running_zylin(start_timeout_s=start_timeout_s) as zylin:
        async def idle_stream() -> tuple[int | None, float]:
            async with zylin.media_socket() as ws:
                await ws.send(wire.inbound_connected())
                opened = time.monotonic()
                for n in range(3):  # frames before `start` do not hold the socket open
                    await ws.send(wire.inbound_media(n, "MZ" + "2" * 32, n, n * 20, b"\xff" * 160))
                code = await _closed_code(ws, start_timeout_s + SLACK_S)
                return code, time.monotonic() - opened

        healthy = asyncio.create_task(zylin.caller().call([CallerLine("How much is a cleaning?")]))
        closed = await asyncio.gather(*(idle_stream() for _ in range(20)))
        result = await asyncio.wait_for(healthy, 60)

    assert [code for code, _ in closed] == [1008] * 20
    assert all(after >= start_timeout_s - 0.1 for _, after in closed), "closed by the timeout, not before"
    assert not result.timeouts and not result.protocol_errors


async def test_beyond_max_connections_requests_and_upgrades_get_503():
    limit = 6
    async with running_zylin(max_connections=limit, http_header_timeout_s=30.0) as zylin:
        idle = [await _open_socket(zylin) for _ in range(limit - 1)]
        try:
            async with httpx.AsyncClient(base_url=zylin.base_url) as http:
                refused = await http.get("/health")
            with pytest.raises(websockets.InvalidStatus) as upgrade:
                async with zylin.media_socket():
                    pass
        finally:
            for sock in idle:
                sock.close()
        # The limit counts open connections: once they are gone, requests are served again.
        served = await _eventually_ok(zylin, within_s=SLACK_S)

    assert refused.status_code == 503
    assert upgrade.value.response.status_code == 503
    assert served


async def _eventually_ok(zylin: Running, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=zylin.base_url) as http:
        while time.monotonic() < deadline:
            if (await http.get("/health")).status_code == 200:
                return True
            await asyncio.sleep(0.05)
    return False


# --- 3. one config for `python main.py` and the tests ------------------------------------------

def test_main_serves_with_the_shared_config_and_its_limits(monkeypatch, tmp_path):
    import uvicorn

    captured: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: captured.append(self.config))
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/zylin.db", max_connections=321,
                             http_header_timeout_s=7.0, http_body_timeout_s=8.0, http_keep_alive_s=9.0)
    assert main.serve(settings) == 0

    config = captured[0]
    assert isinstance(config, ServerConfig)
    assert config.limit_concurrency == 321 and config.timeout_keep_alive == 9.0
    assert (config.limits.header_timeout_s, config.limits.body_timeout_s) == (7.0, 8.0)
    assert config.http is LimitedHttpProtocol
    assert (config.host, config.port, config.ws_max_size) == (settings.host, settings.port, 1 << 20)
    assert server_config(object(), settings).limits == config.limits
