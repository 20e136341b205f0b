"""Fail closed when the policy store is down: `jitgate serve` keeps its policies in a real
PostgreSQL store, that store is stopped under a live psycopg session, and each statement
is refused with SQLSTATE 42501 and a clear message while the session stays open; once the
store is back, the same session's statements run again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.pgcluster import PgCluster
from tests.support.served import start_gateway, stop, wait_ready


def _pg_ctl(cluster: PgCluster, *args: str) -> None:
    cluster._cmd(
        str(cluster.bindir / "pg_ctl"), "-D", str(cluster.datadir), "-w", "-t", "60", *args
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    upstream = PgCluster(auth="scram-sha-256").start()
    store = PgCluster(auth="scram-sha-256").start()
    upstream.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 3)")
    data_dir = tmp_path / "data"
    proc = start_gateway(data_dir, extra_config=f"database_url: {store.url()}\n")
    try:
        api = wait_ready(proc, data_dir)
        pg_port = int(
            json.loads((data_dir / "serve.json").read_text())["listeners"]["postgres"].rsplit(
                ":", 1
            )[1]
        )
        headers = {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}
        httpx.post(
            api + "/api/v1/connections",
            headers=headers,
            json={
                "name": "db",
                "type": "postgres",
                "host": "127.0.0.1",
                "port": upstream.port,
                "database": "postgres",
                "username": upstream.superuser,
                "password": upstream.password,
                "tls_mode": "disable",
            },
        ).raise_for_status()
        httpx.post(
            api + "/api/v1/users", headers=headers, json={"name": "alice"}
        ).raise_for_status()
        token = httpx.post(
            api + "/api/v1/tokens", headers=headers, json={"user": "alice", "name": "t"}
        ).json()["token"]
        yield {"proc": proc, "port": pg_port, "token": token, "store": store}
    finally:
        if proc.poll() is None:
            stop(proc)
        store.stop()
        upstream.stop()


def test_statements_are_refused_with_42501_while_the_policy_store_is_down(
    served: dict[str, Any],
) -> None:
    store: PgCluster = served["store"]
    with psycopg.connect(
        host="127.0.0.1",
        port=served["port"],
        dbname="db",
        user="alice",
        password=served["token"],
        sslmode="disable",
        autocommit=True,
    ) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        _pg_ctl(store, "-m", "fast", "stop")
        time.sleep(1.5)  # past the policy reload interval: the store must be read again
        for sql in ("SELECT count(*) FROM t", "SELECT 1", "SELECT count(*) FROM t"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                conn.execute(sql)
            assert "policy store cannot be read" in str(refused.value)
        assert not conn.closed
        _pg_ctl(store, "-l", str(store.root / "server.log"), "start")
        deadline = time.monotonic() + 20
        while True:  # the store's connection pool reconnects
            try:
                assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
                break
            except psycopg.errors.InsufficientPrivilege:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert served["proc"].poll() is None
