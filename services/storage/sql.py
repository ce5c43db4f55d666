"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(session: AsyncSession) -> str:
    """'postgresql' or 'sqlite': the dialect of the engine the session is bound to."""
    bind = session.bind
    if bind is None:  # every session comes from Database's sessionmaker, which binds its engine
        raise RuntimeError("the session is not bound to an engine")
    return bind.dialect.name


def rowcount(result: Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE touched. AsyncSession.execute is annotated to return a
    Result; for those statements it is a CursorResult, the one that carries rowcount."""
    return cast(CursorResult[Any], result).rowcount


def insert_ignore(session: AsyncSession, model: Any, rows: list[dict[str, Any]]):
    """INSERT ... ON CONFLICT DO NOTHING: a row that exists already (any unique key) is kept."""
    dialect = dialect_name(session)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).values(rows).on_conflict_do_nothing()
