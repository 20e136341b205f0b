"""Extended protocol: a Bind, Execute or Describe naming what does not exist is answered
in the protocol (26000 / 34000), and the session goes on after Sync."""

from __future__ import annotations

import pytest

from tests.fixtures.postgres_gateway import PgGateway
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, bind, describe, execute, parse, query, sync

pytestmark = pytest.mark.postgres


def test_unknown_statement_and_portal_names(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    try:
        client.send(bind("", "nope") + execute() + sync())
        answer = client.until_ready()
        assert [m.code for m in answer] == [b"E", b"Z"]
        assert answer[0].sqlstate == "26000"
        assert answer[0].fields["M"] == 'prepared statement "nope" does not exist'
        client.send(execute("nop") + sync())
        answer = client.until_ready()
        assert [(m.code, m.sqlstate) for m in answer] == [(b"E", "34000"), (b"Z", None)]
        assert answer[0].fields["M"] == 'portal "nop" does not exist'
        client.send(describe(b"P", "nop") + sync())
        assert [(m.code, m.sqlstate) for m in client.until_ready()] == [
            (b"E", "34000"),
            (b"Z", None),
        ]
        client.send(describe(b"S", "nope") + sync())
        assert [(m.code, m.sqlstate) for m in client.until_ready()] == [
            (b"E", "26000"),
            (b"Z", None),
        ]
        # Inside a pipeline: what follows the error up to Sync is skipped, then all is well.
        client.send(
            parse("SELECT 1", "s1") + bind("p1", "s1") + execute("nop") + execute("p1") + sync()
            + bind("", "s1") + execute() + sync()
        )  # fmt: skip
        first = client.until_ready()
        assert [(m.code, m.sqlstate) for m in first] == [
            (b"1", None),
            (b"2", None),
            (b"E", "34000"),
            (b"Z", None),
        ]
        assert [m.code for m in client.until_ready()] == [b"2", b"D", b"C", b"Z"]
        client.send(query("SELECT 2"))
        assert [m.code for m in client.until_ready()] == [b"T", b"D", b"C", b"Z"]
    finally:
        client.close()
    stmts = pg_gateway.statements(pg_gateway.session(name))
    assert [(s["text"], s["status"]) for s in stmts] == [
        ("SELECT 1", "skipped"),
        ("SELECT 1", "ok"),
        ("SELECT 2", "ok"),
    ]
