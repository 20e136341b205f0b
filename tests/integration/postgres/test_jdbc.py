"""The PostgreSQL JDBC driver (pgjdbc, Debian's libpostgresql-jdbc-java) through the gateway."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.postgres_gateway import PgGateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).parent / "jdbc" / "JdbcClient.java"
STEPS = [
    "query", "batch", "prepared", "transactions", "denied", "failed transaction",
    "usable after rollback", "copy", "notify", "large object", "cancel", "usable after cancel",
    "syntax error",
]  # fmt: skip


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (shutil.which("javac") and shutil.which("java") and JAR.exists()):
        pytest.skip("needs a JDK and the libpostgresql-jdbc-java package")
    out = tmp_path_factory.mktemp("jdbc")
    subprocess.run(
        ["javac", "-cp", str(JAR), "-d", str(out), str(SOURCE)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_jdbc_client(
    pg_gateway: PgGateway, pg_scram: PgCluster, jdbc_classes: Path, sslmode: str
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    url = (
        f"jdbc:postgresql://127.0.0.1:{pg_gateway.port}/{name}"
        f"?sslmode={sslmode}&prepareThreshold=1&ApplicationName=jdbc-test"
        "&assumeMinServerVersion=12"  # sends application_name in the StartupMessage
    )
    done = subprocess.run(
        ["java", "-cp", f"{JAR}:{jdbc_classes}", "JdbcClient", url, "admin",
         pg_gateway.admin_token],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines == [f"ok {step}" for step in STEPS] + ["done"]
    row = pg_gateway.session(name)
    assert row.client_program == "jdbc-test"
    stmts = pg_gateway.statements(row)
    assert sum(1 for s in stmts if s["text"] == "INSERT INTO j VALUES ($1, $2)") == 50
    assert any(s["via"] == "function" and s["status"] == "ok" for s in stmts)
    assert [s["error"] for s in stmts if s["decision"] != "allow"] == ["42501", "42601"]
    pg_gateway.verify(row)
