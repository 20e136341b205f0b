"""Refused statements: the client sees PostgreSQL's own behaviour around a native error."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import errors

from tests.fixtures.postgres_gateway import PgGateway, unique
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, bind, describe, execute, parse, query, sync

pytestmark = pytest.mark.postgres


@pytest.fixture
def prod(pg_gateway: PgGateway, pg_scram: PgCluster) -> str:
    """A connection tagged env=prod, with a table ``items`` holding 1, 2, 3."""
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    table = name.replace("-", "_")
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (x int)")
        conn.execute(f"INSERT INTO {table} VALUES (1), (2), (3)")
    return name


def table_of(name: str) -> str:
    return name.replace("-", "_")


def connect(gw: PgGateway, name: str, **kw: object) -> psycopg.Connection[tuple[object, ...]]:
    kw.setdefault("autocommit", True)
    return psycopg.connect(gw.dsn(name), **kw)  # type: ignore[arg-type]


def count(conn: psycopg.Connection[tuple[object, ...]], table: str) -> object:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return row[0] if row else None


def test_denied_outside_a_transaction(pg_gateway: PgGateway, prod: str) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as denied:
            conn.execute(f"DROP TABLE {t}")
        diag = denied.value.diag
        assert diag.sqlstate == "42501"
        assert (
            diag.message_primary == "jitgate: DROP TABLE is not allowed on production connections"
        )
        assert diag.message_detail == "Decided by deny-drop-truncate-on-prod."
        assert "jitgate-denied" not in str(denied.value)
        with pytest.raises(errors.InsufficientPrivilege, match=r"needs approval.*nobody approved"):
            conn.execute(f"DELETE FROM {t}")  # held for review; nobody approves in 1 s
        with pytest.raises(errors.InsufficientPrivilege, match="DROP TABLE"):
            conn.execute(f"DROP TABLE {t}", prepare=True)  # extended protocol, named
        assert count(conn, t) == 3
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    stmts = pg_gateway.statements(pg_gateway.session(prod))
    assert [(s["text"], s["decision"], s["status"], s["error"]) for s in stmts[-4:]] == [
        (f"DROP TABLE {t}", "deny", "denied", "42501"),
        (f"DELETE FROM {t}", "deny", "denied", "42501"),
        (f"DROP TABLE {t}", "deny", "denied", "42501"),
        (f"SELECT count(*) FROM {t}", "allow", "ok", None),
    ]


def test_denied_inside_a_transaction(pg_gateway: PgGateway, prod: str) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod, autocommit=False) as conn:
        conn.execute(f"INSERT INTO {t} VALUES (4)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"TRUNCATE {t}")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert count(conn, t) == 3
        conn.commit()
    stmts = pg_gateway.statements(pg_gateway.session(prod))
    kinds = [(s["text"], s["status"], s["error"]) for s in stmts[1:]]
    assert kinds[:4] == [
        (f"INSERT INTO {t} VALUES (4)", "ok", None),
        (f"TRUNCATE {t}", "denied", "42501"),
        ("SELECT 1", "error", "25P02"),
        ("ROLLBACK", "ok", None),
    ]


def test_denied_in_the_middle_of_a_multi_statement_query(
    pg_gateway: PgGateway, prod: str, pg_scram: PgCluster
) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                f"INSERT INTO {t} VALUES (10); DROP TABLE {t}; INSERT INTO {t} VALUES (11)"
            )
        assert count(conn, t) == 3  # the implicit transaction was rolled back
    # exactly what PostgreSQL does with an error in the same place
    with psycopg.connect(pg_scram.dsn("app"), autocommit=True) as direct:
        with pytest.raises(errors.DivisionByZero):
            direct.execute(f"INSERT INTO {t} VALUES (10); SELECT 1/0; INSERT INTO {t} VALUES (11)")
        assert count(direct, t) == 3
    stmts = pg_gateway.statements(pg_gateway.session(prod))
    # the INSERT completed, then the implicit transaction it ran in was rolled back
    assert [(s["status"], s["error"]) for s in stmts[-4:-1]] == [
        ("ok", None),
        ("denied", "42501"),
        ("skipped", None),
    ]


def test_multi_statement_with_explicit_commit_keeps_the_committed_part(
    pg_gateway: PgGateway, prod: str
) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"BEGIN; INSERT INTO {t} VALUES (20); COMMIT; TRUNCATE {t}")
        assert count(conn, t) == 4


def test_denied_in_a_pipeline(pg_gateway: PgGateway, prod: str, pg_scram: PgCluster) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.InsufficientPrivilege), conn.pipeline() as p:
            first = conn.execute(f"INSERT INTO {t} VALUES (%s) RETURNING x", [30])
            conn.execute(f"DROP TABLE {t}")
            conn.execute(f"INSERT INTO {t} VALUES (%s)", [31])
            p.sync()
        assert first.fetchone() == (30,)
        with conn.pipeline():  # the session is usable, pipelines too
            again = conn.execute("SELECT %s::int", [1])
        assert again.fetchone() == (1,)
        after = count(conn, t)
    with psycopg.connect(pg_scram.dsn("app"), autocommit=True) as direct:
        with pytest.raises(errors.DivisionByZero), direct.pipeline() as p:
            direct.execute(f"INSERT INTO {t} VALUES (%s)", [30])
            direct.execute("SELECT 1/0")
            direct.execute(f"INSERT INTO {t} VALUES (%s)", [31])
            p.sync()
        assert count(direct, t) == after == 3  # same implicit-transaction rollback


def test_denied_parse_in_the_raw_extended_protocol(pg_gateway: PgGateway, prod: str) -> None:
    """A refused Parse fails there; later messages are skipped up to Sync; the portal
    bound afterwards to the refused statement's name is not attributed to it."""
    t = table_of(prod)
    client = WireClient.connect(pg_gateway.port, prod, pg_gateway.admin_token)
    try:
        client.send(
            parse("SELECT 1", "ok_stmt")
            + sync()
            + parse(f"DROP TABLE {t}", "bad")
            + bind("", "bad")
            + describe(b"P")
            + execute()
            + sync()
            + bind("", "ok_stmt")
            + execute()
            + sync()
        )
        first = client.until_ready()
        assert [m.code for m in first] == [b"1", b"Z"]
        second = client.until_ready()
        assert [m.code for m in second] == [b"E", b"Z"]
        assert second[0].sqlstate == "42501" and "DROP TABLE" in second[0].fields["M"]
        third = client.until_ready()
        assert [m.code for m in third] == [b"2", b"D", b"C", b"Z"]
        # Bind to the refused name: PostgreSQL says it does not exist
        client.send(bind("", "bad") + execute() + sync())
        fourth = client.until_ready()
        assert [m.code for m in fourth] == [b"E", b"Z"] and fourth[0].sqlstate == "26000"
        client.send(query("SELECT 2"))
        assert [m.code for m in client.until_ready()] == [b"T", b"D", b"C", b"Z"]
    finally:
        client.close()
    stmts = pg_gateway.statements(pg_gateway.session(prod))
    assert [(s["text"], s["status"]) for s in stmts] == [
        (f"DROP TABLE {t}", "denied"),
        ("SELECT 1", "ok"),
        ("SELECT 2", "ok"),
    ]


def test_syntax_errors_are_42601(pg_gateway: PgGateway, prod: str) -> None:
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.SyntaxError) as simple:
            conn.execute("SELEC 1")
        assert simple.value.diag.sqlstate == "42601"
        assert 'syntax error at or near "SELEC"' in str(simple.value)
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELECT FROM WHERE %s", [1])
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELECT 1; SELEC 2")
        assert conn.execute("SELECT 'fine'").fetchone() == ("fine",)


def test_dangerous_functions_and_do_blocks(pg_gateway: PgGateway, prod: str) -> None:
    with connect(pg_gateway, prod) as conn:
        for sql in (
            "SELECT pg_read_file('/etc/passwd')",
            "DO $$BEGIN PERFORM 1; END$$",
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "ALTER SYSTEM SET work_mem = '1GB'",
            "SET ROLE postgres",
            "SELECT set_config('role', 'postgres', false)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)
        assert conn.execute("SELECT current_user").fetchone() == ("app",)


def test_large_denied_statement_and_unicode(pg_gateway: PgGateway, prod: str) -> None:
    t = table_of(prod)
    with connect(pg_gateway, prod) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"SELECT 'ünïcødé ☃ {'x' * 100_000}'; DROP TABLE {t}")
        assert conn.execute("SELECT 'ünïcødé'").fetchone() == ("ünïcødé",)


def test_prepared_statement_follows_a_policy_change_at_its_next_execute(
    pg_gateway: PgGateway, prod: str
) -> None:
    t = table_of(prod)
    sql = f"SELECT count(*) FROM {t}"
    with connect(pg_gateway, prod, autocommit=False) as conn:
        assert conn.execute(sql, prepare=True).fetchone() == (3,)  # Parse + Execute, named
        pg_gateway.gateway.policies.put(
            "no-reads-of-t",
            (
                '@id("no-reads-of-t") @reason("reads of this table are suspended")\n'
                "forbid (principal, action, resource)\n"
                f'when {{ context.tables_read.contains("{t}") }};'
            ),
        )
        try:
            conn.execute(f"INSERT INTO {t} VALUES (9)")
            with pytest.raises(errors.InsufficientPrivilege, match="reads of this table"):
                conn.execute(sql, prepare=True)  # Bind + Execute of the statement prepared
            # A real error upstream: the transaction is aborted, the INSERT never commits.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            conn.rollback()
        finally:
            pg_gateway.gateway.policies.delete("no-reads-of-t")
        assert conn.execute(sql, prepare=True).fetchone() == (3,)
        conn.rollback()
    stmts = pg_gateway.statements(pg_gateway.session(prod))
    assert [(s["text"], s["decision"], s["status"]) for s in stmts if s["text"] == sql] == [
        (sql, "allow", "ok"),
        (sql, "deny", "denied"),
        (sql, "allow", "ok"),
    ]


def test_an_approval_covers_one_execute_of_a_prepared_statement(
    pg_gateway: PgGateway, prod: str
) -> None:
    """Approving a held statement must not approve every later run of the same
    prepared statement (psycopg prepares a query after a few runs)."""
    t = table_of(prod)
    access = pg_gateway.gateway.access
    approver_token = pg_gateway.add_user(groups=("approvers",))  # returns its token
    approved: list[str] = []

    def approve_next() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = [r for r in access.list_requests(status="pending") if r.id not in approved]
            if pending:
                who = pg_gateway.gateway.authenticator.authenticate(approver_token)
                access.approve(who, pending[0].id)
                approved.append(pending[0].id)
                return
            time.sleep(0.02)

    with connect(pg_gateway, prod) as conn:
        for _ in range(2):
            helper = threading.Thread(target=approve_next)
            helper.start()
            conn.execute(f"DELETE FROM {t}", prepare=True)  # held, approved, runs
            helper.join()
        with pytest.raises(errors.InsufficientPrivilege, match="nobody approved"):
            conn.execute(f"DELETE FROM {t}", prepare=True)  # nobody approves this one
    assert len(approved) == 2


def test_an_agent_is_not_held_and_its_approval_is_for_those_parameter_values(
    pg_gateway: PgGateway, prod: str
) -> None:
    """Agents are not made to wait: the statement fails at once naming the request; once
    approved, that statement with the *same parameter values* runs once — other values
    ask again."""
    import re

    t = table_of(prod)
    access = pg_gateway.gateway.access
    agent = pg_gateway.add_agent()
    approver = pg_gateway.gateway.authenticator.authenticate(
        pg_gateway.add_user(groups=("approvers",))
    )
    update = f"UPDATE {t} SET x = %s"  # no WHERE: review (default pack)

    def refused(conn: psycopg.Connection[tuple[object, ...]], value: int) -> str:
        started = time.monotonic()
        with pytest.raises(errors.InsufficientPrivilege) as denied:
            conn.execute(update, (value,))
        assert time.monotonic() - started < 2  # not held
        found = re.search(r"Approval requested as request ([0-9a-f-]{36})", str(denied.value))
        assert found, str(denied.value)
        return found.group(1)

    with (
        connect(pg_gateway, prod) as admin,
        psycopg.connect(pg_gateway.dsn(prod, token=agent, user="agent"), autocommit=True) as conn,
    ):
        first = refused(conn, 5)
        request = access.get_request(first)
        assert request.status == "pending"
        assert request.statement == f"UPDATE {t} SET x = $1\n-- parameters: $1 = 5"
        access.approve(approver, first)
        second = refused(conn, 6)  # other values: a new request, the approval stays
        assert second != first
        conn.execute(update, (5,))  # the approved values: runs once
        assert admin.execute(f"SELECT DISTINCT x FROM {t}").fetchall() == [(5,)]
        third = refused(conn, 5)  # spent
        assert third not in (first, second)
    assert [g.uses for g in access.list_grants(active_only=False) if g.request_id == first] == [1]


def test_a_grant_given_or_revoked_mid_session_applies_to_the_next_statement(
    pg_gateway: PgGateway, prod: str
) -> None:
    """The decision cache is keyed by grant state: a grant approved while the session is
    open allows the very next statement, and its revocation refuses the one after."""
    t = table_of(prod)
    gw = pg_gateway.gateway
    policy = unique("deletes-need-grant")
    gw.policies.put(policy, (
        f'@id("{policy}") @reason("deletes need a just-in-time grant")\n'
        'forbid (principal, action == Action::"sql:delete", resource)\n'
        "unless { context.has_grant };"))  # fmt: skip
    try:
        user = unique("dev")
        token = pg_gateway.add_user(user)
        who = gw.authenticator.authenticate(token)
        approver = gw.authenticator.authenticate(pg_gateway.add_user(groups=("approvers",)))
        with psycopg.connect(pg_gateway.dsn(prod, token=token, user=user), autocommit=True) as conn:
            delete = f"DELETE FROM {t} WHERE x = %s"
            with pytest.raises(errors.InsufficientPrivilege, match="need a just-in-time grant"):
                conn.execute(delete, (1,))
            request = gw.access.create_request(who, prod, reason="cleanup")
            grant = gw.access.approve(approver, request.id).grant_id
            assert grant
            deadline = time.monotonic() + 5
            while True:  # the session hears of the grant at once (an in-process event)
                try:
                    conn.execute(delete, (1,))
                    break
                except errors.InsufficientPrivilege:
                    assert time.monotonic() < deadline, "the new grant was not applied"
                    time.sleep(0.05)
            assert count(conn, t) == 2
            gw.access.revoke_grant(approver, grant)
            deadline = time.monotonic() + 5
            while True:
                try:
                    conn.execute(delete, (2,))
                except errors.InsufficientPrivilege:
                    break
                assert time.monotonic() < deadline, "the revoked grant still applied"
                time.sleep(0.05)
            assert count(conn, t) == 2  # nothing deleted after the revocation
    finally:
        gw.policies.delete(policy)


def test_backslashes_are_refused_while_standard_conforming_strings_is_off(
    pg_gateway: PgGateway, prod: str
) -> None:
    """With standard_conforming_strings off the server reads ``\\'`` inside a string as a
    quote, which the gateway's parser (PostgreSQL's, with the setting on) does not: the
    same text would hide a DROP TABLE in what the gateway takes for a string. So while it
    is off, SQL containing a backslash is refused; without one both read it alike."""
    t = table_of(prod)
    sneaky = f"SELECT 'x\\' , ' ; DROP TABLE {t}; -- '"
    with connect(pg_gateway, prod) as conn:
        assert conn.execute(sneaky).fetchone() == ("x\\", " ; DROP TABLE " + t + "; -- ")
        conn.execute("SET standard_conforming_strings = off")
        with pytest.raises(errors.InsufficientPrivilege, match="standard_conforming_strings"):
            conn.execute(sneaky)
        assert count(conn, t) == 3  # still there
        assert conn.execute("SELECT 'plain text'").fetchone() == ("plain text",)
        conn.execute("SET standard_conforming_strings = on")
        assert conn.execute(sneaky).fetchone() == ("x\\", " ; DROP TABLE " + t + "; -- ")
    with psycopg.connect(
        pg_gateway.dsn(prod, options="-c standard_conforming_strings=off"), autocommit=True
    ) as conn:  # set at start-up: the same rule
        with pytest.raises(errors.InsufficientPrivilege, match="standard_conforming_strings"):
            conn.execute(sneaky)
        assert count(conn, t) == 3
