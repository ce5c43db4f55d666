"""Twilio webhook security and TwiML: signatures, the per-call stream token, <Connect><Stream>."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

STREAM_TOKEN_TTL_S = 300   # Twilio opens the stream within seconds of fetching the TwiML


@dataclass(frozen=True, slots=True)
class StreamClaim:
    """What a stream token vouches for: this call, between these numbers, its `segment`-th
    stream (0, then 1 after a transfer nobody answered...). The session trusts From and To
    (the tools act on the caller's bookings) only because the token binds them."""
    call_sid: str
    caller: str
    called: str
    segment: int = 0


def stream_token(claim: StreamClaim, secret: str, expires_at: int) -> str:
    """'<expiry>.<HMAC-SHA256 of the claim and the expiry>'."""
    message = "\n".join((claim.call_sid, claim.caller, claim.called, str(claim.segment), str(expires_at)))
    return f"{expires_at}." + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def stream_parameters(claim: StreamClaim, secret: str, *, now: float | None = None,
                      ttl_s: float = STREAM_TOKEN_TTL_S) -> dict[str, str]:
    """The <Parameter>s of a <Stream>: the claim, and a token that expires `ttl_s` from now."""
    expires_at = int((time.time() if now is None else now) + ttl_s)
    return {"callSid": claim.call_sid, "from": claim.caller, "to": claim.called,
            "segment": str(claim.segment), "token": stream_token(claim, secret, expires_at)}


def check_stream_token(call_sid: str, params: Mapping[str, str], secret: str,
                       now: float | None = None) -> StreamClaim | str:
    """The claim a `start` event's parameters prove, or why they prove nothing."""
    token = params.get("token", "")
    expiry, _, _ = token.partition(".")
    segment = params.get("segment", "0")
    if not (expiry.isascii() and expiry.isdigit() and segment.isascii() and segment.isdigit()):
        return "malformed stream token"
    claim = StreamClaim(call_sid, params.get("from", ""), params.get("to", ""), int(segment))
    expected = stream_token(claim, secret, int(expiry))
    if not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        return "stream token does not match this call"
    if int(expiry) < (time.time() if now is None else now):
        return "stream token expired"
    return claim


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
