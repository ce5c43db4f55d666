"""Who may act on a call now, decided by the database so every instance agrees.

- A stream is admitted once: `claim_stream` takes a call's segment only if it is above the highest
  admitted so far (a second socket for the same stream, at once or after the call ended, loses).
- A Twilio callback is taken once: `take_receipt` by its identity (RecordingSid, a dial's
  outcome); a retry gets the TwiML the first delivery was answered (`answer_of`).
- A record-mode call runs one turn at a time: `lease_turn` / `release_turn`, a lease with an
  expiry so a dead instance cannot hold a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import or_, select, update

from services.storage.database import Database
from services.storage.models import Call, WebhookReceipt, utcnow
from services.storage.sql import insert_ignore, rowcount
from services.storage.vocabulary import CallMode, CallStatus

log = logging.getLogger("zylin.storage.admission")

POLL_S = 0.05
RECEIPT_TIMEOUT_S = 1.0   # a database that hangs costs a callback this much, then it is answered anyway
T = TypeVar("T")


async def within(work: Awaitable[T], timeout_s: float) -> T:
    """`work`'s result within `timeout_s`, else TimeoutError at once. Unlike asyncio.timeout, the
    cancelled attempt is not awaited: its clean-up can itself wait on a locked database (SQLite's
    busy timeout is 30 s), and a caller must not wait on that."""
    attempt = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({attempt}, timeout=timeout_s)
    if not done:
        attempt.cancel()
        attempt.add_done_callback(lambda task: task.cancelled() or task.exception())
        raise TimeoutError
    return attempt.result()


class Admission:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- streams ---------------------------------------------------------------------------------

    async def claim_stream(self, call_sid: str, segment: int) -> bool:
        """True when this stream of the call may start: no stream at or after it was admitted."""
        async with self.db.write() as session:
            await session.execute(insert_ignore(session, Call, [{
                "call_sid": call_sid, "started_at": utcnow(), "status": CallStatus.IN_PROGRESS, "summary": ""}]))
            result = await session.execute(update(Call).where(
                Call.call_sid == call_sid,
                or_(Call.stream_segment.is_(None), Call.stream_segment < segment),
            ).values(stream_segment=segment))
            return rowcount(result) == 1

    # --- callbacks ---------------------------------------------------------------------------------

    async def take_receipt(self, key: str, call_sid: str) -> bool:
        """True for the first delivery of the callback `key`; False for a retry or a duplicate."""
        async with self.db.write() as session:
            result = await session.execute(insert_ignore(session, WebhookReceipt, [{
                "key": key, "call_sid": call_sid, "received_at": utcnow()}]))
            return rowcount(result) == 1

    async def record_answer(self, key: str, twiml: str) -> None:
        async with self.db.write() as session:
            await session.execute(update(WebhookReceipt).where(WebhookReceipt.key == key).values(answer=twiml))

    async def answer_of(self, key: str, timeout_s: float) -> str | None:
        """The TwiML the first delivery of `key` was answered, once it has one (None: not in time)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with self.db.read() as session:
                answer = await session.scalar(select(WebhookReceipt.answer).where(WebhookReceipt.key == key))
            if answer is not None or asyncio.get_running_loop().time() >= deadline:
                return answer
            await asyncio.sleep(POLL_S)

    async def answer_once(self, key: str, call_sid: str, answer: Callable[[], Awaitable[str]], *,
                          wait_s: float) -> str:
        """`answer()` for the first delivery of callback `key`; a retry or duplicate gets the TwiML
        the first one got (waiting up to `wait_s` for it). If the database cannot say, the
        callback is answered as new: a caller is never left without TwiML."""
        try:
            first = await within(self.take_receipt(key, call_sid), RECEIPT_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not check whether %s was delivered before (%s); answering it", key,
                        type(exc).__name__)
            return await answer()
        if not first:
            log.info("%s of %s delivered again: answering as the first delivery was", key.split(":")[0], call_sid)
            earlier = await self.answer_of(key, wait_s)
            if earlier is not None:
                return earlier
            log.warning("%s of %s: the first delivery has no answer yet; answering afresh", key, call_sid)
            return await answer()
        twiml = await answer()
        try:
            await within(self.record_answer(key, twiml), RECEIPT_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not record the answer to %s (%s)", key, type(exc).__name__)
        return twiml

    # --- record-mode turns ---------------------------------------------------------------------------

    async def lease_turn(self, call_sid: str, owner: str, hold_s: float, wait_s: float) -> bool:
        """Take the call's turn for `hold_s`, waiting up to `wait_s` for another holder to finish."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            now = utcnow()
            if await self._try_lease(call_sid, owner, now, now + timedelta(seconds=hold_s)):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    async def _try_lease(self, call_sid: str, owner: str, now: datetime, until: datetime) -> bool:
        async with self.db.write() as session:
            await session.execute(insert_ignore(session, Call, [{
                "call_sid": call_sid, "started_at": now, "status": CallStatus.IN_PROGRESS, "summary": "",
                "mode": CallMode.LEGACY}]))
            result = await session.execute(update(Call).where(
                Call.call_sid == call_sid,
                or_(Call.turn_lease_until.is_(None), Call.turn_lease_until < now, Call.turn_lease_owner == owner),
            ).values(turn_lease_owner=owner, turn_lease_until=until))
            return rowcount(result) == 1

    @contextlib.asynccontextmanager
    async def one_turn_at_a_time(self, call_sid: str, *, hold_s: float, wait_s: float) -> AsyncIterator[bool]:
        """Hold the call's turn while the block runs (yields whether it was had: a database that
        cannot say, or a holder that does not finish in `wait_s`, lets the turn run anyway)."""
        owner = uuid.uuid4().hex
        try:
            held = await within(self.lease_turn(call_sid, owner, hold_s, wait_s), wait_s + 1.0)
        except Exception as exc:
            log.warning("could not take the turn of %s (%s); running it anyway", call_sid, type(exc).__name__)
            held = False
        if not held:
            log.warning("another request still runs a turn of %s; running this one anyway", call_sid)
        try:
            yield held
        finally:
            if held:
                try:
                    await within(self.release_turn(call_sid, owner), RECEIPT_TIMEOUT_S)
                except Exception as exc:  # the lease runs out by itself
                    log.warning("could not release the turn of %s (%s)", call_sid, type(exc).__name__)

    async def release_turn(self, call_sid: str, owner: str) -> None:
        async with self.db.write() as session:
            await session.execute(update(Call).where(Call.call_sid == call_sid, Call.turn_lease_owner == owner)
                                  .values(turn_lease_owner=None, turn_lease_until=None))
