"""Finding sessions and events (identity, connection, decision, time, text) and following
an open session live over server-sent events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
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


def _sse(response: httpx.Response) -> Iterator[tuple[int, str, dict[str, object]]]:
    """``(id, event, data)`` of each server-sent event."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield int(fields["id"]), fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_live_tail_resumes_after_the_last_event_id(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    url = f"{console.url}/api/v1/sessions/{{}}/tail"
    auth = {"Authorization": f"Bearer {console.token}"}
    conn = psycopg.connect(pg_gateway.dsn(name), autocommit=True)
    try:
        row = pg_gateway.session(name, ended=False)
        conn.execute("SELECT 'before the break'")
        first: list[tuple[int, str, dict[str, object]]] = []
        with httpx.stream("GET", url.format(row.id), headers=auth, timeout=20) as response:
            for item in _sse(response):
                first.append(item)
                if item[2].get("text") == "SELECT 'before the break'":
                    break  # the client goes away (a dropped connection)
        last_id = first[-1][0]
        assert [i for i, _e, _d in first] == list(range(1, last_id + 1))
        conn.execute("SELECT 'during the break'")
        conn.execute("SELECT 'after the break'")
    finally:
        conn.close()
    pg_gateway.session(name)  # ended and sealed
    resumed = [
        (i, e, d)
        for i, e, d in _sse(
            httpx.get(url.format(row.id), headers={**auth, "Last-Event-ID": str(last_id)})
        )
    ]
    ids = [i for i, _e, _d in resumed]
    assert ids == list(range(last_id + 1, last_id + 1 + len(ids)))  # no repeat, no gap
    assert [d["seq"] for _i, _e, d in resumed] == ids
    texts = [d.get("text") for _i, e, d in resumed if e == "request"]
    assert texts == ["SELECT 'during the break'", "SELECT 'after the break'"]
    assert resumed[-1][1] == "seal"
    # `after` says the same as the header; a header that is no event id is refused.
    again = list(_sse(httpx.get(url.format(row.id), headers=auth, params={"after": last_id})))
    assert [i for i, _e, _d in again] == ids
    bad = httpx.get(url.format(row.id), headers={**auth, "Last-Event-ID": "not-a-number"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["code"] == "invalid_request"


def test_review_is_counted_and_found_and_results_name_their_columns(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console
) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    table = name.replace("-", "_")
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, label text)")
        conn.execute("SELECT 1 AS one, 'x' AS two")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="needs approval"):
            conn.execute(f"DELETE FROM {table}")  # review; nobody approves in time
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 2")
    reviewed, plain = sorted(pg_gateway.sessions(name), key=lambda s: s.started_at)
    assert reviewed.counts["review"] == 1 and reviewed.counts["deny"] == 1
    assert reviewed.counts["allow"] == 2 and "review" not in plain.counts

    found = console.get("/api/v1/sessions", connection=name, decision="review").json()
    assert [s["id"] for s in found["items"]] == [reviewed.id]
    assert found["items"][0]["counts"]["review"] == 1
    listed = console.cli("sessions", "list", "--connection", name, "--decision", "review",
                         "-o", "json", check=True)  # fmt: skip
    assert [s["id"] for s in json.loads(listed.stdout)] == [reviewed.id]
    bad = console.get("/api/v1/sessions", decision="maybe")
    assert bad.status_code == 400 and "allow, deny, review" in bad.text

    url = f"/api/v1/sessions/{reviewed.id}/events"
    review = console.get(url, decision="review").json()["items"]
    assert [(e["type"], e["text"], e["outcome"]) for e in review] == [
        ("review", f"DELETE FROM {table}", "deny")
    ]
    results = console.get(url, type="result").json()["items"]
    by_tag = {e.get("command_tag", "").split(" ")[0]: e for e in results}
    assert by_tag["SELECT"]["columns"] == ["one", "two"] and by_tag["SELECT"]["rows"] == 1
    assert "columns" not in by_tag["CREATE"]  # no rows, no columns


def test_text_search_says_what_it_scanned_and_goes_on_with_a_cursor(
    pg_gateway: PgGateway, pg_scram: PgCluster, console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jitgate.api.routes import sessions as routes

    name = pg_gateway.add_connection(pg_scram).name
    for text in ("needle-old", "hay", "hay", "hay", "hay"):
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            conn.execute(f"SELECT '{text}'")
    oldest = min(pg_gateway.sessions(name), key=lambda s: s.started_at)
    monkeypatch.setattr(routes, "SEARCH_WINDOW", 3)
    page = console.get("/api/v1/sessions", connection=name, q="needle-old").json()
    assert page["items"] == [] and page["scanned"] == 3 and page["truncated"] is True
    assert page["next_cursor"]
    more = console.get(
        "/api/v1/sessions", connection=name, q="needle-old", cursor=page["next_cursor"]
    ).json()
    assert [s["id"] for s in more["items"]] == [oldest.id]
    assert more["scanned"] == 2 and more["truncated"] is False and more["next_cursor"] is None
    # The CLI follows the cursor through the windows.
    listed = console.cli("sessions", "list", "--connection", name, "--search", "needle-old",
                         "-o", "json", check=True)  # fmt: skip
    assert [s["id"] for s in json.loads(listed.stdout)] == [oldest.id]
