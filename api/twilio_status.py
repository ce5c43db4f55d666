"""POST /api/twilio/status: Twilio's call status callback closes the call record."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.twilio_voice import signed_form
from services.runtime import Runtime


async def status(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = await signed_form(request)
    if isinstance(form, Response):
        return form
    duration = form.get("CallDuration", "")
    await runtime.storage.call_status(form["CallSid"], form.get("CallStatus", ""),
                                      int(duration) if duration.isdigit() else None,
                                      form.get("From", ""), form.get("To", ""))
    return Response(status_code=204)
