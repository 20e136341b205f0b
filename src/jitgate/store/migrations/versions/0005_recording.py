"""recording: signatures, retention, export cursors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _session_columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("grant_ids", sa.JSON(), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=True),
        sa.Column("seal_digest", sa.String(length=64), nullable=True),
        sa.Column("seal_signature", sa.String(length=128), nullable=True),
        sa.Column("seal_key_id", sa.String(length=64), nullable=True),
        sa.Column("recording_state", sa.String(length=16), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        for column in _session_columns():
            batch.add_column(column)
    op.create_index("ix_sessions_ended_at", "sessions", ["ended_at"])
    op.create_table(
        "export_cursors",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("export_cursors")
    op.drop_index("ix_sessions_ended_at", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in reversed(_session_columns()):
            batch.drop_column(column.name)
