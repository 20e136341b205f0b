"""psql, the reference client, against the in-process gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.postgres_gateway import PgGateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def psql(
    gw: PgGateway,
    name: str,
    *args: str,
    sslmode: str = "disable",
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "PGPASSWORD": gw.admin_token,
        "PGSSLMODE": sslmode,
        "PGCONNECT_TIMEOUT": "10",
        **(env or {}),
    }
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(gw.port), "-U", "admin", "-d", name, *args]  # fmt: skip
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=environment, timeout=60
    )
    if check and done.returncode != 0:
        raise AssertionError(f"psql failed ({done.returncode}): {done.stderr}")
    return done


@pytest.fixture
def conn_name(pg_gateway: PgGateway, pg_scram: PgCluster) -> str:
    return pg_gateway.add_connection(pg_scram).name


@pytest.mark.parametrize("sslmode", ["require", "disable"])
def test_psql_queries(pg_gateway: PgGateway, conn_name: str, sslmode: str) -> None:
    out = psql(
        pg_gateway, conn_name, "-c",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "-c", "SELECT 6 * 7",
        sslmode=sslmode,
        env={"PGAPPNAME": "psql-test", "PGOPTIONS": "-c search_path=pg_catalog"},
    )  # fmt: skip
    # the upstream leg is plain (tls_mode disable) whatever the client leg uses
    assert out.stdout.split() == ["f", "42"]
    env = {"PGAPPNAME": "psql-test", "PGOPTIONS": "-c search_path=pg_catalog"}
    out = psql(pg_gateway, conn_name, "-c", "SHOW application_name; SHOW search_path", env=env)
    assert out.stdout.split() == ["psql-test", "pg_catalog"]


def test_psql_script_with_errors_and_transactions(pg_gateway: PgGateway, conn_name: str) -> None:
    script = """
CREATE TEMP TABLE s (x int);
BEGIN;
INSERT INTO s VALUES (1);
COMMIT;
BEGIN;
INSERT INTO s VALUES (2);
ROLLBACK;
SELECT count(*) FROM s;
\\set ON_ERROR_STOP 0
SELECT 1/0;
SELECT 'still here', count(*) FROM s;
DROP TABLE s;
SELECT count(*) FROM s;
"""
    out = psql(pg_gateway, conn_name, "-f", "-", stdin=script, check=False)
    assert out.stdout.splitlines() == ["1", "still here|1"]
    assert "division by zero" in out.stderr
    # DROP on a non-prod connection is allowed; the temp table is dropped, then missing
    assert 'relation "s" does not exist' in out.stderr


def test_psql_copy(pg_gateway: PgGateway, conn_name: str, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("".join(f"{i},name {i}\n" for i in range(500)))
    target = tmp_path / "out.csv"
    psql(
        pg_gateway,
        conn_name,
        "-c", "CREATE TABLE IF NOT EXISTS psql_copy (id int, name text)",
        "-c", "TRUNCATE psql_copy",
        "-c", f"\\copy psql_copy FROM '{source}' WITH (FORMAT csv)",
        "-c", f"\\copy (SELECT * FROM psql_copy ORDER BY id) TO '{target}' WITH (FORMAT csv)",
    )  # fmt: skip
    assert target.read_text() == source.read_text()
    stmts = pg_gateway.statements(pg_gateway.session(conn_name))
    copies = [s for s in stmts if s["text"].startswith("COPY")]
    assert [(s["status"], s["rows"]) for s in copies] == [("ok", 500), ("ok", 500)]


def test_psql_large_objects_use_the_fast_path(
    pg_gateway: PgGateway, conn_name: str, tmp_path: Path
) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300_000))
    out = psql(pg_gateway, conn_name, "-c", f"\\lo_import '{blob}'", "-c", "\\echo :LASTOID")
    oid = out.stdout.split()[-1]
    assert oid.isdigit(), out.stdout
    exported = tmp_path / "exported.bin"
    psql(pg_gateway, conn_name, "-c", f"\\lo_export {oid} '{exported}'",
         "-c", f"\\lo_unlink {oid}")  # fmt: skip
    assert exported.read_bytes() == blob.read_bytes()
    rows = pg_gateway.sessions(conn_name)
    stmts = [s for row in rows for s in pg_gateway.statements(row)]
    fast = [s for s in stmts if s["via"] == "function"]
    names = {s["text"] for s in fast}
    assert {"<fast-path call of lo_open>", "<fast-path call of lowrite>",
            "<fast-path call of loread>", "<fast-path call of lo_close>"} <= names  # fmt: skip
    assert all(s["status"] == "ok" for s in fast)


def test_psql_sigint_cancels_the_query(pg_gateway: PgGateway, conn_name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=pg_gateway.admin_token, PGSSLMODE="disable")
    proc = subprocess.Popen(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(pg_gateway.port), "-U", "admin",
         "-d", conn_name, "-c", "SELECT pg_sleep(30)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not any(
            "pg_sleep" in (s["text"] or "")
            for row in pg_gateway.sessions(conn_name)
            for s in pg_gateway.statements(row)
        ):
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.05)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "canceling statement due to user request" in err
    row = pg_gateway.session(conn_name)
    assert pg_gateway.statements(row)[-1]["error"] == "57014"


def test_psql_denied_and_wrong_password(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"env": "prod"}).name
    out = psql(pg_gateway, name, "-c", "TRUNCATE pg_class", check=False)
    assert out.returncode == 1
    assert "ERROR:  jitgate: TRUNCATE TABLE is not allowed on production connections" in out.stderr
    assert "DETAIL:  Decided by deny-drop-truncate-on-prod." in out.stderr
    out = psql(pg_gateway, name, "-c", "SELECT 1", env={"PGPASSWORD": "jgt_wrong"}, check=False)
    assert out.returncode == 2
    assert 'password authentication failed for user "admin"' in out.stderr
    out = psql(pg_gateway, name, "-c", "SELEC 1", check=False)
    assert 'ERROR:  syntax error at or near "SELEC"' in out.stderr
