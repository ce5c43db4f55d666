"""Who may reach Zylin: Twilio signatures, the per-call stream token, and the TwiML we answer with."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from services.privacy import mask_phone
from services.telephony.webhook import (
    STREAM_TOKEN_TTL_S,
    SignatureCheck,
    StreamClaim,
    check_stream_token,
    connect_stream_twiml,
    stream_parameters,
)
from tests.factories import plain_settings

AUTH_TOKEN = "12345678901234567890123456789012"
CALL = "CA1234567890abcdef1234567890abcdef"
URL = "https://zylin.example.com/api/twilio/voice"
PARAMS = {"CallSid": CALL, "From": "+15551234567", "To": "+15557654321", "CallStatus": "ringing"}


# --- the per-call stream token ----------------------------------------------------------------

CLAIM = StreamClaim(CALL, "+15551234567", "+15557654321")
NOW = 1_800_000_000.0


def params_for(claim: StreamClaim = CLAIM, secret: str = "s3cret", now: float = NOW) -> dict[str, str]:
    return stream_parameters(claim, secret, now=now)


def test_the_stream_parameters_carry_the_claim_and_a_token_that_proves_it() -> None:
    params = params_for()
    assert (params["callSid"], params["from"], params["to"], params["segment"]) == (
        CALL, "+15551234567", "+15557654321", "0")
    assert check_stream_token(CALL, params, "s3cret", now=NOW + 1) == CLAIM


def test_a_token_proves_nothing_for_another_call_secret_or_number() -> None:
    params = params_for()
    assert check_stream_token("CA" + "f" * 32, params, "s3cret", now=NOW) == "stream token does not match this call"
    assert check_stream_token(CALL, params, "other-secret", now=NOW) == "stream token does not match this call"
    # A session that claims another caller's number could act on that caller's bookings.
    for name, value in (("from", "+15550000000"), ("to", "+15550000001"), ("segment", "1")):
        assert isinstance(check_stream_token(CALL, {**params, name: value}, "s3cret", now=NOW), str), name


def test_a_token_expires() -> None:
    params = params_for()
    expiry = int(params["token"].split(".")[0])
    assert expiry == int(NOW + STREAM_TOKEN_TTL_S)
    assert check_stream_token(CALL, params, "s3cret", now=expiry) == CLAIM
    assert check_stream_token(CALL, params, "s3cret", now=expiry + 1) == "stream token expired"


def test_a_changed_expiry_is_not_accepted() -> None:
    params = params_for()
    _, digest = params["token"].split(".")
    forged = {**params, "token": f"{int(NOW) + 10 ** 6}.{digest}"}
    assert check_stream_token(CALL, forged, "s3cret", now=NOW) == "stream token does not match this call"


@pytest.mark.parametrize("token", ["", "not-a-token", ".", "12.", "tökén", "١٢.abc", None])
def test_a_malformed_token_is_simply_invalid(token) -> None:
    # The token comes from the caller-controlled start message's customParameters.
    params = {**params_for(), "token": token} if token is not None else {"from": "+15551234567"}
    assert isinstance(check_stream_token(CALL, params, "s3cret", now=NOW), str)


# --- X-Twilio-Signature -------------------------------------------------------------------------

def twilio_signature(url: str, params: dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params)


def test_a_signature_computed_like_twilio_is_accepted() -> None:
    check = SignatureCheck(AUTH_TOKEN, enforced=True)
    assert check.valid(URL, PARAMS, twilio_signature(URL, PARAMS)) is True


def test_a_websocket_upgrade_signed_over_the_wss_url_without_params_is_accepted() -> None:
    ws_url = "wss://zylin.example.com/media-stream"
    check = SignatureCheck(AUTH_TOKEN, enforced=True)
    assert check.valid(ws_url, {}, twilio_signature(ws_url, {})) is True


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl"])
def test_a_missing_or_wrong_signature_is_rejected(signature: str | None) -> None:
    assert SignatureCheck(AUTH_TOKEN, enforced=True).valid(URL, PARAMS, signature) is False


def test_a_signature_over_another_url_or_other_params_is_rejected() -> None:
    check = SignatureCheck(AUTH_TOKEN, enforced=True)
    other_url = twilio_signature("https://zylin.example.com/api/twilio/status", PARAMS)
    assert check.valid(URL, PARAMS, other_url) is False
    other_params = twilio_signature(URL, {**PARAMS, "From": "+15550000000"})
    assert check.valid(URL, PARAMS, other_params) is False
    other_token = RequestValidator("x" * 32).compute_signature(URL, PARAMS)
    assert check.valid(URL, PARAMS, other_token) is False


def test_an_enforced_check_without_an_auth_token_rejects_everything() -> None:
    assert SignatureCheck("", enforced=True).valid(URL, PARAMS, twilio_signature(URL, PARAMS)) is False


def test_a_check_that_is_not_enforced_accepts_anything() -> None:
    check = SignatureCheck(AUTH_TOKEN, enforced=False)
    assert check.valid(URL, PARAMS, None) is True
    assert check.valid(URL, PARAMS, "garbage") is True


# --- TwiML ---------------------------------------------------------------------------------------

def test_twiml_connects_the_call_to_our_stream_and_nothing_after() -> None:
    settings = plain_settings(public_url="https://abc.ngrok.app/")
    params = {"token": "t0k&n<\"'>", "caller": "+15551234567"}
    root = ET.fromstring(connect_stream_twiml(settings.media_stream_url, params))

    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Connect"]  # nothing runs after the socket closes
    connect = root[0]
    assert [child.tag for child in connect] == ["Stream"]
    stream = connect[0]
    url = urlsplit(stream.get("url"))
    assert url.scheme == "wss"
    assert url.netloc == "abc.ngrok.app"
    assert url.query == ""
    assert "?" not in stream.get("url")
    assert all(child.tag == "Parameter" for child in stream)
    assert {p.get("name"): p.get("value") for p in stream} == params  # escaped and read back intact


# --- phone numbers in logs -------------------------------------------------------------------------

def test_a_phone_number_shows_only_its_country_prefix_and_last_three_digits() -> None:
    assert mask_phone("+15551234567") == "+1*******567"
    masked = mask_phone("+447911123456")
    assert masked.startswith("+4") and masked.endswith("456")
    assert len(masked) == len("+447911123456")
    assert not any(ch.isdigit() for ch in masked[2:-3])


def test_a_national_number_reveals_at_most_one_leading_digit() -> None:
    masked = mask_phone("5551234567")
    assert masked.endswith("567")
    assert sum(ch.isdigit() for ch in masked) <= 4
    assert "123" not in masked


@pytest.mark.parametrize(("number", "masked"), [
    (None, "<unknown>"), ("", "<unknown>"), ("12", "**"), ("12345", "*****"),
])
def test_empty_or_short_numbers_are_masked_whole(number: str | None, masked: str) -> None:
    assert mask_phone(number) == masked
