"""The console's HTML pages, rendered on the server from templates/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from api.auth import admin_only
from api.console import listings
from api.console.formatting import OUTCOME_LABELS, filters
from api.console.latency import latency_chart
from services.storage.vocabulary import Outcome

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[2] / "templates"))


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A page with what every template needs: the business, its zone, the outcomes, the filters."""
    profile = listings.runtime(request).profile
    context = {"business": profile.name, "tz": profile.timezone, "outcomes": tuple(Outcome),
               "outcome_labels": OUTCOME_LABELS, **filters(profile.tz), **context}
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def page_count(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


@admin_only
async def calls_page(request: Request) -> Response:
    query, calls, total = await listings.calls(request)
    return render(request, "calls.html", {"title": "Calls", "calls": calls, "total": total, "query": query,
                                          "pages": page_count(total, query.per_page)})


@admin_only
async def call_page(request: Request) -> Response:
    runtime = listings.runtime(request)
    detail = await runtime.storage.calls.get_call(request.path_params["call_sid"])
    if detail is None:
        return render(request, "error.html", {"title": "No such call",
                                              "message": "No call with that CallSid is stored."}, 404)
    return render(request, "call.html", {"title": f"Call {detail.call.call_sid}", "detail": detail,
                                         **latency_chart(detail, runtime.settings.latency_target_ms),
                                         "started": detail.call.started_at})


@admin_only
async def bookings_page(request: Request) -> Response:
    _, bookings = await listings.bookings(request)
    return render(request, "bookings.html", {"title": "Bookings", "bookings": bookings,
                                             "raw": dict(request.query_params)})


@admin_only
async def messages_page(request: Request) -> Response:
    query, messages, total = await listings.messages(request)
    return render(request, "messages.html", {"title": "Messages", "messages": messages, "total": total,
                                             "query": query, "pages": page_count(total, query.per_page)})
