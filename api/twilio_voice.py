"""POST /api/twilio/voice: Twilio asks what to do with an incoming call; we stream it."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from services.privacy import mask_phone
from services.runtime import Runtime
from services.telephony.webhook import connect_stream_twiml, stream_token

log = logging.getLogger("zylin.api.voice")


def public_url_of(runtime: Runtime, request: Request) -> str:
    """The URL Twilio signed: PUBLIC_URL + path (+ query), never the proxy-facing request URL."""
    url = runtime.settings.public_url + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


async def voice(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = {k: str(v) for k, v in (await request.form()).items()}
    signature = request.headers.get("x-twilio-signature")
    if not runtime.signatures.valid(public_url_of(runtime, request), form, signature):
        log.warning("voice webhook: invalid Twilio signature from %s", request.client.host if request.client else "?")
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    call_sid = form.get("CallSid", "")
    if not call_sid:
        return PlainTextResponse("missing CallSid", status_code=400)
    caller = form.get("From", "")
    log.info("incoming call %s from %s", call_sid, mask_phone(caller))
    await runtime.storage.call_opened(call_sid, caller, form.get("To", ""))
    twiml = connect_stream_twiml(runtime.settings.media_stream_url, {
        "callSid": call_sid,
        "from": caller,
        "to": form.get("To", ""),
        "token": stream_token(call_sid, runtime.settings.token_secret),
    })
    return Response(twiml, media_type="application/xml")
