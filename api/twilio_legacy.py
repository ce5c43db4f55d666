"""Legacy record mode (docs/legacy.md): POST /api/twilio/voice-legacy answers with a greeting and
<Record>; POST /api/twilio/voice-legacy/recording takes each recording and answers the next TwiML."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from api.twilio_voice import public_url_of
from services.legacy.conversation import LegacyReceptionist
from services.runtime import Runtime

log = logging.getLogger("zylin.api.legacy")


async def _signed_form(request: Request) -> dict[str, str] | Response:
    """The form, if Twilio signed it; else the error response to send."""
    runtime: Runtime = request.app.state.runtime
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not runtime.signatures.valid(public_url_of(runtime, request), form,
                                    request.headers.get("x-twilio-signature")):
        log.warning("%s: invalid Twilio signature from %s", request.url.path,
                    request.client.host if request.client else "?")
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    if not form.get("CallSid"):
        return PlainTextResponse("missing CallSid", status_code=400)
    return form


async def voice_legacy(request: Request) -> Response:
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    legacy: LegacyReceptionist = request.app.state.legacy
    twiml = await legacy.answer_call(form["CallSid"], form.get("From", ""), form.get("To", ""))
    return Response(twiml, media_type="application/xml")


async def recording(request: Request) -> Response:
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    legacy: LegacyReceptionist = request.app.state.legacy
    return Response(await legacy.on_recording(form), media_type="application/xml")
