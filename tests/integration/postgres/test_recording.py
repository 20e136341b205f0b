"""The session recording, and the secrets that must never show up anywhere."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg import errors

from jitgate.recording.log import verify_chain
from tests.fixtures.postgres_gateway import APP_PASSWORD, PgGateway
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, bind, execute, parse, query, sync

pytestmark = pytest.mark.postgres


def test_every_statement_in_order_with_its_outcome(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    with psycopg.connect(pg_gateway.dsn(name, application_name="recorded"), autocommit=True) as c:
        c.execute("CREATE TEMP TABLE r (x int)")
        c.execute("INSERT INTO r SELECT generate_series(1, 5)")
        assert len(c.execute("SELECT * FROM r").fetchall()) == 5
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1/0")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("DROP TABLE r")
        c.execute("SELECT x FROM r WHERE x = %s", [3])
        c.execute("UPDATE r SET x = x + 1 WHERE x > 2; SELECT 1")
    row = pg_gateway.session(name)
    events = pg_gateway.events(row)
    assert events[0]["type"] == "session.start" and events[-2]["type"] == "session.end"
    assert events[-1]["type"] == "seal"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    start = events[0]
    assert (start["identity_name"], start["connection_name"], start["client_program"]) == (
        "admin",
        name,
        "recorded",
    )
    stmts = pg_gateway.statements(row)
    assert [
        (s["text"], s["decision"], s["via"], s["status"], s["rows"], s["error"]) for s in stmts
    ] == [
        ("CREATE TEMP TABLE r (x int)", "allow", "query", "ok", None, None),
        ("INSERT INTO r SELECT generate_series(1, 5)", "allow", "query", "ok", 5, None),
        ("SELECT * FROM r", "allow", "query", "ok", 5, None),
        ("SELECT 1/0", "allow", "query", "error", None, "22012"),
        ("DROP TABLE r", "deny", "query", "denied", None, "42501"),
        ("SELECT x FROM r WHERE x = $1", "allow", "extended", "ok", 1, None),
        ("UPDATE r SET x = x + 1 WHERE x > 2", "allow", "query", "ok", 3, None),
        ("SELECT 1", "allow", "query", "ok", 1, None),
    ]
    for s in stmts:
        assert s["duration_ms"] is not None and s["duration_ms"] >= 0
        assert s["seq"] < s["result_seq"]
    denied = next(e for e in events if e["type"] == "request" and e["decision"] == "deny")
    assert denied["reason"] == "DROP TABLE is not allowed on production connections"
    assert denied["policies"] == ["deny-drop-truncate-on-prod"]
    end = events[-2]
    assert end["counts"] == {"allow": 7, "deny": 1, "error": 1}
    assert row.counts == end["counts"] and row.bytes_in > 0 and row.bytes_out > 0
    pg_gateway.verify(row)


def test_tampering_breaks_the_chain(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 'evidence'")
    row = pg_gateway.session(name)
    path = pg_gateway.recording_path(row)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines).replace(b"evidence", b"innocent"))
    ok, line, _why = verify_chain(path, row.id)
    assert not ok and line == 2
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    assert not verify_chain(path, row.id)[0]


def test_raw_extended_protocol_is_attributed(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    """Portals, named statements, Close and errors before Sync, as the recording sees them."""
    name = pg_gateway.add_connection(pg_scram).name
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    try:
        client.send(
            parse("SELECT generate_series(1, $1::int)", "gen")
            + bind("p1", "gen", (b"3",))
            + bind("p2", "gen", (b"2",))
            + execute("p2")
            + execute("p1", max_rows=2)
            + execute("p1")
            + sync()
        )
        codes = [m.code for m in client.until_ready()]
        assert codes == [b"1", b"2", b"2", b"D", b"D", b"C", b"D", b"D", b"s", b"D", b"C", b"Z"]
        client.send(
            bind("p3", "gen", (b"x",))
            + execute("p3")
            + bind("", "gen", (b"1",))
            + execute()
            + sync()
        )
        codes = [m.code for m in client.until_ready()]
        assert codes == [b"E", b"Z"]
        client.send(query("SELECT 'after'"))
        client.until_ready()
    finally:
        client.close()
    stmts = pg_gateway.statements(pg_gateway.session(name))
    assert [(s["status"], s["rows"], s["tag"]) for s in stmts] == [
        ("ok", 2, "SELECT 2"),
        ("ok", 2, "(suspended)"),
        ("ok", 1, "SELECT 1"),
        ("skipped", None, None),  # its Bind failed
        ("skipped", None, None),  # after an error, up to Sync
        ("ok", 1, "SELECT 1"),
    ]


def test_credentials_never_reach_the_client_logs_or_recordings(
    pg_gateway: PgGateway,
    pg_password: PgCluster,
    pg_scram: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = pg_gateway.add_user()
    seen = bytearray()
    for cluster in (pg_password, pg_scram):  # cleartext and SCRAM upstream authentication
        name = pg_gateway.add_connection(cluster).name
        client = WireClient.connect(pg_gateway.port, name, token, user="someone")
        try:
            client.send(
                query("SELECT current_setting('application_name'), current_user; SELECT 1/0")
            )
            client.until_ready()
            client.send(query("SHOW ALL"))
            client.until_ready()
            client.send(query("DROP DATABASE app"))
            client.until_ready()
        finally:
            seen += client.received
            client.close()
        bad = pg_gateway.add_connection(cluster, password=APP_PASSWORD + "-wrong").name
        with pytest.raises(ConnectionRefusedError) as refused:
            WireClient.connect(pg_gateway.port, bad, token)
        seen += str(refused.value).encode()
        pg_gateway.session(name)
        pg_gateway.session(bad)
    assert b"app" in seen and b"division by zero" in seen
    assert APP_PASSWORD.encode() not in seen
    assert APP_PASSWORD not in caplog.text and token not in caplog.text
    for path in pg_gateway.gateway.paths.recordings.rglob("*.jsonl"):
        content = path.read_text()
        assert APP_PASSWORD not in content and token not in content
        assert pg_gateway.admin_token not in content


def test_fsync_per_request_puts_each_request_on_disk_before_it_runs(
    pg_gateway: PgGateway, pg_scram: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``recording_fsync: request``: before the upstream sees a statement, its event has
    been written and fdatasync'ed. (Watching the real fdatasync calls is the only way to
    see it: a disk flush leaves no other trace a test can observe.)"""
    import jitgate.recording.log as event_log

    name = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(name, options={"recording_fsync": "request"})
    synced: list[bytes] = []
    real = event_log.os.fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            synced.append(f.read().splitlines()[-1])  # the last line on disk when synced

    monkeypatch.setattr(event_log.os, "fdatasync", fdatasync)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        for i in range(3):
            conn.execute(f"SELECT {i} AS fsynced")
    requests = [line for line in synced if b'"type":"request"' in line]
    assert [b"SELECT %d AS fsynced" % i in line for i, line in enumerate(requests)] == [True] * 3


def test_a_result_is_on_disk_before_the_client_sees_it(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    """Read the recording the moment each answer arrives: its result event is there
    already (not written later by a timer), so a recording never misses a result the
    client saw."""
    import json

    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        path = pg_gateway.recording_path(pg_gateway.session(name, ended=False))

        def last_result() -> tuple[str | None, dict[str, object]]:
            events = [json.loads(line) for line in path.read_text().splitlines()]
            texts = {e["request"]: e["text"] for e in events if e["type"] == "request"}
            result = [e for e in events if e["type"] == "result"][-1]
            return texts.get(result["request"]), result

        for i in range(5):
            conn.execute(f"SELECT {i} AS seen")
            text, result = last_result()
            assert (text, result["status"], result["rows"]) == (f"SELECT {i} AS seen", "ok", 1)
            conn.execute("SELECT %s::int AS bound", [i])  # extended protocol
            text, result = last_result()
            assert (text, result["status"]) == ("SELECT $1::int AS bound", "ok")
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        text, result = last_result()
        assert (text, result["status"], result["error"]) == (
            "SELECT 1/0",
            "error",
            {"sqlstate": "22012", "message": "division by zero"},
        )
