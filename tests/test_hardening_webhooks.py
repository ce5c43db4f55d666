"""Twilio's endpoints against a sender that is not Twilio: bodies capped before they are parsed,
multipart refused, and the account's credentials never sent to a host the form names."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.simulator.server import serve_app
from services.telephony.recordings import credentials_allowed
from services.telephony.rest import TWILIO_API
from tests.conftest import running_zylin
from tests.factories import AUTH_TOKEN
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_legacy_calls import wav_bytes

TWILIO_PATHS = ["/api/twilio/voice", "/api/twilio/status", "/api/twilio/dial-result",
                "/api/twilio/voice-legacy", "/api/twilio/voice-legacy/recording",
                "/api/twilio/voice-legacy/dial-result"]
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def raw_request(base_url: str, head: bytes, body: bytes, timeout_s: float = 5.0) -> bytes:
    """Send a request head and part of a body on a raw socket; what the server answers. Raw on
    purpose: an HTTP client sends the body it announces, and this one must not."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout_s)
    finally:
        writer.close()


async def test_a_body_declared_larger_than_the_cap_is_refused_before_it_is_sent(zylin):
    # 200 MB announced, 64 KB sent: the answer comes without the server waiting for the rest.
    for path in TWILIO_PATHS:
        head = (f"POST {path} HTTP/1.1\r\nHost: zylin.example.test\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {200 * 1024 * 1024}\r\n\r\n").encode()
        answer = await raw_request(zylin.base_url, head, b"a=" + b"x" * 65536)
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:80])


async def test_a_chunked_body_past_the_cap_is_refused_as_it_grows(zylin):
    async def body():
        for _ in range(64):
            yield b"Field=" + b"y" * 16384 + b"&"

    async with httpx.AsyncClient(base_url=zylin.base_url, timeout=10) as http:
        response = await http.post("/api/twilio/voice", content=body(), headers=FORM)
    assert response.status_code == 413


async def test_multipart_is_refused_on_twilio_endpoints(zylin):
    async with httpx.AsyncClient(base_url=zylin.base_url, timeout=10) as http:
        for path in TWILIO_PATHS:
            response = await http.post(path, files={"CallSid": ("a.txt", b"CA123")})
            assert response.status_code == 415, path


async def test_too_many_fields_are_refused(zylin):
    form = "&".join(f"F{n}=1" for n in range(500))
    async with httpx.AsyncClient(base_url=zylin.base_url, timeout=10) as http:
        response = await http.post("/api/twilio/voice", content=form, headers=FORM)
    assert response.status_code == 400


async def test_a_normal_signed_call_still_gets_its_twiml(zylin):
    result = await zylin.caller().call([])
    assert result.webhook_status == 200 and result.connected


# --- credentials go to Twilio only --------------------------------------------------------------------

class Collector:
    """A host that is not Twilio: it notes every request and whether it carried credentials."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._any)])

    async def _any(self, request: Request) -> Response:
        self.seen.append((request.url.path, request.headers.get("authorization")))
        return Response(wav_bytes(), media_type="audio/x-wav")


def test_credentials_go_only_to_twilio_api_hosts_over_https_and_the_configured_base():
    # Only strings are checked here: nothing is fetched, and the host is the SDK's own constant.
    twilio = urlsplit(TWILIO_API).netloc
    assert credentials_allowed(f"{TWILIO_API}/2010-04-01/Accounts/AC1/Recordings/RE1.wav")
    assert credentials_allowed("https://api.dublin.ie1.twilio.com/2010-04-01/x.wav")
    assert credentials_allowed("http://127.0.0.1:9/x.wav", "http://127.0.0.1:9")
    for url in (f"http://{twilio}/x.wav", f"https://{twilio}.evil.example/x.wav",
                f"https://evil.example/{twilio}/x.wav", "https://twilio.com.evil.example/x",
                "https://user@evil.example/x", "http://127.0.0.1:10/x.wav"):
        assert not credentials_allowed(url, "http://127.0.0.1:9"), url


async def unsigned_recording(zylin, recording_url: str) -> httpx.Response:
    form = {"CallSid": "CA" + "ab" * 16, "From": "+15550100000", "To": "+15550200000",
            "RecordingUrl": recording_url, "RecordingSid": "RE" + "cd" * 16, "RecordingDuration": "3"}
    async with httpx.AsyncClient(base_url=zylin.base_url, timeout=15) as http:
        await http.post("/api/twilio/voice-legacy", data=form)
        return await http.post("/api/twilio/voice-legacy/recording", data=form)


async def test_an_unsigned_callback_cannot_make_zylin_send_its_credentials_elsewhere(caplog):
    collector = Collector()
    async with serve_app(collector.app) as elsewhere, running_zylin(
            twilio_validate_signatures=False, twilio_account_sid="AC" + "7" * 32) as zylin:
        answer = await unsigned_recording(zylin, f"{elsewhere}/2010-04-01/Accounts/AC/Recordings/RE1")

    assert answer.status_code == 200  # the caller is asked again, the call goes on
    assert collector.seen == [], "nothing, and above all no credentials, went to a host the form named"
    assert "not a Twilio API host" in caplog.text


async def test_a_redirect_away_from_twilio_is_followed_without_the_credentials():
    collector = Collector()
    async with FakeTwilioRest(auth_token=AUTH_TOKEN) as twilio, serve_app(collector.app) as storage_host:
        twilio.recording_redirects["RE1"] = f"{storage_host}/media/RE1.wav"
        async with running_zylin(twilio_account_sid=twilio.account_sid, twilio_api_base_url=twilio.url,
                                 twilio_validate_signatures=False) as zylin:
            await unsigned_recording(zylin, twilio.recording_url("RE1"))

    assert [status for _, status in twilio.recording_fetches] == [302]
    token = base64.b64encode(f"{twilio.account_sid}:{AUTH_TOKEN}".encode()).decode()
    assert collector.seen == [("/media/RE1.wav", None)], "the storage host got the file request, not the token"
    assert twilio.recording_auth == [f"Basic {token}"]
