"""Finding sessions and events (identity, connection, decision, time, text) and following
an open session live over server-sent events."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from jitgate.identity.delegation import TOKEN_TYPE_DELEGATION
from tests.fixtures.postgres_gateway import PgGateway
from tests.integration.recording.conftest import Console
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def test_filter_sessions_and_events(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    token = pg_gateway.add_user("finder-frank")
    before = datetime.now(UTC) - timedelta(seconds=1)
    with psycopg.connect(pg_gateway.dsn(name, token=token), autocommit=True) as conn:
        conn.execute("SELECT 'needle-in-haystack'")
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 'plain'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE nothing_here")
    frank, admin = pg_gateway.sessions(name)

    def ids(**params: object) -> list[str]:
        response = console.get("/api/v1/sessions", connection=name, **params)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["items"]]

    assert ids() == [admin.id, frank.id]
    assert ids(identity="finder-frank") == [frank.id]
    assert ids(decision="deny") == [admin.id]
    assert ids(q="NEEDLE-in") == [frank.id]
    assert ids(since=before.isoformat()) == [admin.id, frank.id]
    assert ids(until=before.isoformat()) == []
    listed = console.cli("sessions", "list", "--connection", name, "--decision", "deny",
                         "-o", "json", check=True)  # fmt: skip
    assert [s["id"] for s in json.loads(listed.stdout)] == [admin.id]

    events = console.get(f"/api/v1/sessions/{admin.id}/events", decision="deny").json()["items"]
    assert [e["text"] for e in events] == ["TRUNCATE nothing_here"]
    found = console.get(f"/api/v1/sessions/{admin.id}/events", q="plain").json()["items"]
    assert [e["type"] for e in found] == ["request", "result"]  # the text and the sample
    late = console.get(
        f"/api/v1/sessions/{admin.id}/events", since=(datetime.now(UTC)).isoformat()
    ).json()["items"]
    assert late == []


def test_live_tail_of_an_open_session(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    received: list[tuple[str, dict[str, object]]] = []
    conn = psycopg.connect(pg_gateway.dsn(name), autocommit=True)
    try:
        row = pg_gateway.session(name, ended=False)

        def follow() -> None:
            headers = {"Authorization": f"Bearer {console.token}"}
            with httpx.stream("GET", f"{console.url}/api/v1/sessions/{row.id}/tail",
                              headers=headers, timeout=20) as response:  # fmt: skip
                assert response.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        received.append((kind, json.loads(line[6:])))

        reader = threading.Thread(target=follow)
        reader.start()
        conn.execute("SELECT 'live-1'")
        deadline = time.monotonic() + 10
        while not any(d.get("text") == "SELECT 'live-1'" for _k, d in received):
            assert time.monotonic() < deadline, f"not tailed live: {received}"
            time.sleep(0.02)
        assert reader.is_alive()  # still following the open session
        conn.execute("SELECT 'live-2'")
    finally:
        conn.close()
    reader.join(15)
    assert not reader.is_alive()  # the stream ends when the session is sealed
    kinds = [k for k, _d in received]
    assert kinds[0] == "session.start" and kinds[-2:] == ["session.end", "seal"]
    assert [d["seq"] for _k, d in received] == list(range(1, len(received) + 1))


def test_agent_acting_for_a_user_is_recorded_as_actor(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    gw = pg_gateway.gateway
    name = pg_gateway.add_connection(pg_scram).name
    user_token = pg_gateway.add_user("rec-hana")
    agent_token = pg_gateway.add_agent("rec-bot")
    record = gw.delegations.create(
        gw.authenticator.authenticate(user_token), "rec-bot", ttl=timedelta(minutes=10)
    )
    exchanged = gw.delegations.exchange(
        actor_token=agent_token, subject_token=record.id, subject_token_type=TOKEN_TYPE_DELEGATION
    )
    dsn = pg_gateway.dsn(name, token=exchanged.access_token, user="rec-hana")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 'on behalf'")
    row = pg_gateway.session(name)
    assert (row.identity_name, row.actor_name, row.auth_method) == (
        "rec-hana",
        "rec-bot",
        "delegated",
    )
    found = console.get("/api/v1/sessions", actor="rec-bot").json()["items"]
    assert [s["id"] for s in found] == [row.id]
    start = pg_gateway.events(row)[0]
    assert (start["identity_name"], start["actor_name"]) == ("rec-hana", "rec-bot")
