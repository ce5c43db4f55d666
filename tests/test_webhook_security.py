"""Who may reach Zylin: Twilio signatures, the per-call stream token, and the TwiML we answer with."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from services.privacy import mask_phone
from services.settings import Settings
from services.telephony.webhook import (
    SignatureCheck,
    connect_stream_twiml,
    stream_token,
    stream_token_valid,
)

AUTH_TOKEN = "12345678901234567890123456789012"
CALL = "CA1234567890abcdef1234567890abcdef"
URL = "https://zylin.example.com/api/twilio/voice"
PARAMS = {"CallSid": CALL, "From": "+15551234567", "To": "+15557654321", "CallStatus": "ringing"}


# --- the per-call stream token ----------------------------------------------------------------

def test_stream_token_is_deterministic_for_a_call_and_secret() -> None:
    assert stream_token(CALL, "s3cret") == stream_token(CALL, "s3cret")
    assert len(stream_token(CALL, "s3cret")) >= 32


def test_stream_token_differs_per_call_and_per_secret() -> None:
    token = stream_token(CALL, "s3cret")
    assert stream_token(CALL[:-1] + "0", "s3cret") != token
    assert stream_token(CALL, "other-secret") != token


def test_only_the_token_minted_for_this_call_is_valid() -> None:
    token = stream_token(CALL, "s3cret")
    assert stream_token_valid(CALL, token, "s3cret") is True
    assert stream_token_valid(CALL, token, "other-secret") is False
    assert stream_token_valid("CAffffffffffffffffffffffffffffffff", token, "s3cret") is False
    assert stream_token_valid(CALL, token[:-1], "s3cret") is False
    assert stream_token_valid(CALL, "", "s3cret") is False
    assert stream_token_valid(CALL, None, "s3cret") is False  # type: ignore[arg-type]


def test_a_non_ascii_token_is_simply_invalid() -> None:
    # The token comes from the caller-controlled start message's customParameters.
    assert stream_token_valid(CALL, "tökén", "s3cret") is False


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
    settings = Settings(_env_file=None, public_url="https://abc.ngrok.app/")
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
