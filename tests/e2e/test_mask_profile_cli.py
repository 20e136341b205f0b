"""`jitgate connections add … --mask-profile pii` on a real `jitgate serve`: psql through
the gateway gets the connection's rows masked (SELECT and COPY TO STDOUT); the same data
through a connection added without the option comes back as stored."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_postgres_gateway import client_env
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER
from tests.support.pgcluster import PgCluster
from tests.support.served import Served, serving

pytestmark = pytest.mark.postgres

EMAIL, SSN, CARD = "ana.lima@example.com", "123-45-6789", "4111 1111 1111 1111"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    with serving(tmp_path / "data") as running:
        yield running


def add(served: Served, name: str, cluster: PgCluster, *extra: str) -> str:
    done = served.cli("connections", "add", name, "--type", "postgres", "--host", "127.0.0.1",
                      "--port", str(cluster.port), "--database", "app", "--username",
                      APP_USER, "--password-stdin", "--tls-mode", "disable", *extra,
                      stdin=APP_PASSWORD + "\n")  # fmt: skip
    return done.stdout + done.stderr


def psql(port: int, name: str, token: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         f"host=127.0.0.1 port={port} dbname={name} user=admin sslmode=require", "-c", sql],
        capture_output=True, text=True, env=client_env(token), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_connection_added_with_a_mask_profile_masks_psql_results(
    served: tuple[Served, int], pg_scram: PgCluster
) -> None:
    gw, port = served
    pg_scram.psql(
        "DROP TABLE IF EXISTS cli_customers; "
        "CREATE TABLE cli_customers (id int, email text, ssn text, note text); "
        f"INSERT INTO cli_customers VALUES (1, '{EMAIL}', '{SSN}', 'card {CARD} on file'); "
        f"ALTER TABLE cli_customers OWNER TO {APP_USER}",
        dbname="app",
    )
    add(gw, "masked-db", pg_scram, "--mask-profile", "pii")
    add(gw, "plain-db", pg_scram)
    shown = json.loads(gw.cli("connections", "show", "masked-db", "-o", "json").stdout)
    assert shown["options"]["mask_profile"] == "pii"

    select = "SELECT id, email, ssn, note FROM cli_customers"
    plain = psql(port, "plain-db", gw.admin_token, select)
    assert plain == f"1|{EMAIL}|{SSN}|card {CARD} on file\n"  # the data as stored

    masked = psql(port, "masked-db", gw.admin_token, select)
    assert masked.startswith("1|") and masked.count("|") == 3, masked
    assert EMAIL not in masked and SSN not in masked and CARD not in masked
    assert "[REDACTED:email]" in masked and "[REDACTED:ssn]" in masked
    assert "1111" in masked.split("|")[3]  # cards: partial, the last four kept
    copied = psql(port, "masked-db", gw.admin_token,
                  "COPY (SELECT email, ssn FROM cli_customers) TO STDOUT")  # fmt: skip
    assert copied == "[REDACTED:email]\t[REDACTED:ssn]\n"
