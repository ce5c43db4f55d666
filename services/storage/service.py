"""The storage a server holds for its lifetime: database, repositories, writer, sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.privacy import mask_phone
from services.settings import Settings
from services.storage.admission import Admission
from services.storage.bookings import Bookings
from services.storage.calls import CallLog
from services.storage.database import Database, display_url
from services.storage.messages import Messages
from services.storage.models import utcnow
from services.storage.writer import Writer

log = logging.getLogger("zylin.storage")

WEBHOOK_WRITE_TIMEOUT_S = 1.0   # longer than that and the webhook answers first, the writer retries
SWEEP_EVERY_S = 300.0


class Storage:
    def __init__(self, db: Database, *, max_call_s: float = 900.0, sweep_grace_s: float = 120.0,
                 sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.db = db
        self.calls = CallLog(db)
        self.admission = Admission(db)
        self.bookings = Bookings(db)
        self.messages = Messages(db)
        self.writer = Writer()
        self.max_call_s = max_call_s
        self.sweep_grace_s = sweep_grace_s
        self.sweep_every_s = sweep_every_s
        self._sweeper: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(Database(settings.database_url), max_call_s=settings.max_call_s,
                   sweep_grace_s=settings.call_sweep_grace_s)

    async def start(self) -> None:
        """Migrate the schema, close calls a dead server left open, start writing."""
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
        await self.db.close()

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

    async def call_opened(self, call_sid: str, caller: str, called: str, mode: str = "stream") -> None:
        """The webhook's record of a new call. Never raises, and never holds the TwiML up for
        long: if the database is slow or down, the writer takes over and retries."""
        at = utcnow()
        await self._now_or_queued(f"call {call_sid} from {mask_phone(caller)} opened", lambda: self.calls.open_call(
            call_sid, caller=caller, called=called, mode=mode, at=at))

    async def call_status(self, call_sid: str, twilio_status: str, duration_s: int | None,
                          caller: str = "", called: str = "") -> None:
        """Twilio's status callback; never raises (see `CallLog.status_callback`)."""
        at = utcnow()
        await self._now_or_queued(f"status {twilio_status!r} of call {call_sid}", lambda: self.calls.status_callback(
            call_sid, twilio_status=twilio_status, duration_s=duration_s, caller=caller, called=called, at=at))

    async def call_event(self, call_sid: str, kind: str, detail: dict[str, Any]) -> None:
        """An event a webhook saw (a transfer's outcome); never raises."""
        at = utcnow()
        await self._now_or_queued(f"event {kind} of call {call_sid}", lambda: self.calls.add_event(
            call_sid, kind, detail, at))

    async def _now_or_queued(self, what: str, write: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(write(), WEBHOOK_WRITE_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not store %s at once (%s: %s); queued for retry", what, type(exc).__name__, exc)
            self.writer.submit(what, write)
