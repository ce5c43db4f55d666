"""The background writer: one task per process that applies database writes in order, and keeps
every write the database cannot take.

Recorders only enqueue (a deque append: no I/O, no wait), so a slow or absent database never
touches the audio path. A write is plain data, a `Write` (a kind and JSON-safe arguments) that the
storage turns into a repository call; the writes are upserts and insert-ignores, so applying one
again after a doubt does no harm.

While the database keeps up, writes are applied from memory as they come, in order. When it does
not (a write not stored within `spill_after_s`, one still failing after `spill_after_attempts`
tries, or more than `max_memory` waiting), the waiting writes move to the journal on disk, in
order; the writer retries the oldest with back-off for as long as the database stays away, then
replays the journal in order. The journal a stopped server left is replayed at the next start,
before any new write. A write is set aside (logged, and kept in the journal folder's rejected
file) only for a lasting reason: a bug, bad data, or a database that answers but keeps refusing
that one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): one server per journal folder
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("zylin.storage.writer")

RETRY_DELAYS_S = (0.1, 0.3, 1.0, 2.0, 5.0)  # the last one repeats for as long as the database is away
SPILL_AFTER_S = 2.0          # a write not stored by then waits on disk: a crash cannot lose it
SPILL_AFTER_ATTEMPTS = 3
MAX_MEMORY = 10_000          # writes waiting in memory; past that they wait on disk
ATTEMPT_TIMEOUT_S = 30.0     # a net under the drivers' own bounds (asyncpg: 5 s connect, 15 s command)
REFUSALS = 5                 # a "passing" failure this often while the database answers: set aside
PROBE_TIMEOUT_S = 5.0
REPLAY_BATCH = 256           # journal lines read back at a time
STILL_AWAY_EVERY = 12        # failed attempts between "still waiting" lines in the log (~1 min)
CLEANUP_S = 2.0              # how long shutdown waits for a cancelled statement to let go


# --- a write as plain data ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Write:
    """One database write as data: it can wait in memory or on disk and be applied later."""
    kind: str               # what to do, e.g. "add_turn" (see Storage.apply)
    args: dict[str, Any]    # its arguments, JSON-safe: datetimes as ISO strings
    what: str = ""          # for the log: "turn CAxx #3"

    @classmethod
    def of(cls, kind: str, what: str, /, **args: Any) -> Write:
        return cls(kind, plain(args), what)

    def line(self, seq: int) -> bytes:
        return json.dumps({"seq": seq, "kind": self.kind, "what": self.what, "args": self.args},
                          separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, raw: bytes) -> tuple[int, Write]:
        data = json.loads(raw)
        return int(data["seq"]), cls(str(data["kind"]), dict(data["args"]), str(data.get("what", "")))


def plain(value: Any) -> Any:
    """A JSON-safe copy: datetimes as ISO strings, dataclasses as dicts, anything odd as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    return str(value)


def journal_tag(identity: str) -> str:
    """A short name for one database, so a journal is only ever replayed into the database it
    was written for (two servers may share a folder and not a database)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


# --- the journal on disk -------------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class Segment:
    """One journal file: this process's own, or one a stopped server left."""
    path: Path
    fd: int
    own: bool
    applied: int = 0                 # the highest seq applied, kept in <file>.applied
    read_pos: int = 0                # bytes read back so far
    size: int = 0
    cursor_fd: int | None = None

    @property
    def cursor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".applied")


class Journal:
    """Writes waiting on disk, one JSON line each, oldest first: the files stopped servers left,
    then this process's own. Each file is locked by the process that holds it. Blocking file I/O:
    the writer calls it in a worker thread, and one lock keeps appending and reading apart."""

    def __init__(self, folder: str | Path, tag: str = "") -> None:
        self.folder = Path(folder)
        self.prefix = f"writes-{tag}-" if tag else "writes-"
        self.rejected_path = self.folder / (f"rejected-{tag}.jsonl" if tag else "rejected.jsonl")
        self.segments: list[Segment] = []
        self._lock = threading.RLock()

    @property
    def active(self) -> bool:
        """Writes are (or may be) waiting on disk."""
        return bool(self.segments)

    def adopt(self) -> int:
        """Take over the files of servers that stopped (nobody holds their lock); their bytes."""
        if not self.folder.is_dir():
            return 0
        with self._lock:
            found = 0
            for path in sorted(self.folder.glob(f"{self.prefix}*.jsonl")):
                segment = _claim(path)
                if segment is not None:
                    self.segments.insert(sum(not s.own for s in self.segments), segment)
                    found += segment.size
            for cursor in self.folder.glob(f"{self.prefix}*.jsonl.applied"):
                if not cursor.with_suffix("").exists():  # its journal was done with
                    cursor.unlink(missing_ok=True)
            return found

    def append(self, batch: list[tuple[int, Write]]) -> None:
        """Add writes at the end, durably (fsync): they are on disk when this returns."""
        data = b"".join(write.line(seq) for seq, write in batch)
        with self._lock:
            segment = self._own()
            view = memoryview(data)
            while view:
                view = view[os.write(segment.fd, view):]
            os.fsync(segment.fd)
            segment.size += len(data)

    def read(self, limit: int) -> list[tuple[Segment, int, Write]]:
        """The next writes not yet applied, oldest first. Called once all those read before are
        settled, so a file read to its end is done with, and removed."""
        with self._lock:
            while self.segments:
                segment = self.segments[0]
                batch = self._read(segment, limit)
                if batch:
                    return batch
                self._remove(segment)  # read to its end, and all of it settled
            return []

    def applied(self, segment: Segment | None, seq: int) -> None:
        """Remember that the write `seq` is settled (None: in this process's own file)."""
        with self._lock:
            segment = segment or next((s for s in self.segments if s.own), None)
            if segment is None or seq <= segment.applied or segment not in self.segments:
                return
            segment.applied = seq
            if segment.cursor_fd is None:
                segment.cursor_fd = os.open(segment.cursor_path, os.O_RDWR | os.O_CREAT, 0o600)
            os.pwrite(segment.cursor_fd, b"%020d\n" % seq, 0)

    def set_aside(self, seq: int, write: Write | None, reason: str, raw: bytes = b"") -> None:
        """Keep a write that can never be applied where an operator can find it."""
        entry = {"at": datetime.now(UTC).isoformat(), "reason": reason, "seq": seq}
        if write is not None:
            entry.update(kind=write.kind, what=write.what, args=write.args)
        else:
            entry["line"] = raw.decode(errors="replace")
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.rejected_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        """Let go of the files (and their locks); what is not applied stays for the next start."""
        with self._lock:
            for segment in self.segments:
                _close(segment)
            self.segments.clear()

    def _own(self) -> Segment:
        own = next((s for s in self.segments if s.own), None)
        if own is not None:
            return own
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.folder / f"{self.prefix}{stamp}-{os.getpid()}.jsonl"
        building = path.with_name(path.name + ".new")  # locked before its name can be adopted
        fd = os.open(building, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        _lock(fd)
        os.replace(building, path)
        own = Segment(path, fd, own=True)
        own.cursor_path.unlink(missing_ok=True)
        self.segments.append(own)
        return own

    def _read(self, segment: Segment, limit: int) -> list[tuple[Segment, int, Write]]:
        out: list[tuple[Segment, int, Write]] = []
        window = 1 << 20
        while len(out) < limit and segment.read_pos < segment.size:
            chunk = os.pread(segment.fd, min(window, segment.size - segment.read_pos), segment.read_pos)
            end = chunk.rfind(b"\n")
            if end < 0:
                if segment.read_pos + len(chunk) >= segment.size:  # a line cut short by a crash
                    log.warning("%s: skipped an incomplete last line (%d bytes)", segment.path.name, len(chunk))
                    segment.read_pos = segment.size
                    break
                window *= 2  # one line longer than the window
                continue
            for raw in chunk[:end + 1].splitlines(keepends=True):
                if len(out) >= limit:
                    break
                segment.read_pos += len(raw)
                line = self._parse(segment, raw)
                if line is not None:
                    out.append(line)
        return out

    def _parse(self, segment: Segment, raw: bytes) -> tuple[Segment, int, Write] | None:
        try:
            seq, write = Write.from_line(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: an unreadable line was set aside: %s", segment.path.name, exc)
            self.set_aside(0, None, f"unreadable: {exc}", raw)
            return None
        return None if seq <= segment.applied else (segment, seq, write)

    def _remove(self, segment: Segment) -> None:
        """Every write in it is settled: delete it while still holding its lock."""
        segment.path.unlink(missing_ok=True)
        segment.cursor_path.unlink(missing_ok=True)
        _close(segment)
        self.segments.remove(segment)


def _lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _claim(path: Path) -> Segment | None:
    """A stopped server's journal, locked for this process; None if a live server holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return None
    if not _lock(fd) or os.fstat(fd).st_nlink == 0:  # held, or removed while we opened it
        os.close(fd)
        return None
    segment = Segment(path, fd, own=False, size=os.fstat(fd).st_size)
    with contextlib.suppress(OSError, ValueError):
        segment.applied = int(segment.cursor_path.read_text().strip() or 0)
    return segment


def _close(segment: Segment) -> None:
    for fd in (segment.cursor_fd, segment.fd):
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    segment.cursor_fd = None


# --- the writer ------------------------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class Pending:
    """A write waiting to be stored, in memory."""
    what: str
    order: int
    write: Write | None = None                          # plain data: may go to the journal
    run: Callable[[], Awaitable[None]] | None = None    # a closure: can only wait in memory
    done: Callable[[bool], None] | None = None          # called with True once stored, False if set aside
    queued_at: float = field(default_factory=time.monotonic)
    seq: int = 0                                        # its line in the journal; 0 = memory only
    segment: Segment | None = None                      # the file it was read back from
    failures: int = 0


class Writer:
    def __init__(self, apply: Callable[[Write], Awaitable[None]] | None = None, *,
                 journal: Journal | None = None, probe: Callable[[], Awaitable[None]] | None = None,
                 max_memory: int = MAX_MEMORY, spill_after_s: float = SPILL_AFTER_S,
                 spill_after_attempts: int = SPILL_AFTER_ATTEMPTS,
                 retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.apply = apply
        self.journal = journal
        self.probe = probe                  # raises unless the database takes a write transaction
        self.max_memory = max_memory
        self.spill_after_s = spill_after_s
        self.spill_after_attempts = spill_after_attempts
        self.retry_delays_s = retry_delays_s or (0.0,)
        self.failed = 0                     # writes set aside, since start
        self.dropped = 0                    # writes refused: memory full and no journal to take them
        self.spilled = 0                    # writes moved to the journal
        self.replayed = 0                   # writes stored from the journal
        self._memory: deque[Pending] = deque()
        self._replay: deque[Pending] = deque()
        self._inflight: Pending | None = None
        self._attempt_started = 0.0
        self._closures = 0                  # of the writes in memory, those that are closures
        self._orders = 0
        self._seq = 0
        self._callbacks: dict[int, Callable[[bool], None]] = {}
        self._wake = asyncio.Event()
        self._spill_soon = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._order = asyncio.Lock()        # picking the next write and spilling exclude each other
        self._tasks: list[asyncio.Task] = []
        self._disk_trouble = False

    # --- the call path -----------------------------------------------------------------------------

    def submit(self, write: Write | str, run: Callable[[], Awaitable[None]] | None = None,
               done: Callable[[bool], None] | None = None) -> None:
        """Queue a write; never blocks, never raises, never touches the disk. A `Write` may wait
        on disk; a bare description with `run` (a closure) can only wait in memory."""
        if isinstance(write, str):  # a closure
            if self._closures >= self.max_memory:
                self._refuse(write, done)
                return
            self._orders += 1
            item = Pending(write, self._orders, run=run, done=done)
            self._closures += 1
        else:
            if len(self._memory) >= self.max_memory and not self._can_spill:
                self._refuse(write.what, done)
                return
            self._orders += 1
            item = Pending(write.what, self._orders, write=write, done=done)
        self._memory.append(item)
        self._idle.clear()
        self._wake.set()
        if len(self._memory) > self.max_memory:
            self._spill_soon.set()

    @property
    def behind(self) -> bool:
        """Writes are waiting for the database: a new one should queue behind them."""
        return (self.journal is not None and self.journal.active) or self._stuck

    @property
    def _stuck(self) -> bool:
        """The write being tried has failed, or has taken too long: the database is not answering."""
        inflight = self._inflight
        return inflight is not None and (inflight.failures > 0 or
                                         time.monotonic() - self._attempt_started > self.spill_after_s / 2)

    @property
    def waiting(self) -> int:
        """Writes in memory (the journal's are not counted)."""
        return len(self._memory) + len(self._replay) + (self._inflight is not None)

    # --- lifetime ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start applying; first whatever a stopped server left in the journal."""
        if self._tasks:
            return
        if self.journal is not None:
            try:
                kept = self.journal.adopt()
            except OSError as exc:
                log.error("cannot read the write journal in %s: %s", self.journal.folder, exc)
                kept = 0
            if kept:
                self._idle.clear()
                log.warning("replaying writes a stopped server kept in %s (%d bytes)", self.journal.folder, kept)
        self._tasks = [asyncio.create_task(self._apply_all(), name="storage writer"),
                       asyncio.create_task(self._keep_all(), name="storage journal")]

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every write queued so far is stored or set aside."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Store what is waiting (up to `timeout_s`, not at all if the database is away), keep
        the rest in the journal for the next start, and stop."""
        if not self._tasks:
            return
        if not self._stuck:
            with contextlib.suppress(TimeoutError):
                await self.flush(timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=CLEANUP_S)  # a hung statement must not hold shutdown
        self._tasks = []
        if self.journal is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spill(self.journal), timeout_s)
        self._report_left()
        if self.journal is not None:
            await asyncio.to_thread(self.journal.close)

    def _report_left(self) -> None:
        left = [p for p in (self._inflight, *self._memory) if p is not None and not p.seq]
        if left:
            log.error("shutting down with %d database writes not stored and not journaled (%s)",
                      len(left), ", ".join(p.what for p in left[:5]))
        elif self.journal is not None and self.journal.active:
            log.warning("shutting down with writes waiting in the journal %s: the next start replays them",
                        self.journal.folder)

    # --- applying ------------------------------------------------------------------------------------

    async def _apply_all(self) -> None:
        while True:
            item = await self._next()
            self._inflight, self._attempt_started = item, time.monotonic()
            try:
                stored = await self._store(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("storage writer: unexpected failure on %s", item.what)
                stored = False
            await self._settle(item, stored)

    async def _next(self) -> Pending:
        """The oldest write: read back from the journal first, then from memory."""
        while True:
            async with self._order:
                if self._replay:
                    return self._replay.popleft()
                if self.journal is not None and self.journal.active:
                    if await self._read_back(self.journal):
                        continue
                if self._memory:
                    item = self._memory.popleft()
                    self._closures -= item.run is not None
                    return item
                self._idle.set()
                self._wake.clear()
            await self._wake.wait()

    async def _read_back(self, journal: Journal) -> bool:
        try:
            batch = await asyncio.to_thread(journal.read, REPLAY_BATCH)
        except OSError as exc:
            log.error("cannot read the write journal back (%s); trying again shortly", exc)
            await asyncio.sleep(self.retry_delays_s[-1])
            return True
        for segment, seq, write in batch:
            done = self._callbacks.pop(seq, None) if segment.own else None
            self._replay.append(Pending(write.what, 0, write=write, done=done, seq=seq, segment=segment))
        if not batch and not journal.active and (self.spilled or self.replayed):
            log.warning("the journal is replayed: every write kept while the database was away is stored")
        return bool(batch)

    async def _store(self, item: Pending) -> bool:
        """Apply one write, retried for as long as its failure may pass: no time limit while the
        database is away."""
        refusals = 0
        while True:
            try:
                await asyncio.wait_for(self._apply(item), ATTEMPT_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                item.failures += 1
                if not _passing(exc):
                    if item.failures >= 2:
                        return await self._set_aside(item, exc)
                elif item.failures >= len(self.retry_delays_s) and await self._database_answers():
                    refusals += 1
                    if refusals >= REFUSALS:
                        return await self._set_aside(item, exc)
                self._failed_once_more(item, exc)
                await asyncio.sleep(self.retry_delays_s[min(item.failures, len(self.retry_delays_s)) - 1])
                self._attempt_started = time.monotonic()
                continue
            if item.failures:
                log.warning("stored %s after %d retries (%.1f s)", item.what, item.failures,
                            time.monotonic() - item.queued_at)
            return True

    async def _apply(self, item: Pending) -> None:
        if item.run is not None:
            await item.run()
        elif self.apply is None or item.write is None:
            raise RuntimeError(f"no way to apply {item.what}")
        else:
            await self.apply(item.write)

    def _failed_once_more(self, item: Pending, exc: Exception) -> None:
        if item.failures == 1:
            log.warning("storing %s failed (%s: %s); retrying", item.what, type(exc).__name__, _short(exc))
        if item.failures == self.spill_after_attempts:
            self._spill_soon.set()
        if item.failures % STILL_AWAY_EVERY == 0:
            log.warning("the database still does not take writes (%s: %s): %d waiting in memory, "
                        "the rest in the journal; none is dropped", type(exc).__name__, _short(exc), self.waiting)

    async def _database_answers(self) -> bool:
        """Whether the database takes a write transaction: then a failing write is the problem."""
        if self.probe is None:
            return False
        try:
            await asyncio.wait_for(self.probe(), PROBE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def _set_aside(self, item: Pending, exc: Exception) -> bool:
        self.failed += 1
        kept = ""
        if item.write is not None and self.journal is not None:
            try:
                await asyncio.to_thread(self.journal.set_aside, item.seq, item.write,
                                        f"{type(exc).__name__}: {_short(exc)}")
                kept = f"; kept in {self.journal.rejected_path}"
            except OSError as disk:
                kept = f"; could not keep it either ({disk})"
        log.error("could not store %s, set aside after %d attempts%s: %s: %s", item.what, item.failures,
                  kept, type(exc).__name__, _short(exc))
        return False

    async def _settle(self, item: Pending, stored: bool) -> None:
        if item.seq and self.journal is not None:
            try:
                await asyncio.to_thread(self.journal.applied, item.segment, item.seq)
            except OSError as exc:
                log.error("cannot note progress in the write journal (%s): a restart may apply %s again",
                          exc, item.what)
            if stored and item.segment is not None:
                self.replayed += 1
        self._inflight = None
        if item.done is not None:
            try:
                item.done(stored)
            except Exception:
                log.exception("storage writer: a write's callback failed (%s)", item.what)

    # --- keeping writes on disk ---------------------------------------------------------------------

    @property
    def _can_spill(self) -> bool:
        return self.journal is not None and not self._disk_trouble

    async def _keep_all(self) -> None:
        """Now and then, and when memory is full: writes the database is not taking go to disk."""
        every = max(0.01, min(0.5, self.spill_after_s / 2))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spill_soon.wait(), every)
            self._spill_soon.clear()
            if self.journal is not None and self._should_spill():
                await self._spill(self.journal)

    def _should_spill(self) -> bool:
        if self.journal is None:
            return False
        inflight = self._inflight
        unjournaled = inflight is not None and inflight.write is not None and not inflight.seq
        if not unjournaled and len(self._memory) == self._closures:
            return False  # nothing that could go to disk
        heads = [p for p in (inflight if unjournaled else None, self._memory[0] if self._memory else None) if p]
        waited = time.monotonic() - min(p.queued_at for p in heads)
        failing = inflight is not None and inflight.failures >= self.spill_after_attempts
        return len(self._memory) > self.max_memory or waited > self.spill_after_s or failing

    async def _spill(self, journal: Journal) -> None:
        """Every waiting `Write` to the journal, oldest first (the one being tried leads);
        closures stay in memory."""
        async with self._order:
            inflight = self._inflight
            moving = [inflight] if inflight is not None and inflight.write is not None and not inflight.seq else []
            staying: deque[Pending] = deque()
            for item in self._memory:
                (moving if item.write is not None else staying).append(item)
            if not moving:
                return
            for item in moving:
                self._seq += 1
                item.seq = self._seq
            self._memory = staying
            was_active = journal.active
            try:
                await asyncio.to_thread(journal.append, [(p.seq, p.write) for p in moving if p.write])
            except OSError as exc:
                self._unspill(journal, moving, exc)
                return
        self._disk_trouble = False
        self.spilled += len(moving)
        for item in moving:
            if item is not inflight and item.done is not None:
                self._callbacks[item.seq] = item.done
        if not was_active:
            log.warning("the database is not keeping up: %d write(s) wait in the journal %s until it does",
                        len(moving), journal.folder)

    def _unspill(self, journal: Journal, moving: list[Pending], exc: OSError) -> None:
        """The journal cannot be written: the writes wait in memory again, in their order."""
        if not self._disk_trouble:
            log.error("cannot write the journal in %s (%s): writes wait in memory (at most %d)",
                      journal.folder, exc, self.max_memory)
        self._disk_trouble = True
        for item in moving:
            item.seq = 0
        back = [p for p in moving if p is not self._inflight]
        self._memory = deque(sorted((*back, *self._memory), key=lambda p: p.order))

    def _refuse(self, what: str, done: Callable[[bool], None] | None) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error("database writes are backed up (%d waiting in memory, none can go to disk): "
                      "dropped %s (%d dropped so far)", len(self._memory), what, self.dropped)
        if done is not None:
            done(False)


def _passing(exc: Exception) -> bool:
    """A failure that waiting may cure: the connection, a lock, a timeout, a database restarting.
    Bad data and bad SQL are lasting."""
    if isinstance(exc, (IntegrityError, DataError, ProgrammingError, NotSupportedError)):
        return False
    return isinstance(exc, (DBAPIError, DisconnectionError, PoolTimeout, OSError, asyncio.TimeoutError,
                            ConnectionError))


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
