"""SQL-level PREPARE / EXECUTE / DEALLOCATE: EXECUTE is decided as the statement it runs."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.fixtures.postgres_gateway import PgGateway, unique
from tests.integration.postgres.test_psql import psql
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, bind, execute, parse, query, sync

pytestmark = pytest.mark.postgres


@pytest.fixture
def items(pg_gateway: PgGateway, pg_scram: PgCluster) -> tuple[str, str]:
    """A connection, and its table holding 1, 2, 3."""
    name = pg_gateway.add_connection(pg_scram).name
    table = name.replace("-", "_")
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (x int)")
        conn.execute(f"INSERT INTO {table} VALUES (1), (2), (3)")
    return name, table


def count(conn: psycopg.Connection[tuple[object, ...]], table: str) -> object:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return row[0] if row else None


def test_execute_is_decided_as_the_prepared_delete(
    pg_gateway: PgGateway, items: tuple[str, str]
) -> None:
    name, t = items
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"PREPARE d AS DELETE FROM {t}")  # runs nothing: prepared
        with pytest.raises(errors.InsufficientPrivilege, match="DELETE without a WHERE"):
            conn.execute("EXECUTE d")  # held for review; nobody approves in 1 s
        with pytest.raises(errors.InsufficientPrivilege, match="DELETE without a WHERE"):
            conn.execute("EXPLAIN ANALYZE EXECUTE d")  # runs it too
        plan = conn.execute("EXPLAIN EXECUTE d").fetchall()  # plans it only
        assert any("Delete on" in str(line[0]) for line in plan)
        with pytest.raises(errors.InsufficientPrivilege, match="DELETE without a WHERE"):
            conn.execute("EXECUTE d", prepare=True)  # the same through Parse/Bind/Execute
        # A PREPARE that fails (the name is taken) leaves the name's meaning alone.
        with pytest.raises(errors.DuplicatePreparedStatement):
            conn.execute("PREPARE d AS SELECT 1")
        with pytest.raises(errors.InsufficientPrivilege, match="DELETE without a WHERE"):
            conn.execute("EXECUTE d")
        assert count(conn, t) == 3
        # Bounded writes and reads run as usual, parameters and all.
        conn.execute(f"PREPARE one (int) AS DELETE FROM {t} WHERE x = $1")
        conn.execute("EXECUTE one (3)")
        assert count(conn, t) == 2
        cur = conn.execute("PREPARE s AS SELECT 6 * 7; EXECUTE s")  # in one message
        assert cur.nextset() and cur.fetchone() == (42,)
        # DEALLOCATE drops the name; then d is free for a harmless statement.
        conn.execute("DEALLOCATE d")
        with pytest.raises(errors.InsufficientPrivilege) as unknown:
            conn.execute("EXECUTE d")
        assert unknown.value.diag.sqlstate == "42501"
        assert unknown.value.diag.message_primary == (
            'jitgate: prepared statement "d" was not prepared through the gateway in this '
            "session, so what EXECUTE would run is unknown"
        )
        conn.execute("PREPARE d AS SELECT 1")
        assert conn.execute("EXECUTE d").fetchone() == (1,)
        conn.execute("DISCARD ALL")
        with pytest.raises(errors.InsufficientPrivilege, match="not prepared through"):
            conn.execute("EXECUTE s")
        assert count(conn, t) == 2
    stmts = pg_gateway.statements(pg_gateway.session(name))
    executes = [(s["text"], s["decision"], s["status"], s["error"]) for s in stmts]
    assert executes[:10] == [
        (f"PREPARE d AS DELETE FROM {t}", "allow", "ok", None),
        ("EXECUTE d", "deny", "denied", "42501"),
        ("EXPLAIN ANALYZE EXECUTE d", "deny", "denied", "42501"),
        ("EXPLAIN EXECUTE d", "allow", "ok", None),
        ("EXECUTE d", "deny", "denied", "42501"),
        ("PREPARE d AS SELECT 1", "allow", "error", "42P05"),
        ("EXECUTE d", "deny", "denied", "42501"),
        (f"SELECT count(*) FROM {t}", "allow", "ok", None),
        (f"PREPARE one (int) AS DELETE FROM {t} WHERE x = $1", "allow", "ok", None),
        ("EXECUTE one (3)", "allow", "ok", None),
    ]


def test_create_table_as_execute_is_decided_as_the_prepared_select(
    pg_gateway: PgGateway, items: tuple[str, str]
) -> None:
    """CREATE TABLE t AS EXECUTE p reads what p reads: a policy that refuses reading a
    table refuses copying it through a statement prepared before the policy came."""
    name, t = items
    secrets = f"{t}_secrets"
    policy = unique("no-reads-of-secrets")
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {secrets} (s text)")
        conn.execute(f"INSERT INTO {secrets} VALUES ('hunter2')")
        conn.execute(f"PREPARE p AS SELECT * FROM {secrets}")
        conn.execute(f"PREPARE ok AS SELECT * FROM {t}")
        pg_gateway.gateway.policies.put(policy, (
            f'@id("{policy}") @reason("secrets are not to be read")\n'
            "forbid (principal, action, resource)\n"
            f'when {{ context.tables_read.contains("{secrets}") }};'
        ))  # fmt: skip
        try:
            with pytest.raises(errors.InsufficientPrivilege, match="not to be read") as refused:
                conn.execute(f"CREATE TABLE {t}_leak AS EXECUTE p")
            assert refused.value.diag.sqlstate == "42501"
            with pytest.raises(errors.InsufficientPrivilege, match="not to be read"):
                conn.execute(f"CREATE TABLE {t}_leak AS EXECUTE p", prepare=True)
            with pytest.raises(errors.InsufficientPrivilege, match="not to be read"):
                conn.execute(f"EXPLAIN ANALYZE CREATE TABLE {t}_leak AS EXECUTE p")
            # The session goes on; the table was never created.
            row = conn.execute("SELECT to_regclass(%s) IS NULL", (f"{t}_leak",)).fetchone()
            assert row == (True,)
            conn.execute(f"CREATE TABLE {t}_copy AS EXECUTE ok")
            assert count(conn, f"{t}_copy") == 3
        finally:
            pg_gateway.gateway.policies.delete(policy)
    requests = {
        e["text"]: e
        for e in pg_gateway.events(pg_gateway.session(name), "request")
        if "AS EXECUTE" in e["text"]
    }
    refused_event = requests[f"CREATE TABLE {t}_leak AS EXECUTE p"]
    assert (refused_event["decision"], refused_event["kind"], refused_event["tag"]) == (
        "deny",
        "ddl",
        "CREATE TABLE AS",
    )
    assert refused_event["tables_read"] == [secrets]
    assert refused_event["tables_written"] == [f"{t}_leak"]
    allowed = requests[f"CREATE TABLE {t}_copy AS EXECUTE ok"]
    assert (allowed["decision"], allowed["tables_read"]) == ("allow", [t])


def test_create_table_as_execute_of_an_unbounded_delete_is_refused_like_the_delete(
    pg_gateway: PgGateway, items: tuple[str, str]
) -> None:
    """A prepared SELECT whose WITH deletes every row runs it when CREATE TABLE AS
    executes it: that is a DELETE without a WHERE clause, held and refused unapproved."""
    name, t = items
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"PREPARE g AS WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d")
        with pytest.raises(errors.InsufficientPrivilege, match="without a WHERE"):
            conn.execute(f"CREATE TABLE {t}_gone AS EXECUTE g")  # nobody approves in 1 s
        with pytest.raises(errors.InsufficientPrivilege, match="not prepared through"):
            conn.execute(f"CREATE TABLE {t}_gone AS EXECUTE nosuch")
        assert count(conn, t) == 3


def test_execute_of_a_name_the_gateway_never_saw_fails_closed(
    pg_gateway: PgGateway, items: tuple[str, str]
) -> None:
    name, t = items
    done = psql(pg_gateway, name, "-c", "EXECUTE nosuch", check=False)
    assert done.returncode != 0
    assert 'prepared statement "nosuch" was not prepared through the gateway' in done.stderr
    # psql: the whole script in one session; the name exists only after PREPARE ran.
    done = psql(pg_gateway, name, stdin=f"PREPARE c AS SELECT count(*) FROM {t};\nEXECUTE c;\n")
    assert done.stdout.strip() == "3"


def test_sql_and_protocol_share_one_namespace(
    pg_gateway: PgGateway, items: tuple[str, str]
) -> None:
    """A statement prepared with SQL PREPARE and run by a protocol Bind is decided as it
    runs; one prepared with a Parse can be run with SQL EXECUTE."""
    name, t = items
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    try:
        client.send(query(f"PREPARE d AS DELETE FROM {t}"))
        assert [m.code for m in client.until_ready()] == [b"C", b"Z"]
        client.send(bind("", "d") + execute() + sync())  # held, nobody approves in 1 s
        answer = [m for m in client.until_ready() if m.code != b"N"]  # "waiting for …"
        assert [(m.code, m.sqlstate) for m in answer] == [
            (b"2", None),
            (b"E", "42501"),
            (b"Z", None),
        ]
        assert "DELETE without a WHERE clause needs approval" in answer[1].fields["M"]
        client.send(parse("SELECT 5", "five") + sync())
        assert [m.code for m in client.until_ready()] == [b"1", b"Z"]
        client.send(query("EXECUTE five"))
        answer = client.until_ready()
        assert [m.code for m in answer] == [b"T", b"D", b"C", b"Z"] and b"5" in answer[1].payload
        client.send(query("DEALLOCATE five"))
        client.until_ready()
        client.send(bind("", "five") + execute() + sync())
        assert [(m.code, m.sqlstate) for m in client.until_ready()] == [
            (b"E", "26000"),
            (b"Z", None),
        ]
        client.send(query(f"SELECT count(*) FROM {t}"))
        assert client.until_ready()[1].payload.endswith(b"3")
    finally:
        client.close()
