"""Twilio REST side effects on a live call: hang up, transfer to a person, send an SMS.

The SDK's async HTTP client builds an aiohttp session in its constructor, which needs a running
event loop (`python main.py` builds the app before uvicorn's loop exists), and it never applies
its `timeout` (aiohttp gets `total=None`). So the client is built on first use, inside the loop,
and every request is bounded here: a Twilio that does not answer costs a call at most
`TWILIO_REST_TIMEOUT_S`, then the usual fallback runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from services.privacy import mask_phone, scrub

log = logging.getLogger("zylin.telephony")

TWILIO_API = "https://api.twilio.com"
# Twilio's answers for a call that is already over: 20404 "not found" (also plain HTTP 404) and
# 21220 "Call is not in-progress. Cannot redirect."
ALREADY_ENDED = {20404, 21220}
T = TypeVar("T")


class Telephony(Protocol):
    can_transfer: bool

    async def hang_up(self, call_sid: str) -> bool:
        """True when the call is over (ended now, or already); False: close the stream instead."""
        ...

    async def transfer(self, call_sid: str, number: str, action_url: str) -> bool:
        """Dial `number`; Twilio posts the outcome to `action_url`. True when Twilio took it."""
        ...

    async def send_sms(self, to: str, body: str) -> bool:
        """True when Twilio accepted the message."""
        ...

    async def close(self) -> None: ...


class OfflineTelephony:
    """No Twilio credentials: closing the stream ends a <Connect>-only call; no transfers."""

    can_transfer = False

    async def hang_up(self, call_sid: str) -> bool:
        return False

    async def transfer(self, call_sid: str, number: str, action_url: str) -> bool:
        return False

    async def send_sms(self, to: str, body: str) -> bool:
        log.info("SMS to %s not sent (no Twilio credentials)", mask_phone(to))
        return False

    async def close(self) -> None:
        return None


class _RebasedHttpClient(AsyncTwilioHttpClient):
    """Sends Twilio API requests to another base URL (a regional proxy, or a test fake)."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any):
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        return await super().request(method, url, *args, **kwargs)


def dial_twiml(number: str, action_url: str, ring_s: int = 25) -> str:
    """<Dial> with an action: Twilio posts DialCallStatus there when the dial ends, and runs the
    TwiML we answer. Nothing follows </Dial>: without an action Twilio would run it even after a
    successful transfer, and a <Say> there speaks in Twilio's default voice."""
    response = VoiceResponse()
    response.dial(number, action=action_url, method="POST", timeout=ring_s)
    return str(response)


class TwilioTelephony:
    can_transfer = True

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str = "",
                 sms_from: str = "", *, timeout_s: float = 5.0, ring_s: int = 25) -> None:
        self._credentials = (account_sid, auth_token)
        self._api_base_url = api_base_url
        self.sms_from = sms_from
        self.timeout_s = timeout_s
        self.ring_s = ring_s
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    def _rest(self) -> Client:
        """The SDK client, built inside the running loop on first use (see the module docstring)."""
        if self._client is None:
            self._http = (_RebasedHttpClient(self._api_base_url) if self._api_base_url
                          else AsyncTwilioHttpClient())
            self._client = Client(*self._credentials, http_client=self._http)
        return self._client

    async def _bounded(self, request: Callable[[Client], Awaitable[T]]) -> T:
        async with asyncio.timeout(self.timeout_s):
            return await request(self._rest())

    async def hang_up(self, call_sid: str) -> bool:
        try:
            await self._bounded(lambda rest: rest.calls(call_sid).update_async(status="completed"))
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code in ALREADY_ENDED:
                log.info("hang-up of %s: the call had already ended (%s)", call_sid, exc.code or exc.status)
                return True
            log.error("hang-up of %s failed: %s", call_sid, _describe(exc))
            return False
        except TimeoutError:
            log.error("hang-up of %s failed: Twilio did not answer within %g s", call_sid, self.timeout_s)
            return False
        except Exception as exc:
            log.error("hang-up of %s failed: %s", call_sid, _describe(exc))
            return False
        return True

    async def transfer(self, call_sid: str, number: str, action_url: str) -> bool:
        try:
            await self._bounded(lambda rest: rest.calls(call_sid).update_async(
                twiml=dial_twiml(number, action_url, self.ring_s)))
        except TimeoutError:
            log.error("transfer of %s to %s failed: Twilio did not answer within %g s",
                      call_sid, mask_phone(number), self.timeout_s)
            return False
        except Exception as exc:
            log.error("transfer of %s to %s failed: %s", call_sid, mask_phone(number), _describe(exc))
            return False
        log.info("call %s is being put through to %s", call_sid, mask_phone(number))
        return True

    async def send_sms(self, to: str, body: str) -> bool:
        if not self.sms_from:
            log.warning("SMS to %s not sent: TWILIO_SMS_FROM is not set", mask_phone(to))
            return False
        try:
            await self._bounded(lambda rest: rest.messages.create_async(to=to, from_=self.sms_from, body=body))
        except TimeoutError:
            log.error("SMS to %s failed: Twilio did not answer within %g s", mask_phone(to), self.timeout_s)
            return False
        except Exception as exc:
            log.error("SMS to %s failed: %s", mask_phone(to), _describe(exc))
            return False
        log.info("SMS sent to %s", mask_phone(to))
        return True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _describe(exc: BaseException) -> str:
    """Twilio's code and status without the request URL's details; other errors by kind."""
    if isinstance(exc, TwilioRestException):
        return f"HTTP {exc.status}, Twilio error {exc.code}"
    return scrub(f"{type(exc).__name__}: {exc}")  # a library's message may quote the number dialled
