"""A local Twilio REST API for the two requests Zylin makes: updating a live call (hang up, or
new TwiML with <Dial> for a transfer) and sending an SMS. The real twilio SDK talks to it
through `TwilioTelephony(..., api_base_url=fake.url)`.

It checks HTTP Basic auth (account SID + auth token) as Twilio does, records every request it
accepts, answers with Twilio's JSON resources, and refuses what Twilio refuses: an update of a
call that has ended gets 400 with error 21220 (a call becomes ended when it is hung up through
the API, or when a test says so), a call Twilio does not know gets 404 with error 20404. It can
also fail the next requests with any status (a 500 for an outage), or never answer them at all
(`stall()`: the request hangs until `release` is set or the client gives up).

    async with FakeTwilioRest() as twilio:
        telephony = TwilioTelephony(twilio.account_sid, twilio.auth_token, twilio.url, "+15550009999")
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import secrets
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.server import FakeServer, json_response

API = "/2010-04-01/Accounts/{account}"
ERRORS = {401: (20003, "Authenticate"),
          404: (20404, "The requested resource was not found"),
          500: (20500, "Internal Server Error")}
CALL_NOT_IN_PROGRESS = (21220, "Call is not in-progress. Cannot redirect.")
# Twilio's bodies as this fake has always written them: compact, UTF-8 as is.
twilio_json = functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class CallUpdate:
    """One accepted POST .../Calls/{sid}.json."""
    at: float                       # event-loop time it arrived
    call_sid: str
    form: dict[str, str]            # Twiml, Status, ... as Twilio received them
    status: int                     # what the fake answered


@dataclass(frozen=True)
class SentSms:
    """One accepted POST .../Messages.json."""
    at: float
    to: str
    from_: str
    body: str
    status: int
    sid: str = field(default_factory=lambda: "SM" + secrets.token_hex(16))


class FakeTwilioRest(FakeServer):
    def __init__(self, account_sid: str = "AC" + "7" * 32, auth_token: str = "fake-twilio-token") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.call_updates: list[CallUpdate] = []
        self.messages: list[SentSms] = []
        self.unauthorized = 0                          # requests refused for bad credentials
        self.call_failures: deque[int] = deque()       # statuses for the next call updates
        self.message_failures: deque[int] = deque()    # statuses for the next messages
        self.ended_calls: set[str] = set()             # updates get 400 / 21220
        self.unknown_calls: set[str] = set()           # updates get 404 / 20404
        self.stalled = 0                               # requests left hanging by stall()
        self.release = asyncio.Event()                 # ends every stall
        self._stall = False
        self.recordings: dict[str, bytes] = {}          # RecordingSid -> WAV, served to the account
        self.recording_redirects: dict[str, str] = {}   # RecordingSid -> where its media lives (302)
        self.recording_fetches: list[tuple[str, int]] = []
        self.recording_auth: list[str | None] = []      # the Authorization each fetch carried
        self._changed = asyncio.Condition()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(API + "/Calls/{sid}.json", self._update_call),
                web.post(API + "/Messages.json", self._send_message),
                web.get(API + "/Recordings/{sid}.wav", self._recording, allow_head=False)]

    def fail_calls(self, status: int, times: int = 1) -> None:
        self.call_failures.extend([status] * times)

    def fail_messages(self, status: int, times: int = 1) -> None:
        self.message_failures.extend([status] * times)

    def recording_url(self, sid: str) -> str:
        """The RecordingUrl Twilio's callback names (without the extension; .wav is added by clients)."""
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}"

    def end_call(self, call_sid: str) -> None:
        """The caller hung up: Twilio refuses to update the call from now on (21220)."""
        self.ended_calls.add(call_sid)

    def stall(self) -> None:
        """Accept every following request and never answer it (until `release` is set)."""
        self._stall = True
        self.release.clear()

    async def _maybe_stall(self) -> None:
        if self._stall:
            self.stalled += 1
            await self._notify()
            await self.release.wait()

    async def wait_messages(self, count: int, timeout: float = 5.0) -> list[SentSms]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.messages) >= count), timeout)
        return self.messages

    async def wait_call_updates(self, count: int, timeout: float = 5.0) -> list[CallUpdate]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.call_updates) >= count), timeout)
        return self.call_updates

    # --- requests ------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user == self.account_sid == request.match_info["account"]
                and secrets.compare_digest(password, self.auth_token))

    async def _update_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        sid = request.match_info["sid"]
        await self._maybe_stall()
        status = self.call_failures.popleft() if self.call_failures else 200
        refusal = None
        if sid in self.unknown_calls:
            status, refusal = 404, ERRORS[404]
        elif sid in self.ended_calls:
            status, refusal = 400, CALL_NOT_IN_PROGRESS
        self.call_updates.append(CallUpdate(asyncio.get_running_loop().time(), sid, form, status))
        await self._notify()
        if status != 200:
            return _error(status, request, refusal)
        if form.get("Status") in ("completed", "canceled"):
            self.ended_calls.add(sid)
        return json_response(200, {
            "sid": sid, "account_sid": self.account_sid, "api_version": "2010-04-01",
            "status": form.get("Status", "in-progress"), "direction": "inbound",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }, dumps=twilio_json)

    async def _send_message(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        await self._maybe_stall()
        status = self.message_failures.popleft() if self.message_failures else 201
        sms = SentSms(asyncio.get_running_loop().time(), form.get("To", ""), form.get("From", ""),
                      form.get("Body", ""), status)
        self.messages.append(sms)
        await self._notify()
        if status >= 400:
            return _error(status, request)
        return json_response(201, {
            "sid": sms.sid, "account_sid": self.account_sid, "api_version": "2010-04-01",
            "to": sms.to, "from": sms.from_, "body": sms.body, "status": "queued",
            "num_segments": "1", "direction": "outbound-api",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sms.sid}.json",
        }, dumps=twilio_json)

    async def _recording(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        status = 302 if sid in self.recording_redirects else 200 if sid in self.recordings else 404
        if not self._authorized(request):
            status = 401
        self.recording_fetches.append((sid, status))
        self.recording_auth.append(request.headers.get("authorization"))
        if status == 302:  # Twilio hands recording media off to its storage host
            return web.Response(status=302, headers={"location": self.recording_redirects[sid]})
        if status != 200:
            return _error(status, request)
        return web.Response(body=self.recordings[sid], content_type="audio/x-wav")

    def _refused(self, request: web.Request) -> web.Response:
        self.unauthorized += 1
        return _error(401, request)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def _error(status: int, request: web.Request, refusal: tuple[int, str] | None = None) -> web.Response:
    code, message = refusal or ERRORS.get(status, (20000 + status, "Error"))
    return json_response(status, {"code": code, "message": f"{message}: {request.path}",
                                  "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                         dumps=twilio_json)
