"""One stream at a time, one record-mode turn at a time, each callback once.

calls.stream_segment: the highest stream admitted for the call; a `start` for a segment not
above it (a replayed or second stream) is refused. calls.turn_lease_owner / _until: the request
running a record-mode call's turn, so two callbacks of one call (on any instances) take turns.
webhook_receipts: callbacks already taken, by identity, with the TwiML they were answered.

Columns are added in place (ALTER TABLE ADD COLUMN, also on SQLite): no table copy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("stream_segment", sa.Integer(), nullable=True))
    op.add_column("calls", sa.Column("turn_lease_owner", sa.String(40), nullable=True))
    op.add_column("calls", sa.Column("turn_lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "webhook_receipts",
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_webhook_receipts")),
    )
    op.create_index(op.f("ix_webhook_receipts_call_sid"), "webhook_receipts", ["call_sid"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_receipts_call_sid"), table_name="webhook_receipts")
    op.drop_table("webhook_receipts")
    for column in ("turn_lease_until", "turn_lease_owner", "stream_segment"):
        # SQLite drops a column in place (3.35+); a batch copy of calls would cascade-delete its turns
        op.execute(f"ALTER TABLE calls DROP COLUMN {column}")
