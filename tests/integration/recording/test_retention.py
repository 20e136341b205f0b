"""Retention per connection: recordings older than allowed are deleted, legal holds kept."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, update

from jitgate.errors import InvalidInput
from jitgate.recording.export import Cursor, Exporter, FileSink, StoreCursor, StoreSource
from jitgate.recording.retention import apply_retention, exported_below
from jitgate.store.models import AdminAuditRow, SessionRow, utcnow
from tests.fixtures.inprocess import unique
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


def _aged_sessions(gw: PgGateway, cluster: PgCluster, count: int) -> list[SessionRow]:
    """``count`` sessions of a connection keeping recordings one day, ended three days ago."""
    name = gw.add_connection(cluster).name
    gw.gateway.connections.update(name, options={"recording_retention_days": 1})
    rows = [_session(gw, name) for _ in range(count)]
    with gw.gateway.store.session() as db:
        db.execute(
            update(SessionRow)
            .where(SessionRow.id.in_([row.id for row in rows]))
            .values(ended_at=utcnow() - timedelta(days=3))
        )
    return rows


def _on(row: SessionRow) -> str:
    """The cursor of an exporter that has got to ``row`` (and delivered its first event)."""
    return Cursor(closed=row.close_seq, session=row.id, seq=1).encode()


def test_retention_waits_for_every_registered_export_consumer(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console, forget_consumers: None
) -> None:
    gw = pg_gateway.gateway
    first, second, third = _aged_sessions(pg_gateway, pg_scram, 3)
    auditor = unique("auditor")
    gw.identities.create_identity(auditor, groups=["auditors"])
    as_auditor = {"Authorization": f"Bearer {pg_gateway.token_for(auditor)}"}
    as_admin = {"Authorization": f"Bearer {console.token}"}

    def export(consumer: str, cursor: str | None = None) -> None:
        params = {"consumer": consumer, "limit": 1, **({"cursor": cursor} if cursor else {})}
        answer = console.http.get("/api/v1/audit/export", params=params, headers=as_auditor)
        assert answer.status_code == 200, answer.text

    def retention(export_cursor: str | None = None) -> list[str]:
        return apply_retention(gw.store, gw.paths.recordings, None, export_cursor=export_cursor)

    def listed() -> dict[str, dict[str, Any]]:
        items = console.get("/api/v1/audit/consumers").json()["items"]
        return {item["name"]: item for item in items}

    # Registered, nothing fetched yet: every recording is held.
    export("siem")
    assert listed()["siem"]["position"] == 0
    assert not {first.id, second.id, third.id} & set(retention())
    # Its cursor is on the second session: the first was delivered whole and may go.
    export("siem", _on(second))
    deleted = retention()
    assert first.id in deleted and second.id not in deleted
    seen = listed()["siem"]
    assert seen["position"] == second.close_seq
    # An older cursor is served, but the position does not move back; last seen does.
    export("siem", None)
    again = listed()["siem"]
    assert again["position"] == second.close_seq
    assert datetime.fromisoformat(again["last_seen"]) > datetime.fromisoformat(seen["last_seen"])
    # The gateway's own export holds too: the lowest position of all counts.
    export("siem", _on(third))
    assert second.id not in retention(export_cursor=f"serve:{unique('never')}")
    # A second consumer that has fetched nothing holds the second session back ...
    export("backup")
    assert second.id not in retention()
    assert set(listed()) >= {"siem", "backup"}
    # ... until an admin removes it, which the audit log keeps.
    assert (
        console.http.delete("/api/v1/audit/consumers/backup", headers=as_admin).status_code == 204
    )
    assert "backup" not in listed()
    assert second.id in retention()
    assert third.id not in retention()
    with gw.store.session() as db:
        audit = db.scalars(
            select(AdminAuditRow).where(
                AdminAuditRow.target_type == "audit_consumer",
                AdminAuditRow.target_name == "backup",
            )
        ).all()
    assert [(a.action, a.actor_name) for a in audit] == [
        ("audit_consumer:create", auditor),
        ("audit_consumer:delete", "admin"),
    ]

    # Only admins see and remove consumers; names are checked; unknown ones are 404.
    assert console.http.get("/api/v1/audit/consumers", headers=as_auditor).status_code == 403
    refused = console.http.delete("/api/v1/audit/consumers/siem", headers=as_auditor)
    assert refused.status_code == 403 and "siem" in listed()
    gone = console.http.delete("/api/v1/audit/consumers/backup", headers=as_admin)
    assert gone.status_code == 404
    bad = console.http.get(
        "/api/v1/audit/export", params={"consumer": "no/slash"}, headers=as_admin
    )
    assert bad.status_code == 400 and "consumer name" in bad.json()["error"]["message"]
