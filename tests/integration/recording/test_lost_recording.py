"""A recording that will never be readable again is declared lost by an administrator;
the audit export stops waiting for it and delivers a ``recording.lost`` record in its
place, once, then goes on with the sessions after it."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest
from sqlalchemy import select

from jitgate.recording.export import LOST_ACTION, Cursor, StoreSource
from jitgate.store.models import AdminAuditRow, SessionRow
from tests.fixtures.postgres_gateway import PgGateway
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def _session(gw: PgGateway, name: str) -> SessionRow:
    with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 1")
    return gw.session(name)


def _exported(source: StoreSource, cursor: Cursor, only: set[str]) -> tuple[list[str], Cursor]:
    """The export ids of the records after ``cursor``, of the sessions in ``only``."""
    records, after = source.fetch(Cursor(**{**cursor.__dict__, "admin": 10**9}), 1000)
    return [r["export_id"] for r in records if r["session"] in only], after


def _post_lost(
    console: Console, session_id: str, token: str, reason: str = "disk gone"
) -> httpx.Response:
    return console.http.post(
        f"/api/v1/sessions/{session_id}/lost",
        json={"reason": reason},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_a_lost_recording_stops_holding_up_the_export(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    gw = pg_gateway.gateway
    name = pg_gateway.add_connection(pg_scram).name
    before, lost, after_it = (_session(pg_gateway, name) for _ in range(3))
    ours = {before.id, lost.id, after_it.id}
    path = pg_gateway.recording_path(lost)
    count = len(path.read_bytes().splitlines())
    source = StoreSource(gw.store, gw.paths.recordings)
    # Start from just before our first session, whatever other tests left behind.
    start = Cursor(closed=before.close_seq - 1)

    # Readable: it cannot be declared lost, and an agent may not declare anything.
    answer = _post_lost(console, lost.id, console.token)
    assert answer.status_code == 409 and "can be read" in answer.json()["error"]["message"]
    agent = pg_gateway.add_agent()
    assert _post_lost(console, lost.id, agent).status_code == 403

    path.unlink()  # the node that held it is gone with its disk
    got, cursor = _exported(source, start, ours)
    assert got == [f"{before.id}:{n}" for n in range(1, len(got) + 1)]  # waits at `lost`
    assert source.waiting == lost.id

    answer = _post_lost(console, lost.id, console.token, reason="node-3 disk failed")
    assert answer.status_code == 200 and answer.json()["recording"] == "lost"
    again = _post_lost(console, lost.id, console.token)
    assert again.status_code == 409 and "already" in again.json()["error"]["message"]

    records, cursor = source.fetch(Cursor(**{**cursor.__dict__, "admin": 10**9}), 1000)
    mine = [r for r in records if r["session"] in ours]
    assert mine[0]["export_id"] == f"{lost.id}:lost"
    marker = mine[0]
    assert marker["type"] == "recording.lost" and marker["reason"] == "node-3 disk failed"
    assert marker["after_seq"] == 0 and marker["events"] == count
    assert marker["declared_by"] == "admin" and marker["declared_at"]
    assert {r["session"] for r in mine[1:]} == {after_it.id}  # the export went on
    assert source.waiting is None
    # The saved cursor never gives the marker again.
    assert _exported(source, cursor, ours)[0] == []

    # A cursor saved between the marker and the next session does not repeat it either.
    on_marker = Cursor(closed=lost.close_seq, session=lost.id, seq=0)
    got, _ = _exported(source, on_marker, ours)
    assert got[0] == f"{lost.id}:lost" and got.count(f"{lost.id}:lost") == 1

    with gw.store.session() as db:
        row = db.get(SessionRow, lost.id)
        assert row is not None and row.recording_state == "lost"
        assert row.recording_path is None  # retention and the uploader leave it alone
        audit = db.scalars(
            select(AdminAuditRow).where(
                AdminAuditRow.action == LOST_ACTION, AdminAuditRow.target_name == lost.id
            )
        ).one()
        assert audit.details["reason"] == "node-3 disk failed"
        assert audit.details["path"] == lost.recording_path


def test_only_closed_sessions_with_a_recording_can_lose_it(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 1")
        live = pg_gateway.session(name, ended=False)
        answer = _post_lost(console, live.id, console.token)
        assert answer.status_code == 409 and "still open" in answer.json()["error"]["message"]
    closed = pg_gateway.session(name)
    with pg_gateway.gateway.store.session() as db:
        row = db.get(SessionRow, closed.id)
        assert row is not None
        row.recording_state = "deleted"
    answer = _post_lost(console, closed.id, console.token)
    assert answer.status_code == 409 and "no recording" in answer.json()["error"]["message"]
    assert _post_lost(console, "no-such-session", console.token).status_code == 404


def test_the_cli_declares_a_recording_lost(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    row = _session(pg_gateway, name)
    pg_gateway.recording_path(row).unlink()
    done = console.cli("sessions", "lost", row.id, "--reason", "bucket purged", check=True)
    assert "marked lost" in done.stdout
    shown = json.loads(
        console.cli("sessions", "show", row.id, "--output", "json", check=True).stdout
    )
    assert shown["session"]["recording"] == "lost" and shown["events"] == []
    refused = console.cli("sessions", "lost", row.id, "--reason", "again")
    assert refused.returncode != 0 and "already" in refused.stderr
