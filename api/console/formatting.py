"""How values read on the pages: the Jinja filters (times in the business's zone, ms, durations)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.storage.vocabulary import Outcome

OUTCOME_LABELS: dict[str, str] = {
    Outcome.BOOKED: "booked", Outcome.MESSAGE: "message", Outcome.TRANSFERRED: "transferred",
    Outcome.HUNG_UP: "hung up", Outcome.ERROR: "error", Outcome.NONE: "no action"}


def split_heard(text: str, heard: str | None) -> tuple[str, str]:
    """An interrupted line as (what the caller heard, what they did not)."""
    heard = (heard or "").removesuffix("...").strip()
    if heard and text.startswith(heard):
        return heard, text[len(heard):].strip()
    return (heard, text) if heard else ("", text)


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def outcome_label(outcome: str | None) -> str:
    return OUTCOME_LABELS.get(outcome or "", outcome or "open")


def filters(tz: ZoneInfo) -> dict[str, Callable[..., Any]]:
    """The helpers every page's template may call; `local` shows UTC moments in `tz`."""
    def local(moment: datetime | None, fmt: str = "%a %d %b %Y, %H:%M:%S") -> str:
        return moment.astimezone(tz).strftime(fmt) if moment else ""

    return {"local": local, "ms": ms, "duration": duration, "split_heard": split_heard,
            "outcome_label": outcome_label}
