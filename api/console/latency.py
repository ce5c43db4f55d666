"""The call page's latency chart: one stacked SVG bar per reply, against the latency target."""

from __future__ import annotations

from typing import Any

from services.orchestrator.latency import LATENCY_FIELDS
from services.storage import CallDetail, TurnRow

COLOURS = {"asr_ms": "#4e79a7", "llm_ttft_ms": "#af7aa1", "tool_ms": "#f28e2b", "tts_ttfb_ms": "#59a14f",
           "overhead_ms": "#9c9c9c"}
# (field, label, colour) of each part of the time to first audio, stacked in this order
BAR_PARTS = tuple((f.name, f.label, COLOURS[f.name]) for f in LATENCY_FIELDS if f.part)
BAR_WIDTH = 300


def latency_bar(turn: TurnRow, scale_ms: float) -> list[dict[str, Any]]:
    """The stacked parts of a reply's first-audio latency, as SVG rectangles."""
    x = 0.0
    parts = []
    for field, label, colour in BAR_PARTS:
        value = max(getattr(turn, field) or 0.0, 0.0)
        width = BAR_WIDTH * value / scale_ms if scale_ms else 0.0
        if value:
            parts.append({"x": round(x, 1), "width": round(width, 1), "colour": colour, "label": label,
                          "ms": value})
        x += width
    return parts


def latency_chart(detail: CallDetail, target_ms: float) -> dict[str, Any]:
    """The chart's template context: every bar on one scale, a little wider than the slowest reply
    or the target, whichever is longer, so the target line always shows."""
    scale = max([target_ms, *detail.reply_latencies_ms]) * 1.05
    return {"bars": {t.idx: latency_bar(t, scale) for t in detail.turns if t.first_audio_ms is not None},
            "bar_width": BAR_WIDTH, "target_x": round(BAR_WIDTH * target_ms / scale, 1), "target_ms": target_ms,
            "bar_parts": BAR_PARTS}
