"""POST /api/twilio/status: Twilio's call status callback closes the call record."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from api.twilio_voice import public_url_of
from services.runtime import Runtime

log = logging.getLogger("zylin.api.status")


async def status(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not runtime.signatures.valid(public_url_of(runtime, request), form,
                                    request.headers.get("x-twilio-signature")):
        log.warning("status callback: invalid Twilio signature from %s",
                    request.client.host if request.client else "?")
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    call_sid = form.get("CallSid", "")
    if not call_sid:
        return PlainTextResponse("missing CallSid", status_code=400)
    duration = form.get("CallDuration", "")
    await runtime.storage.call_status(call_sid, form.get("CallStatus", ""),
                                      int(duration) if duration.isdigit() else None,
                                      form.get("From", ""), form.get("To", ""))
    return Response(status_code=204)
