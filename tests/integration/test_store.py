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
