"""Twilio webhook security and TwiML: signatures, the per-call stream token, <Connect><Stream>."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse


def stream_token(call_sid: str, secret: str) -> str:
    """Proves that a /media-stream `start` belongs to a call our webhook answered."""
    return hmac.new(secret.encode(), call_sid.encode(), hashlib.sha256).hexdigest()


def stream_token_valid(call_sid: str, token: str, secret: str) -> bool:
    return hmac.compare_digest(stream_token(call_sid, secret).encode(), (token or "").encode())


class SignatureCheck:
    """X-Twilio-Signature validation; off only when no auth token is set or it is switched off."""

    def __init__(self, auth_token: str, enforced: bool) -> None:
        self.enforced = enforced
        self._validator = RequestValidator(auth_token) if auth_token else None

    def valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not self.enforced:
            return True
        if self._validator is None or not signature:
            return False
        return self._validator.validate(url, dict(params), signature)


def connect_stream_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """<Connect><Stream> with <Parameter>s and nothing after </Connect> (it would run on close)."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


DIAL_RESULT_PATH = "/api/twilio/dial-result"
# DialCallStatus values after which the caller is still on the line with nobody (Twilio's <Dial> docs).
DIAL_FAILED = {"no-answer": "nobody answered", "busy": "the line was busy",
               "failed": "the call could not be connected", "canceled": "the call was cancelled"}


def dial_result_url(public_url: str, segment: int) -> str:
    """Where <Dial action> posts the outcome; `segment` numbers the call's streams (the caller may
    come back to Zylin after a failed transfer), so turn numbers never collide."""
    return f"{public_url}{DIAL_RESULT_PATH}?segment={segment}"


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def say_and_hangup_twiml(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)
