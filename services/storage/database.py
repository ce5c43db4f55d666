"""The database connection: one async engine per process, SQLite or PostgreSQL, and its schema.

SQLite needs a little help to behave like a real transactional database under asyncio: we emit
BEGIN ourselves (the sqlite3 module's legacy mode skips it for SELECT and SAVEPOINT), write
transactions take the write lock up front (BEGIN IMMEDIATE: no read-then-upgrade deadlocks), WAL
lets readers run beside the writer, and foreign keys are switched on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger("zylin.storage")

MIGRATIONS = Path(__file__).resolve().parent.parent.parent / "migrations"
ALEMBIC_INI = MIGRATIONS.parent / "alembic.ini"
_MIGRATION_LOCK = 0x5A796C696E  # pg_advisory_xact_lock key: one instance migrates at a time


class StorageError(RuntimeError):
    """The database is misconfigured or unreachable at start-up; the message says what to fix."""


def display_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable DATABASE_URL>"


class Database:
    """An async engine with two session factories: `read()` and `write()` transactions."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.schema = schema
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StorageError(f"DATABASE_URL {display_url(url)}: only sqlite+aiosqlite and "
                               "postgresql+asyncpg are supported")
        connect_args: dict = {}
        if self.dialect == "sqlite":
            _make_folder(parsed.database)
            _no_values_in_logs("aiosqlite")
        else:
            # A database that does not answer must fail fast: tools and the webhook wait on it.
            connect_args.update(timeout=5.0, command_timeout=15.0)
            if schema:
                connect_args["server_settings"] = {"search_path": schema}
        # hide_parameters: a failed statement's error (and so the log) never carries the values,
        # which are callers' numbers and what they said.
        self.engine: AsyncEngine = create_async_engine(
            url, echo=echo, connect_args=connect_args, pool_pre_ping=self.dialect == "postgresql",
            hide_parameters=True)
        if self.dialect == "sqlite":
            _sqlite_transactions(self.engine)
        writer = self.engine.execution_options(zylin_write=True)
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(writer, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read() as session:
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed on exit, rolled back on an exception."""
        async with self._write() as session, session.begin():
            yield session

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (Alembic), as `alembic upgrade head` does."""
        try:
            # A write transaction from the start: several workers starting on one SQLite file
            # queue up behind each other instead of failing with "database is locked".
            async with self.engine.execution_options(zylin_write=True).begin() as conn:
                if self.dialect == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                await conn.run_sync(_upgrade_head)
        except Exception as exc:
            raise StorageError(f"cannot bring the database at {display_url(self.url)} up to date: "
                               f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.engine.dispose()


def _no_values_in_logs(name: str) -> None:
    """A driver that logs each statement with its values at DEBUG (aiosqlite does) logs callers'
    numbers and words; it is kept at INFO, as hide_parameters keeps them out of errors."""
    driver = logging.getLogger(name)
    driver.setLevel(max(logging.INFO, driver.level))


def _make_folder(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_transactions(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN; see the module docstring
        cursor = dbapi_connection.cursor()
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("zylin_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config(url: str | None = None):
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade_head(connection: Connection) -> None:
    from alembic import command

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin
    config = alembic_config()
    config.attributes["connection"] = connection  # env.py runs on this connection, in this transaction
    command.upgrade(config, "head")
