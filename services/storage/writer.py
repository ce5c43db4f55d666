"""The background writer: one task per process that applies database writes in order.

Recorders only enqueue (a dict put, no I/O), so a slow or absent database never touches the
audio path. A write that fails for a passing reason (connection lost, database busy) is retried
with back-off while later writes wait behind it, keeping each call's record in order; one that
still fails, or fails for a lasting reason (a bug, bad data), is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

log = logging.getLogger("zylin.storage.writer")

RETRY_DELAYS_S = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 15.0)  # about half a minute: a database restart


@dataclass(slots=True)
class Write:
    what: str                                    # for the log: "turn CAxx #3"
    apply: Callable[[], Awaitable[None]]
    done: Callable[[bool], None] | None = None   # called with True once stored, False if dropped


class Writer:
    def __init__(self, max_queue: int = 10_000, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.queue: asyncio.Queue[Write | None] = asyncio.Queue(max_queue)
        self.retry_delays_s = retry_delays_s
        self.failed = 0                  # writes given up on, since start
        self.dropped = 0                 # writes refused because the queue was full
        self._task: asyncio.Task | None = None

    def submit(self, what: str, apply: Callable[[], Awaitable[None]],
               done: Callable[[bool], None] | None = None) -> None:
        """Queue a write; never blocks, never raises."""
        try:
            self.queue.put_nowait(Write(what, apply, done))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("database writes are backed up (%d queued): dropped %s (%d dropped so far)",
                          self.queue.qsize(), what, self.dropped)
            if done is not None:
                done(False)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="storage writer")

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every write queued so far has been applied (or given up)."""
        await asyncio.wait_for(self.queue.join(), timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Apply what is queued (up to `timeout_s`), then stop."""
        if self._task is None:
            return
        try:
            await self.flush(timeout_s)
        except asyncio.TimeoutError:
            log.error("shutting down with %d database writes not applied", self.queue.qsize())
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        while True:
            write = await self.queue.get()
            try:
                if write is not None:
                    stored = await self._apply(write)
                    if write.done is not None:
                        write.done(stored)
            except Exception:
                log.exception("storage writer: unexpected failure on %s", write.what if write else "?")
            finally:
                self.queue.task_done()

    async def _apply(self, write: Write) -> bool:
        started = time.monotonic()
        for attempt, delay in enumerate((*self.retry_delays_s, None)):
            try:
                await write.apply()
                if attempt:
                    log.warning("stored %s after %d retries (%.1f s)", write.what, attempt,
                                time.monotonic() - started)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                lasting = not _passing(exc)
                if delay is None or (lasting and attempt >= 1):
                    self.failed += 1
                    log.error("could not store %s, dropped after %d attempts: %s: %s", write.what,
                              attempt + 1, type(exc).__name__, exc)
                    return False
                if attempt == 0:
                    log.warning("storing %s failed (%s: %s); retrying", write.what, type(exc).__name__,
                                _short(exc))
                await asyncio.sleep(delay)
        return False


def _passing(exc: Exception) -> bool:
    """A failure that waiting may cure: the connection, a lock, a timeout."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, (OperationalError, InterfaceError, OSError, asyncio.TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
