"""asyncpg (its own wire implementation, extended protocol only) through the gateway."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.fixtures.postgres_gateway import PgGateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn_name(pg_gateway: PgGateway, pg_scram: PgCluster) -> str:
    return pg_gateway.add_connection(pg_scram).name


async def connect(gw: PgGateway, name: str, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=gw.port,
        user="admin",
        password=gw.admin_token,
        database=name,
        ssl=False,
        **kwargs,
    )


async def test_queries_prepared_and_executemany(pg_gateway: PgGateway, conn_name: str) -> None:
    conn = await connect(pg_gateway, conn_name)
    try:
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        await conn.execute("CREATE TEMP TABLE a (id int PRIMARY KEY, name text)")
        await conn.executemany("INSERT INTO a VALUES ($1, $2)", [(i, f"n{i}") for i in range(200)])
        assert await conn.fetchval("SELECT count(*) FROM a") == 200
        stmt = await conn.prepare("SELECT name FROM a WHERE id = $1")
        assert [await stmt.fetchval(i) for i in (1, 2, 3)] == ["n1", "n2", "n3"]
        async with conn.transaction():
            await conn.execute("UPDATE a SET name = 'x' WHERE id = 1")
            cursor = await conn.cursor("SELECT id FROM a ORDER BY id")
            assert [r["id"] for r in await cursor.fetch(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO a VALUES (1, 'dup')")
        assert await conn.fetchval("SELECT name FROM a WHERE id = 1") == "x"
        copied = await conn.copy_records_to_table("a", records=[(1000, "c"), (1001, "d")])
        assert copied == "COPY 2"
        assert await conn.fetchval("SELECT count(*) FROM a") == 202
    finally:
        await conn.close()
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    inserts = [s for s in stmts if s["text"] == "INSERT INTO a VALUES ($1, $2)"]
    assert len(inserts) == 200 and all(s["status"] == "ok" for s in inserts)
    dup = [s for s in stmts if "'dup'" in (s["text"] or "")]
    assert [(s["status"], s["error"]) for s in dup] == [("error", "23505")]


async def test_startup_server_settings(pg_gateway: PgGateway, conn_name: str) -> None:
    conn = await connect(
        pg_gateway,
        conn_name,
        server_settings={"application_name": "apg", "DateStyle": "ISO, DMY", "search_path": "x"},
    )
    try:
        assert await conn.fetchval("SHOW application_name") == "apg"
        assert await conn.fetchval("SHOW DateStyle") == "ISO, DMY"
        assert await conn.fetchval("SHOW search_path") == "x"
        assert conn.get_settings().DateStyle == "ISO, DMY"
    finally:
        await conn.close()


async def test_timeout_cancels_and_session_survives(pg_gateway: PgGateway, conn_name: str) -> None:
    conn = await connect(pg_gateway, conn_name)
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.5)
        assert time.monotonic() - started < 10
        assert await conn.fetchval("SELECT 'alive'") == "alive"
    finally:
        await conn.close()
    row = pg_gateway.session(conn_name)
    sleeps = [s for s in pg_gateway.statements(row) if "pg_sleep" in (s["text"] or "")]
    assert sleeps[0]["error"] == "57014"


async def test_listen_notify(pg_gateway: PgGateway, conn_name: str) -> None:
    listener = await connect(pg_gateway, conn_name)
    sender = await connect(pg_gateway, conn_name)
    try:
        got: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
        await listener.add_listener(
            "ch", lambda _c, pid, ch, payload: got.put_nowait((pid, ch, payload))
        )
        await sender.execute("NOTIFY ch, 'p1'")
        pid, channel, payload = await asyncio.wait_for(got.get(), 5)
        assert (channel, payload) == ("ch", "p1")
        assert pid == sender.get_server_pid() == await sender.fetchval("SELECT pg_backend_pid()")
    finally:
        await listener.close()
        await sender.close()


async def test_refusals_carry_sqlstates(pg_gateway: PgGateway, conn_name: str) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError) as wrong:
        await asyncpg.connect(
            host="127.0.0.1", port=pg_gateway.port, user="admin", password="jgt_nope",
            database=conn_name, ssl=False,
        )  # fmt: skip
    assert wrong.value.sqlstate == "28P01"
    with pytest.raises(asyncpg.InvalidCatalogNameError) as unknown:
        await connect(pg_gateway, "no-such-connection")
    assert unknown.value.sqlstate == "3D000"
