"""Twilio REST side effects on a live call: hang up, transfer to a person."""

from __future__ import annotations

import logging
from typing import Protocol

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from services.privacy import mask_phone

log = logging.getLogger("zylin.telephony")

TWILIO_API = "https://api.twilio.com"


class Telephony(Protocol):
    can_transfer: bool

    async def hang_up(self, call_sid: str) -> bool:
        """True when the carrier ended the call; False means: close the stream instead."""
        ...

    async def transfer(self, call_sid: str, number: str) -> bool: ...

    async def send_sms(self, to: str, body: str) -> bool:
        """True when Twilio accepted the message."""
        ...

    async def close(self) -> None: ...


class OfflineTelephony:
    """No Twilio credentials: closing the stream ends a <Connect>-only call; no transfers."""

    can_transfer = False

    async def hang_up(self, call_sid: str) -> bool:
        return False

    async def transfer(self, call_sid: str, number: str) -> bool:
        return False

    async def send_sms(self, to: str, body: str) -> bool:
        log.info("SMS to %s not sent (no Twilio credentials): %s", mask_phone(to), body[:60])
        return False

    async def close(self) -> None:
        return None


class _RebasedHttpClient(AsyncTwilioHttpClient):
    """Sends Twilio API requests to another base URL (a regional proxy, or a test fake)."""

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    async def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        return await super().request(method, url, *args, **kwargs)


def dial_twiml(number: str) -> str:
    response = VoiceResponse()
    response.dial(number, timeout=25)
    response.say("Sorry, nobody could take your call right now. Please try again later. Goodbye.")
    return str(response)


class TwilioTelephony:
    can_transfer = True

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str = "",
                 sms_from: str = "") -> None:
        http = (_RebasedHttpClient(api_base_url, timeout=5) if api_base_url
                else AsyncTwilioHttpClient(timeout=5))
        self._http = http
        self._client = Client(account_sid, auth_token, http_client=http)
        self.sms_from = sms_from

    async def hang_up(self, call_sid: str) -> bool:
        try:
            await self._client.calls(call_sid).update_async(status="completed")
        except TwilioRestException as exc:
            if exc.status == 404:  # the caller already hung up: nothing left to end
                log.info("hang-up of %s: call already gone", call_sid)
                return True
            log.error("hang-up of %s failed: %s %s", call_sid, exc.status, exc.msg)
            return False
        except Exception as exc:
            log.error("hang-up of %s failed: %s", call_sid, exc)
            return False
        return True

    async def transfer(self, call_sid: str, number: str) -> bool:
        try:
            await self._client.calls(call_sid).update_async(twiml=dial_twiml(number))
        except Exception as exc:
            log.error("transfer of %s to %s failed: %s", call_sid, mask_phone(number), exc)
            return False
        log.info("call %s transferred to %s", call_sid, mask_phone(number))
        return True

    async def send_sms(self, to: str, body: str) -> bool:
        if not self.sms_from:
            log.warning("SMS to %s not sent: TWILIO_SMS_FROM is not set", mask_phone(to))
            return False
        try:
            await self._client.messages.create_async(to=to, from_=self.sms_from, body=body)
        except Exception as exc:
            log.error("SMS to %s failed: %s", mask_phone(to), exc)
            return False
        log.info("SMS sent to %s", mask_phone(to))
        return True

    async def close(self) -> None:
        await self._http.close()
