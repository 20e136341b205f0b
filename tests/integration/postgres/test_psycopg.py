"""psycopg 3 (libpq) through the gateway: what an application sees, statement by statement."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg import errors, sql

from tests.fixtures.postgres_gateway import PgGateway
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn_name(pg_gateway: PgGateway, pg_scram: PgCluster) -> str:
    return pg_gateway.add_connection(pg_scram).name


def connect(gw: PgGateway, name: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(gw.dsn(name), **kwargs)  # type: ignore[arg-type]


def test_queries_and_multi_statement(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("app", "app")
        cur = conn.execute(
            "CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1), (2), (3); SELECT sum(x) FROM t"
        )
        assert cur.statusmessage == "CREATE TABLE"
        assert cur.nextset() and cur.rowcount == 3
        assert cur.nextset() and cur.fetchone() == (6,)
        assert conn.execute("SELECT x FROM t WHERE x > %s ORDER BY x", [1]).fetchall() == [
            (2,),
            (3,),
        ]
        assert conn.execute("SELECT 'héllo ☃'").fetchone() == ("héllo ☃",)
        conn.execute("")  # an empty query is answered with EmptyQueryResponse
    row = pg_gateway.session(conn_name)
    stmts = pg_gateway.statements(row)
    assert [s["text"] for s in stmts] == [
        "SELECT current_user, current_database()",
        "CREATE TEMP TABLE t (x int)",
        "INSERT INTO t VALUES (1), (2), (3)",
        "SELECT sum(x) FROM t",
        "SELECT x FROM t WHERE x > $1 ORDER BY x",
        "SELECT 'héllo ☃'",
        "",
    ]
    assert all(s["decision"] == "allow" and s["status"] == "ok" for s in stmts)
    assert [s["rows"] for s in stmts[:5]] == [1, None, 3, 1, 2]
    assert stmts[4]["via"] == "extended"
    assert row.end_reason == "client terminated"
    pg_gateway.verify(row)


def test_transactions_commit_and_rollback(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tx_items (x int)")
        conn.execute("DELETE FROM tx_items WHERE true = true AND x IS NOT NULL")
    with connect(pg_gateway, conn_name, autocommit=False) as conn:
        conn.execute("INSERT INTO tx_items VALUES (1)")
        conn.commit()
        conn.execute("INSERT INTO tx_items VALUES (2)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        with conn.transaction():
            conn.execute("INSERT INTO tx_items VALUES (3)")
            with conn.transaction():  # a savepoint
                conn.execute("INSERT INTO tx_items VALUES (4)")
        with pytest.raises(errors.DivisionByZero), conn.transaction():
            conn.execute("INSERT INTO tx_items VALUES (5)")
            conn.execute("SELECT 1 / 0")
        values = conn.execute("SELECT x FROM tx_items ORDER BY x").fetchall()
        assert values == [(1,), (3,), (4,)]
        conn.commit()


def test_prepared_statements_named_and_unnamed(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name, prepare_threshold=0) as conn:
        for i in range(4):  # prepare_threshold=0: named server-side statements at once
            assert conn.execute("SELECT %s::int + 1", [i]).fetchone() == (i + 1,)
        assert conn.execute("SELECT %s::text", ["unnamed"], prepare=False).fetchone() == (
            "unnamed",
        )
        conn.execute("PREPARE twice(int) AS SELECT $1 * 2")
        assert conn.execute("EXECUTE twice(21)").fetchone() == (42,)
        conn.execute("DEALLOCATE twice")
        names = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert names is not None and names[0] >= 1
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    prepared = [s for s in stmts if s["text"] == "SELECT $1::int + 1"]
    assert len(prepared) == 4 and all(s["status"] == "ok" and s["rows"] == 1 for s in prepared)


def test_pipeline_mode(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as conn:
        conn.execute("CREATE TEMP TABLE p (x int)")
        with conn.pipeline():
            curs = [conn.execute("INSERT INTO p VALUES (%s) RETURNING x", [i]) for i in range(50)]
            count = conn.execute("SELECT count(*) FROM p")
        assert [c.fetchone() for c in curs] == [(i,) for i in range(50)]
        assert count.fetchone() == (50,)
        with conn.pipeline(), conn.cursor() as cur:
            cur.executemany("INSERT INTO p VALUES (%s)", [(i,) for i in range(100)])
        assert conn.execute("SELECT count(*) FROM p").fetchone() == (150,)
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    assert sum(1 for s in stmts if s["text"] == "INSERT INTO p VALUES ($1)") == 100
    assert all(s["status"] == "ok" for s in stmts)
    assert stmts[-1]["rows"] == 1


def test_copy_from_and_to(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as conn:
        conn.execute("CREATE TEMP TABLE c (id int, name text)")
        with conn.cursor() as cur:
            with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                for i in range(1000):
                    copy.write_row((i, f"name {i}"))
            assert cur.rowcount == 1000
            with cur.copy("COPY (SELECT * FROM c ORDER BY id) TO STDOUT") as copy:
                rows = list(copy.rows())
            assert len(rows) == 1000 and rows[7] == ("7", "name 7")
        # a COPY that fails half-way leaves the session usable
        with (
            pytest.raises(errors.InvalidTextRepresentation),
            conn.cursor() as cur,
            cur.copy("COPY c (id, name) FROM STDIN") as copy,
        ):
            copy.write(b"1\tok\nnot-a-number\tbad\n")
        assert conn.execute("SELECT count(*) FROM c").fetchone() == (1000,)
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    copies = [s for s in stmts if s["text"].startswith("COPY")]
    assert [(s["status"], s["rows"]) for s in copies] == [
        ("ok", 1000),
        ("ok", 1000),
        ("error", None),
    ]
    assert stmts[-1]["status"] == "ok" and stmts[-1]["rows"] == 1


# libpq's blocking calls (PQgetResult in blocking mode, PQcancel) keep the GIL, and the
# gateway runs in this process: such calls run in a child process instead.
_EXTENDED_COPY = """
import sys, psycopg
from psycopg.pq import ExecStatus
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("CREATE TEMP TABLE ce (x int)")
    pgconn = conn.pgconn
    pgconn.send_query_params(b"COPY ce FROM STDIN", None)
    assert pgconn.get_result().status == ExecStatus.COPY_IN
    pgconn.put_copy_data(b"1\\n2\\n3\\n")
    pgconn.put_copy_end()
    statuses = []
    while (result := pgconn.get_result()) is not None:
        statuses.append(result.status)
    assert statuses == [ExecStatus.COMMAND_OK], statuses
    assert conn.execute("SELECT sum(x) FROM ce").fetchone() == (6,)
    assert conn.execute("SELECT 7").fetchone() == (7,)
print("ok")
"""


def test_copy_in_extended_protocol(pg_gateway: PgGateway, conn_name: str) -> None:
    """libpq sends a Sync after Execute *and* after CopyDone; the server ignores the first."""
    done = subprocess.run(
        [sys.executable, "-c", _EXTENDED_COPY, pg_gateway.dsn(conn_name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    assert [(s["text"], s["status"], s["rows"]) for s in stmts[1:]] == [
        ("COPY ce FROM STDIN", "ok", 3),
        ("SELECT sum(x) FROM ce", "ok", 1),
        ("SELECT 7", "ok", 1),
    ]


def test_listen_notify_pid_is_the_backend_pid(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as listener, connect(pg_gateway, conn_name) as sender:
        listener.execute("LISTEN jitgate_test")
        sender_pid = sender.execute("SELECT pg_backend_pid()").fetchone()
        assert sender_pid is not None and sender_pid[0] == sender.info.backend_pid
        sender.execute("NOTIFY jitgate_test, 'hello'")
        sender.execute("SELECT pg_notify('jitgate_test', 'again')")
        got = list(listener.notifies(timeout=5, stop_after=2))
        assert [(n.channel, n.payload, n.pid) for n in got] == [
            ("jitgate_test", "hello", sender_pid[0]),
            ("jitgate_test", "again", sender_pid[0]),
        ]


def test_notice_and_parameter_status(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        assert conn.execute("SELECT public.say('hi there')").fetchone() == ("hi there",)
        assert notices == ["said: hi there"]
        conn.execute("SET application_name = 'reported-app'")
        assert conn.info.parameter_status("application_name") == "reported-app"
        conn.execute("SET client_encoding TO 'LATIN1'")
        assert conn.info.parameter_status("client_encoding") == "LATIN1"
        assert conn.info.encoding == "iso8859-1"
        assert conn.execute("SELECT 'façade'").fetchone() == ("façade",)
        conn.execute("RESET client_encoding")
        with pytest.raises(errors.InsufficientPrivilege) as denied:
            conn.execute("DO $$BEGIN RAISE NOTICE 'x'; END$$")
        assert "DO block" in str(denied.value)


def test_startup_parameters_are_forwarded(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    pg_scram.psql("CREATE SCHEMA IF NOT EXISTS startup_x AUTHORIZATION app", dbname="app")
    with connect(
        pg_gateway,
        name,
        application_name="my-app",
        options="-c search_path=startup_x -c DateStyle=German,DMY",
    ) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("my-app",)
        assert conn.execute("SHOW search_path").fetchone() == ("startup_x",)
        assert conn.execute("SHOW DateStyle").fetchone() == ("German, DMY",)
        assert conn.info.parameter_status("DateStyle") == "German, DMY"
    row = pg_gateway.session(name)
    assert row.client_program == "my-app"


def test_role_cannot_be_set_at_startup(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    """SET ROLE is denied as a statement; the same through startup options is refused."""
    pg_scram.psql("DO $$BEGIN CREATE ROLE powerful; EXCEPTION WHEN duplicate_object THEN END$$")
    pg_scram.psql("GRANT powerful TO app")
    name = pg_gateway.add_connection(pg_scram).name
    with connect(pg_gateway, name) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SET ROLE powerful")
    for options in (
        "-c role=powerful",
        "-cRole=powerful",
        "-c search_path=public --role=powerful",
        "-c session-authorization=postgres",
    ):
        with pytest.raises(psycopg.OperationalError) as refused:
            connect(pg_gateway, name, options=options)
        assert "jitgate" in str(refused.value)
    with pytest.raises(ConnectionRefusedError) as raw:  # a bare startup parameter
        WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token, role="powerful")
    assert raw.value.args[0]["C"] == "42501"


def test_cancel(pg_gateway: PgGateway, conn_name: str) -> None:
    # cancel_safe() is libpq's non-blocking cancel (PQcancelCreate, over TLS when the
    # connection uses it); psql's SIGINT test covers the classic PQcancel.
    for sslmode in ("disable", "require"):
        with psycopg.connect(pg_gateway.dsn(conn_name, sslmode=sslmode), autocommit=True) as conn:
            timer = threading.Timer(0.5, conn.cancel_safe)
            timer.start()
            started = time.monotonic()
            with pytest.raises(errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(30)")
            assert time.monotonic() - started < 10
            timer.join()
            assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)
    checked = 0
    for row in pg_gateway.sessions(conn_name):
        if row.end_reason == "cancel request":
            continue
        checked += 1
        events = pg_gateway.events(row)
        assert any(e["type"] == "cancel" for e in events)
        sleeps = [s for s in pg_gateway.statements(row) if "pg_sleep" in (s["text"] or "")]
        assert sleeps and sleeps[0]["error"] == "57014"
    assert checked == 2  # one session per sslmode, each with its cancelled statement


def test_client_tls(pg_gateway: PgGateway, conn_name: str) -> None:
    with psycopg.connect(pg_gateway.dsn(conn_name, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(pg_gateway.dsn(conn_name, sslmode="disable")) as conn:
        assert not conn.pgconn.ssl_in_use


def test_server_cursor_and_large_result(pg_gateway: PgGateway, conn_name: str) -> None:
    with connect(pg_gateway, conn_name, autocommit=False) as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 1000
            cur.execute("SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            assert sum(1 for _ in cur) == 20000
        big = conn.execute("SELECT repeat('y', 5000000)").fetchone()
        assert big is not None and len(big[0]) == 5_000_000
        conn.commit()


async def test_async_connection(pg_gateway: PgGateway, conn_name: str) -> None:
    async with await psycopg.AsyncConnection.connect(
        pg_gateway.dsn(conn_name), autocommit=True
    ) as conn:
        cur = await conn.execute("SELECT %s::int * 2", [21])
        assert await cur.fetchone() == (42,)
        async with conn.pipeline():
            a = await conn.execute("SELECT 1")
            b = await conn.execute(sql.SQL("SELECT {}").format(sql.Literal("two")))
        assert await a.fetchone() == (1,) and await b.fetchone() == ("two",)
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE a (x int)")
            await conn.execute("INSERT INTO a VALUES (1)")
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute("ALTER SYSTEM SET work_mem = '1GB'")
        cur = await conn.execute("SELECT count(*) FROM a")
        assert await cur.fetchone() == (1,)
        sleeping = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.3)
        await conn.cancel_safe()
        with pytest.raises(errors.QueryCanceled):
            await asyncio.wait_for(sleeping, 10)
        cur = await conn.execute("SELECT 'after cancel'")
        assert await cur.fetchone() == ("after cancel",)
