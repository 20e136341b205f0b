"""gateway nodes, session close order, signing keys

Sessions get the node that recorded them and a ``close_seq`` (the order in which they were
closed; see ``jitgate.store.closing``), numbered here for the sessions closed already in
the order the export walked them until now (``ended_at``, ``id``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("node_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("close_seq", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    # One statement (PostgreSQL, SQLite >= 3.33): row_number() in the export's old order.
    bind.execute(
        sa.text(
            "UPDATE sessions SET close_seq = numbered.n FROM ("
            " SELECT id, row_number() OVER (ORDER BY ended_at, id) AS n"
            " FROM sessions WHERE ended_at IS NOT NULL"
            ") AS numbered WHERE sessions.id = numbered.id"
        )
    )
    closed = int(
        bind.execute(sa.text("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL")).scalar()
        or 0
    )
    revisions = sa.table(
        "revisions",
        sa.column("name", sa.String()),
        sa.column("value", sa.BigInteger()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    bind.execute(
        sa.insert(revisions).values(
            name="session_close", value=closed, updated_at=datetime.now(UTC)
        )
    )
    op.create_index("ix_sessions_close_seq", "sessions", ["close_seq"], unique=True)
    op.create_index("ix_sessions_node", "sessions", ["node_id", "ended_at"])
    op.create_table(
        "gateway_nodes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("gateway_nodes")
    op.drop_index("ix_sessions_node", table_name="sessions")
    op.drop_index("ix_sessions_close_seq", table_name="sessions")
    op.execute(sa.text("DELETE FROM revisions WHERE name = 'session_close'"))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("close_seq")
        batch.drop_column("node_id")
