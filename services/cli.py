"""`python main.py calls [CallSid]`: the call log in a terminal.

An edge like api/console/, for the owner at the server's shell: it reads storage, which never
knows it exists.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from services.orchestrator.latency import LATENCY_FIELDS
from services.privacy import mask_phone
from services.receptionist.profile import load_profile
from services.settings import Settings
from services.storage import CallDetail, CallSummary, Database, Storage, display_url
from services.storage.vocabulary import CallStatus, EventKind, Speaker


def _tz(settings: Settings) -> ZoneInfo:
    try:
        return load_profile(settings.business_profile).tz
    except Exception:
        return ZoneInfo("UTC")


def _when(moment: datetime | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return moment.astimezone(tz).strftime(fmt) if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def calls_table(calls: list[CallSummary], tz: ZoneInfo, full_numbers: bool) -> str:
    head = f"{'started':<19}  {'caller':<16}  {'dur':>5}  {'turns':>5}  {'outcome':<12}  call sid"
    rows = [head, "-" * (len(head) + 30)]
    for c in calls:
        number = c.from_number if full_numbers else mask_phone(c.from_number)
        outcome = "in progress" if c.status == CallStatus.IN_PROGRESS else (c.outcome or "-")
        if c.status == CallStatus.ABNORMAL:
            outcome += "!"
        rows.append(f"{_when(c.started_at, tz):<19}  {number:<16}  {_duration(c.duration_s):>5}  {c.turns:>5}  "
                    f"{outcome:<12}  {c.call_sid}")
    return "\n".join(rows)


def transcript(detail: CallDetail, tz: ZoneInfo, full_numbers: bool) -> str:
    c = detail.call
    number = c.from_number if full_numbers else mask_phone(c.from_number)
    status = c.status if c.status != CallStatus.COMPLETED else f"completed ({c.end_reason})"
    lines = [f"Call {c.call_sid} from {number}, {_when(c.started_at, tz)} {tz.key}",
             f"status {status}, outcome {c.outcome or '-'}, duration {_duration(c.duration_s)}, "
             f"{len(detail.turns)} turns, greeting {_ms(detail.greeting_ms)} ms, "
             f"median {_ms(detail.median_ms)} ms / worst {_ms(detail.worst_ms)} ms to first audio", ""]
    for t in detail.turns:
        offset = _duration((t.at - c.started_at).total_seconds())
        who = "Caller" if t.speaker == Speaker.CALLER else "Zylin "
        lines.append(f"{_when(t.at, tz, '%H:%M:%S')} +{offset:>5}  {who}: {t.text}")
        if t.interrupted:
            lines.append(f"{'':>17}  [interrupted; heard: {t.heard_text or 'nothing'!r}]")
        if t.first_audio_ms is not None:
            parts = "  ".join(f"{f.short} {_ms(getattr(t, f.name))}" for f in LATENCY_FIELDS)
            lines.append(f"{'':>17}  latency ms: {parts}")
    for b in detail.bookings:
        lines.append(f"booking {b.code}: {b.service} {_when(b.start_utc, tz, '%a %d %b %H:%M')} ({b.status})")
    for m in detail.messages:
        lines.append(f"message from {m.name or '?'}: {m.message} ({m.urgency}, SMS {m.sms_status})")
    events = [e for e in detail.events if e.kind != EventKind.BARGE_IN]
    if events:
        lines.append("")
        lines.extend(f"{_when(e.at, tz, '%H:%M:%S')}  event {e.kind} "
                     f"{e.detail.get('name', '') or e.detail.get('reason', '') or e.detail.get('why', '')}".rstrip()
                     for e in events)
    return "\n".join(lines)


async def show_calls(settings: Settings, call_sid: str | None, *, limit: int = 20,
                     full_numbers: bool = False) -> int:
    storage = Storage(Database(settings.database_url))
    tz = _tz(settings)
    try:
        await storage.db.upgrade()
        if call_sid:
            detail = await storage.calls.get_call(call_sid)
            if detail is None:
                print(f"no call {call_sid} in {display_url(settings.database_url)}")
                return 1
            print(transcript(detail, tz, full_numbers))
            return 0
        calls, total = await storage.calls.list_calls(per_page=max(1, limit))
        if not calls:
            print(f"no calls yet in {display_url(settings.database_url)}")
            return 0
        print(calls_table(calls, tz, full_numbers))
        print(f"\n{len(calls)} of {total} calls; `python main.py calls CAxxx` shows one transcript."
              + ("" if full_numbers else " Numbers masked: --full-numbers shows them."))
        return 0
    finally:
        await storage.db.close()
