"""Migrations and models agree, on SQLite and on real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from jitgate.store.db import Store
from jitgate.store.migrate import current_revision, downgrade, upgrade
from jitgate.store.models import Base

# The newest migration file: every migration chains onto the one before it.
VERSIONS = Path(__file__).resolve().parents[2] / "src/jitgate/store/migrations/versions"
HEAD = max(path.name[:4] for path in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))


def test_migrations_reach_head_and_match_models(store: Store) -> None:
    assert current_revision(store.engine) == HEAD
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(store_url: str, store: Store) -> None:
    downgrade(store.engine, "base")
    assert current_revision(store.engine) is None
    assert "identities" not in inspect(store.engine).get_table_names()
    upgrade(store.engine)
    assert current_revision(store.engine) == HEAD
    assert "identities" in inspect(store.engine).get_table_names()


def test_upgrade_is_idempotent(store: Store) -> None:
    upgrade(store.engine)
    upgrade(store.engine)
    assert current_revision(store.engine) == HEAD


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    from pathlib import Path

    db = Path(str(tmp_path)) / "wal.db"
    store = Store.from_url(f"sqlite:///{db}")
    upgrade(store.engine)
    with store.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    store.dispose()
    assert mode == "wal"


def test_sessions_closed_before_0008_are_numbered_in_their_old_export_order(
    store: Store,
) -> None:
    """0008 numbers the sessions closed already by (ended_at, id) — the order the export
    cursor followed until then — and the next close continues from there."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, text

    from jitgate.store.models import RevisionRow, SessionRow

    downgrade(store.engine, "0007")
    base = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [  # id, ended (minutes after base; None: open)
        ("s-b", 5), ("s-a", 5), ("s-c", 1), ("s-open", None), ("s-d", 9),
    ]  # fmt: skip
    with store.engine.begin() as conn:
        for session_id, ended in rows:
            conn.execute(
                text(
                    "INSERT INTO sessions (id, protocol, connection_name, identity_id, "
                    "identity_name, auth_method, started_at, ended_at, bytes_in, bytes_out, "
                    "counts, legal_hold) VALUES (:id, 'postgres', 'db', 'i', 'ann', "
                    "'api_token', :started, :ended, 0, 0, '{}', false)"
                ),
                {
                    "id": session_id,
                    "started": base,
                    "ended": None if ended is None else base + timedelta(minutes=ended),
                },
            )
    upgrade(store.engine)
    with store.session() as db:
        numbered = {r.id: r.close_seq for r in db.scalars(select(SessionRow))}
        assert numbered == {"s-c": 1, "s-a": 2, "s-b": 3, "s-d": 4, "s-open": None}
        counter = db.get(RevisionRow, "session_close")
        assert counter is not None and counter.value == 4
        still_open = db.get(SessionRow, "s-open")
        assert still_open is not None
        still_open.ended_at = base  # closed now, with an early end time: comes last
    with store.session() as db:
        assert db.get(SessionRow, "s-open").close_seq == 5  # type: ignore[union-attr]
