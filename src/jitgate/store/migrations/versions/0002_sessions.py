"""sessions: the audit index of client sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=True),
        sa.Column("connection_name", sa.String(length=128), nullable=False),
        sa.Column("identity_id", sa.String(length=36), nullable=False),
        sa.Column("identity_name", sa.String(length=128), nullable=False),
        sa.Column("actor_id", sa.String(length=36), nullable=True),
        sa.Column("actor_name", sa.String(length=128), nullable=True),
        sa.Column("auth_method", sa.String(length=16), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=True),
        sa.Column("client_addr", sa.String(length=64), nullable=True),
        sa.Column("client_program", sa.String(length=256), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=256), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("recording_path", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_connection", ["connection_name"], unique=False)
        batch_op.create_index("ix_sessions_identity", ["identity_name"], unique=False)
        batch_op.create_index("ix_sessions_started_at", ["started_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_started_at")
        batch_op.drop_index("ix_sessions_identity")
        batch_op.drop_index("ix_sessions_connection")
    op.drop_table("sessions")
