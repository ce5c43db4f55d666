"""Legacy record mode (docs/legacy.md): POST /api/twilio/voice-legacy answers with a greeting and
<Record>; POST /api/twilio/voice-legacy/recording takes each recording and answers the next TwiML;
POST /api/twilio/voice-legacy/dial-result hears how a transfer ended."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.twilio_voice import signed_form, xml
from services.legacy.conversation import LegacyReceptionist


async def voice_legacy(request: Request) -> Response:
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    legacy: LegacyReceptionist = request.app.state.legacy
    twiml = await legacy.answer_call(form["CallSid"], form.get("From", ""), form.get("To", ""))
    return xml(twiml)


async def recording(request: Request) -> Response:
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    legacy: LegacyReceptionist = request.app.state.legacy
    return xml(await legacy.on_recording(form))


async def dial_result(request: Request) -> Response:
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    legacy: LegacyReceptionist = request.app.state.legacy
    return xml(await legacy.on_dial_result(form))
