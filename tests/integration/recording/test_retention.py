"""Retention per connection: recordings older than allowed are deleted, legal holds kept."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, update

from jitgate.errors import InvalidInput
from jitgate.recording.export import Exporter, FileSink, StoreCursor, StoreSource
from jitgate.recording.retention import apply_retention, exported_below
from jitgate.store.models import AdminAuditRow, SessionRow, utcnow
from tests.fixtures.postgres_gateway import PgGateway
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def _session(gw: PgGateway, name: str) -> SessionRow:
    with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 1")
    return gw.session(name)


def test_retention_deletes_old_recordings_but_not_held_ones(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    gw = pg_gateway.gateway
    kept_short = pg_gateway.add_connection(pg_scram).name
    gw.connections.update(kept_short, options={"recording_retention_days": 7})
    on_hold = pg_gateway.add_connection(pg_scram).name
    gw.connections.update(on_hold, options={"recording_retention_days": 7, "legal_hold": True})
    forever = pg_gateway.add_connection(pg_scram).name

    old, held_session, recent = (_session(pg_gateway, kept_short) for _ in range(3))
    connection_held = _session(pg_gateway, on_hold)
    no_retention = _session(pg_gateway, forever)
    answer = console.http.put(
        f"/api/v1/sessions/{held_session.id}/legal-hold",
        json={"hold": True},
        headers={"Authorization": f"Bearer {console.token}"},
    )
    assert answer.status_code == 200 and answer.json()["legal_hold"] is True

    aged = [old.id, held_session.id, connection_held.id, no_retention.id]
    with gw.store.session() as db:  # these sessions ended eight days ago
        db.execute(
            update(SessionRow)
            .where(SessionRow.id.in_(aged))
            .values(ended_at=utcnow() - timedelta(days=8))
        )
    paths = {
        row.id: pg_gateway.recording_path(row)
        for row in (old, held_session, recent, connection_held, no_retention)
    }

    assert apply_retention(gw.store, gw.paths.recordings, None) == [old.id]
    assert not paths[old.id].exists()
    assert all(p.exists() for sid, p in paths.items() if sid != old.id)
    assert apply_retention(gw.store, gw.paths.recordings, None) == []  # nothing twice

    row = console.get(f"/api/v1/sessions/{old.id}").json()
    assert row["recording"] == "deleted" and row["signed"]  # the index and seal remain
    assert console.get(f"/api/v1/sessions/{old.id}/events").status_code == 404
    with gw.store.session() as db:
        audit = db.scalars(select(AdminAuditRow).where(AdminAuditRow.target_name == old.id)).all()
        assert [a.action for a in audit] == ["recording:delete"]
        held = db.scalars(
            select(AdminAuditRow.action).where(AdminAuditRow.target_name == held_session.id)
        ).all()
        assert held == ["session:legal_hold"]

    # Released from hold: the next run deletes it.
    console.cli("sessions", "hold", held_session.id, "--release", check=True)
    assert apply_retention(gw.store, gw.paths.recordings, None) == [held_session.id]
    # A default retention applies to connections without their own.
    assert apply_retention(gw.store, gw.paths.recordings, 7) == [no_retention.id]


def test_retention_never_deletes_what_the_export_has_not_delivered(
    pg_gateway: PgGateway, pg_scram: PgCluster, tmp_path: Path
) -> None:
    gw = pg_gateway.gateway
    name = pg_gateway.add_connection(pg_scram).name
    gw.connections.update(name, options={"recording_retention_days": 1})
    first, second = (_session(pg_gateway, name) for _ in range(2))
    with gw.store.session() as db:
        db.execute(
            update(SessionRow)
            .where(SessionRow.id.in_([first.id, second.id]))
            .values(ended_at=utcnow() - timedelta(days=3))
        )
    cursor = f"serve:file:{tmp_path}/audit.jsonl"
    # The export has not started: nothing is deleted.
    assert apply_retention(gw.store, gw.paths.recordings, None, export_cursor=cursor) == []
    exporter = Exporter(
        StoreSource(gw.store, gw.paths.recordings),
        FileSink(tmp_path / "audit.jsonl"),
        StoreCursor(gw.store, cursor),
    )
    exporter.run_once()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    exported = {json.loads(line)["export_id"] for line in lines}
    assert f"{first.id}:1" in exported and f"{second.id}:1" in exported
    # The cursor is on the last session exported (``second``, or a later one of another
    # test): every session closed before it was delivered whole, and may go.
    deleted = apply_retention(gw.store, gw.paths.recordings, None, export_cursor=cursor)
    assert first.id in deleted
    with gw.store.session() as db:
        last = db.get(SessionRow, second.id)
        assert last is not None
        on_cursor = exported_below(gw.store, cursor) == last.close_seq
    assert (second.id in deleted) is not on_cursor
    # A connection option that is not valid is refused when it is saved.
    with pytest.raises(InvalidInput, match="recording_retention_days"):
        gw.connections.update(name, options={"recording_retention_days": "a week"})
