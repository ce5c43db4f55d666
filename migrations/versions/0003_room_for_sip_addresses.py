"""Room for SIP addresses: caller and called numbers up to 512 characters.

On a SIP call Twilio's From and To are SIP URIs ("sip:+15551234567@pbx.example.com;user=phone"),
longer than the 32 characters 0001 gave every number: on PostgreSQL each write of such a call
failed for good ("value too long"), and the call's record was lost.

PostgreSQL: ALTER COLUMN ... TYPE varchar(512), which widening does without rewriting the table.

SQLite ignores declared lengths, so only the declared type changes, and not by batch mode's
table copy: the server turns foreign keys on for every connection (they cannot be turned off
inside the migration's transaction), and dropping the old `calls` would cascade-delete every
turn and event. SQLite's documented procedure for a change that leaves the stored data as it
is (https://www.sqlite.org/lang_altertable.html#otheralter) is used instead: edit the CREATE
TABLE text under writable_schema, then bump schema_version so every connection re-reads it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMBERS = {"calls": ("from_number", "to_number"), "messages": ("phone",), "bookings": ("customer_phone",)}
OLD, NEW = 32, 512


def upgrade() -> None:
    _resize(OLD, NEW)


def downgrade() -> None:
    """Back to 32 characters; longer numbers are cut to fit (PostgreSQL would refuse them)."""
    _resize(NEW, OLD)


def _resize(old: int, new: int) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_declared_lengths(old, new)
        return
    for table, columns in NUMBERS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, existing_type=sa.String(old), type_=sa.String(new),
                                   existing_nullable=False,
                                   postgresql_using=f"left({column}, {new})" if new < old else None)


def _sqlite_declared_lengths(old: int, new: int) -> None:
    """VARCHAR(old) -> VARCHAR(new) in the tables' CREATE text; refuses anything unexpected."""
    conn = op.get_bind()
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        for table, columns in NUMBERS.items():
            sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                               {"t": table}).scalar_one()
            for column in columns:
                sql, found = re.subn(rf"(\b{column}\s+VARCHAR)\({old}\)", rf"\g<1>({new})", sql)
                if found != 1:
                    raise RuntimeError(f"{table}.{column} is not declared VARCHAR({old}); not changed")
            conn.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :t"),
                         {"sql": sql, "t": table})
        conn.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema=OFF")
    problems = conn.exec_driver_sql("PRAGMA quick_check").scalar_one()
    if problems != "ok":
        raise RuntimeError(f"SQLite reports a damaged schema after the change: {problems}")
