"""POST /api/twilio/voice: Twilio asks what to do with an incoming call; we stream it.
POST /api/twilio/dial-result: a transfer's <Dial> ended; hang up, or take the caller back."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from services.privacy import mask_phone
from services.runtime import Runtime
from services.storage.vocabulary import EventKind
from services.telephony.webhook import (
    DIAL_FAILED,
    StreamClaim,
    connect_stream_twiml,
    hangup_twiml,
    stream_parameters,
)

log = logging.getLogger("zylin.api.voice")


def public_url_of(runtime: Runtime, request: Request) -> str:
    """The URL Twilio signed: PUBLIC_URL + path (+ query), never the proxy-facing request URL."""
    url = runtime.settings.public_url + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 100   # Twilio's callbacks carry a few dozen fields


class BodyTooLarge(Exception):
    """The body grew past its cap while being read."""


async def capped_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than `limit` bytes: an unsigned sender cannot make the
    server hold more than that before the signature is even checked."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int) -> dict[str, str] | Response:
    """A Twilio webhook's url-encoded form; anything else is refused before it is parsed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        return PlainTextResponse(f"Twilio webhooks are {FORM}", status_code=415)
    try:
        request._body = await capped_body(request, limit)  # form() parses what was read
    except BodyTooLarge:
        log.warning("%s: refused a body over %d bytes from %s", request.url.path, limit,
                    request.client.host if request.client else "?")
        return PlainTextResponse("request body too large", status_code=413)
    return {k: str(v) for k, v in (await request.form(max_fields=MAX_FIELDS, max_files=0)).items()}


async def signed_form(request: Request) -> dict[str, str] | Response:
    """The webhook's form if Twilio signed it and it names a call; else the error to answer."""
    runtime: Runtime = request.app.state.runtime
    form = await read_form(request, runtime.settings.webhook_max_body_bytes)
    if isinstance(form, Response):
        return form
    if not runtime.signatures.valid(public_url_of(runtime, request), form,
                                    request.headers.get("x-twilio-signature")):
        log.warning("%s: invalid Twilio signature from %s", request.url.path,
                    request.client.host if request.client else "?")
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    if not form.get("CallSid"):
        return PlainTextResponse("missing CallSid", status_code=400)
    return form


def xml(twiml: str) -> Response:
    return Response(twiml, media_type="application/xml")


def stream_twiml(runtime: Runtime, form: dict[str, str], segment: int = 0, **extra: str) -> str:
    """<Connect><Stream> carrying what any instance needs to take the socket, signed."""
    claim = StreamClaim(form["CallSid"], form.get("From", ""), form.get("To", ""), segment)
    return connect_stream_twiml(runtime.settings.media_stream_url,
                                {**stream_parameters(claim, runtime.settings.token_secret), **extra})


async def voice(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    caller = form.get("From", "")
    log.info("incoming call %s from %s", form["CallSid"], mask_phone(caller))
    await runtime.storage.call_opened(form["CallSid"], caller, form.get("To", ""))
    return xml(stream_twiml(runtime, form))


def dial_outcome(form: dict[str, str]) -> tuple[EventKind, dict[str, object]]:
    """The transfer's outcome as a call-log event: answered (and for how long), or why not."""
    status = form.get("DialCallStatus", "")
    duration = form.get("DialCallDuration", "")
    if status in DIAL_FAILED:
        return EventKind.TRANSFER_FAILED, {"status": status, "why": DIAL_FAILED[status]}
    return EventKind.TRANSFER_ANSWERED, {"status": status or "completed",
                                 "duration_s": int(duration) if duration.isdigit() else None}


async def dial_result(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    call_sid = form["CallSid"]
    segment = request.query_params.get("segment", "1")
    segment_number = int(segment) if segment.isascii() and segment.isdigit() else 1

    async def answer() -> str:
        kind, detail = dial_outcome(form)
        await runtime.storage.call_event(call_sid, kind, detail)
        log.info("transfer of %s: %s", call_sid, detail["status"])
        if kind == EventKind.TRANSFER_ANSWERED:
            return hangup_twiml()
        return stream_twiml(runtime, form, segment_number, transfer=str(detail["status"]))

    # Twilio retries webhooks: the outcome is logged once, and a retry gets the same TwiML.
    return xml(await runtime.storage.admission.answer_once(f"dial:{call_sid}:{segment_number}", call_sid,
                                                           answer, wait_s=2.0))
