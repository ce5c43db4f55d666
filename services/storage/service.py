"""The storage a server holds for its lifetime: database, repositories, writer, sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.privacy import mask_phone
from services.settings import Settings
from services.storage.admission import Admission
from services.storage.bookings import Bookings
from services.storage.calls import CallLog, TurnRow
from services.storage.database import Database, display_url
from services.storage.messages import Messages
from services.storage.models import utcnow
from services.storage.vocabulary import CallMode
from services.storage.writer import MAX_MEMORY, SPILL_AFTER_S, Journal, Write, Writer, journal_tag

log = logging.getLogger("zylin.storage")

WEBHOOK_WRITE_TIMEOUT_S = 0.3   # longer than that and the webhook answers first; the writer takes the write
SWEEP_EVERY_S = 300.0
CLOSE_TIMEOUT_S = 5.0           # a database that hangs must not hold the shutdown
# The writes the writer may carry out: CallLog methods, called with the write's arguments.
WRITE_KINDS = frozenset({"open_call", "stream_started", "add_turn", "add_event", "end_call",
                         "status_callback", "legacy_turn"})
TIMES = ("at", "speech_end_at")


def journal_folder(url: str) -> Path | None:
    """Where writes wait while the database is away: beside the SQLite file, else data/journal
    (None for an in-memory SQLite database, which outlives nothing anyway)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return Path("data", "journal").resolve()
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve().parent / "journal"


class Storage:
    def __init__(self, db: Database, *, max_call_s: float = 900.0, sweep_grace_s: float = 120.0,
                 sweep_every_s: float = SWEEP_EVERY_S, journal_dir: str | Path | None = None,
                 webhook_write_timeout_s: float = WEBHOOK_WRITE_TIMEOUT_S, max_memory: int = MAX_MEMORY,
                 spill_after_s: float = SPILL_AFTER_S) -> None:
        self.db = db
        self.calls = CallLog(db)
        self.admission = Admission(db)
        self.bookings = Bookings(db)
        self.messages = Messages(db)
        folder = Path(journal_dir) if journal_dir else journal_folder(db.url)
        tag = journal_tag(f"{display_url(db.url)}|{db.schema or ''}")
        self.writer = Writer(self.apply, journal=Journal(folder, tag) if folder else None, probe=self.probe,
                             max_memory=max_memory, spill_after_s=spill_after_s)
        self.webhook_write_timeout_s = webhook_write_timeout_s
        self.max_call_s = max_call_s
        self.sweep_grace_s = sweep_grace_s
        self.sweep_every_s = sweep_every_s
        self._sweeper: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(Database(settings.database_url), max_call_s=settings.max_call_s,
                   sweep_grace_s=settings.call_sweep_grace_s, journal_dir=settings.write_journal_dir or None,
                   webhook_write_timeout_s=settings.webhook_write_timeout_s,
                   max_memory=settings.write_memory_max, spill_after_s=settings.write_spill_after_s)

    async def start(self) -> None:
        """Migrate the schema, close calls a dead server left open, start writing (first what a
        stopped server left in the journal)."""
        await self.db.upgrade()
        log.info("database %s: schema up to date", display_url(self.db.url))
        await self.sweep()
        self.writer.start()
        self._sweeper = asyncio.create_task(self._sweep_now_and_then(), name="call sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.writer.close()
        try:
            await asyncio.wait_for(self.db.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            log.warning("the database did not let go of its connections (%s); shutting down anyway", exc)

    async def sweep(self) -> list[str]:
        try:
            swept = await self.calls.sweep(max_call_s=self.max_call_s, grace_s=self.sweep_grace_s)
        except Exception as exc:
            log.error("sweep of calls left open failed: %s", exc)
            return []
        if swept:
            log.warning("closed %d call(s) left open by a server that stopped mid-call, as abnormal: %s",
                        len(swept), ", ".join(swept))
        return swept

    async def _sweep_now_and_then(self) -> None:
        """Instances that stay up also close the calls of an instance that died."""
        while True:
            await asyncio.sleep(self.sweep_every_s)
            await self.sweep()

    # --- writes ------------------------------------------------------------------------------------

    def queue(self, kind: str, what: str, /, done=None, **args: Any) -> None:
        """A call-log write for the background writer: returns at once, whatever the database does."""
        self.writer.submit(Write.of(kind, what, **args), done=done)

    async def apply(self, write: Write) -> None:
        """Carry out one write: the CallLog method it names, with its arguments restored."""
        if write.kind not in WRITE_KINDS:
            raise ValueError(f"no such write: {write.kind!r}")
        await getattr(self.calls, write.kind)(**restored(write.args))

    async def probe(self) -> None:
        """Raises unless the database takes a write transaction now (SQLite: unlocked)."""
        async with self.db.write() as session:
            await session.execute(text("SELECT 1"))

    async def call_opened(self, call_sid: str, caller: str, called: str, mode: str = CallMode.STREAM) -> None:
        """The webhook's record of a new call. Never raises, and never holds the TwiML up for
        long: if the database is slow or down, the writer takes over and retries."""
        await self._now_or_queued(Write.of("open_call", f"call {call_sid} from {mask_phone(caller)} opened",
                                           call_sid=call_sid, caller=caller, called=called, mode=mode,
                                           at=utcnow()))

    async def call_status(self, call_sid: str, twilio_status: str, duration_s: int | None,
                          caller: str = "", called: str = "") -> None:
        """Twilio's status callback; never raises (see `CallLog.status_callback`)."""
        await self._now_or_queued(Write.of("status_callback", f"status {twilio_status!r} of call {call_sid}",
                                           call_sid=call_sid, twilio_status=twilio_status,
                                           duration_s=duration_s, caller=caller, called=called, at=utcnow()))

    async def call_event(self, call_sid: str, kind: str, detail: dict[str, Any]) -> None:
        """An event a webhook saw (a transfer's outcome); never raises."""
        await self._now_or_queued(Write.of("add_event", f"event {kind} of call {call_sid}",
                                           call_sid=call_sid, kind=kind, detail=detail, at=utcnow()))

    async def _now_or_queued(self, write: Write) -> None:
        """Stored at once if the database answers within the webhook's budget, else left to the
        writer. While writes wait for the database, this one goes behind them, at once."""
        if self.writer.behind:
            self.writer.submit(write)
            return
        attempt = asyncio.ensure_future(self.apply(write))
        done, _ = await asyncio.wait({attempt}, timeout=self.webhook_write_timeout_s)
        if done and attempt.exception() is None:
            return
        if done:
            exc = attempt.exception()
            why = f"{type(exc).__name__}: {exc}"
        else:
            attempt.cancel()  # and not awaited: its clean-up may wait on the database too
            attempt.add_done_callback(_forget)
            why = f"no answer within {self.webhook_write_timeout_s:g} s"
        log.warning("could not store %s at once (%s); queued for retry", write.what, why)
        self.writer.submit(write)


def restored(args: dict[str, Any]) -> dict[str, Any]:
    """A write's JSON arguments as the repository takes them: datetimes and turn rows again."""
    out = _times(args)
    if "turn" in out:
        out["turn"] = TurnRow(**_times(out["turn"]))
    if "turns" in out:
        out["turns"] = [TurnRow(**_times(t)) for t in out["turns"]]
    if "events" in out:
        out["events"] = [(kind, detail, datetime.fromisoformat(at)) for kind, detail, at in out["events"]]
    return out


def _times(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in TIMES:
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    return out


def _forget(attempt: asyncio.Future) -> None:
    """A given-up attempt's outcome is of no interest (the writer has the write)."""
    if not attempt.cancelled():
        attempt.exception()
