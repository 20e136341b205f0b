"""Inline masking through the gateway, with real PostgreSQL and real clients.

Every client must still decode every column: masked text stays text, numeric columns get
NULL (or zeros), binary-format cells get NULL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, PgGateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

CARD = "4111 1111 1111 1111"
CARD_DIGITS = "4111111111111111"
SSN = "123-45-6789"
EMAIL = "alice.smith@example.com"
PHONE = "+1 415-555-0132"


@pytest.fixture
def customers(pg_gateway: PgGateway, pg_scram: PgCluster) -> str:
    """A connection masked with the ``pii`` profile, and a customers table on it."""
    name = pg_gateway.add_connection(pg_scram).name
    table = f"customers_{name.replace('-', '_')}"
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, name text, email text UNIQUE, "
            "ssn text, card varchar(40), notes text, balance numeric, data jsonb, raw bytea)"
        )
        conn.execute(
            f"INSERT INTO {table} VALUES (1, 'Alice', %s, %s, %s, %s, 12.50, %s, '\\x0102')",
            (EMAIL, SSN, CARD, f"call {PHONE} or mail {EMAIL}",
             json.dumps({"email": EMAIL, "card": CARD_DIGITS, "n": 7})),
        )
        conn.execute(f"INSERT INTO {table} (id, name, ssn) VALUES (2, 'Bob', 'n/a')")
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "pii"})
    return f"{name}:{table}"


def split(value: str) -> tuple[str, str]:
    name, table = value.split(":")
    return name, table


def assert_no_raw_values(values: object) -> None:
    text = repr(values)
    for raw in (CARD, CARD_DIGITS, SSN, EMAIL, "415-555-0132"):
        assert raw not in text, raw


def test_psycopg_text_results_are_masked_and_decode(pg_gateway: PgGateway,
                                                     customers: str) -> None:
    name, table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        row = conn.execute(f"SELECT * FROM {table} WHERE id = 1").fetchone()
    assert row is not None
    _id, person, email, ssn, card, notes, balance, data, raw = row
    assert person == "Alice" and str(balance) == "12.50" and raw == b"\x01\x02"
    assert_no_raw_values(row)
    assert email == "[REDACTED:email]" and ssn == "[REDACTED:ssn]"
    assert card == "**** **** **** 1111"  # cards keep their last four in the pii profile
    assert notes == "call [REDACTED:phone] or mail [REDACTED:email]"
    assert data == {"email": "[REDACTED:email]", "card": "************1111", "n": 7}


def test_simple_protocol_psql_and_counts_in_the_recording(pg_gateway: PgGateway,
                                                          customers: str) -> None:
    name, table = split(customers)
    out = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-A", "-t", "-c", f"SELECT email, ssn, card FROM "
         f"{table} ORDER BY id"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert_no_raw_values(out)
    assert "n/a" in out  # no SSN in it: left alone
    session = pg_gateway.session(name)
    events = pg_gateway.events(session)
    results = [e for e in events if e["type"] == "result" and e.get("masked_values")]
    assert results and results[-1]["masked_values"] >= 3
    end = events[-2]
    assert end["type"] == "session.end" and end["masked"].get("card", 0) >= 1
    pg_gateway.verify(session)


def test_binary_format_cells_become_null(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        row = cur.execute(f"SELECT id, email, balance FROM {table} WHERE id = 1").fetchone()
    assert row is not None and row[0] == 1
    assert row[1] is None  # a binary text cell cannot be rewritten safely: NULL
    assert str(row[2]) == "12.50"


def test_asyncpg_decodes_every_column(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(host="127.0.0.1", port=pg_gateway.port, database=name,
                                     user="admin", password=pg_gateway.admin_token, ssl=False)
        try:
            return await conn.fetch(f"SELECT * FROM {table} ORDER BY id")
        finally:
            await conn.close()

    rows = asyncio.run(fetch())
    assert len(rows) == 2 and rows[0]["name"] == "Alice"
    assert_no_raw_values([dict(r) for r in rows])


def test_copy_to_stdout_is_masked(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn, conn.cursor() as cur:
        data = b""
        with cur.copy(f"COPY {table} (id, email, ssn, card) TO STDOUT") as copy:
            for chunk in copy:
                data += bytes(chunk)
    text = data.decode()
    assert text.count("\n") == 2 and text.startswith("1\t")
    assert_no_raw_values(text)


def test_error_details_are_masked(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with pytest.raises(errors.UniqueViolation) as excinfo:
            conn.execute(f"INSERT INTO {table} (id, email) VALUES (9, %s)", (EMAIL,))
        detail = str(excinfo.value.diag.message_detail)
        assert EMAIL not in detail and "[REDACTED:email]" in detail
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_column_rule_masks_whatever_the_content(pg_gateway: PgGateway,
                                                customers: str) -> None:
    name, table = split(customers)
    pg_gateway.gateway.masking.put("ssn-column", {"rules": [
        {"columns": [f"{table}.ssn"], "strategy": "redact", "label": "ssn"}]})
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "ssn-column"})
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        rows = conn.execute(f"SELECT id, ssn, email FROM {table} ORDER BY id").fetchall()
    assert rows[1][1] == "[REDACTED:ssn]"  # "n/a" is no SSN, but the column rule masks it
    assert rows[0][2] == EMAIL  # this profile has no e-mail rule


def test_policy_chooses_the_mask_profile(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"data": "cards"}).name
    pg_gateway.gateway.policies.put("cards-masked", (
        '@id("mask-cards") @mask("pci")\n'
        'permit (principal, action, resource)\n'
        'when { resource.tags has data && resource.tags.data == "cards" };'
    ))
    try:
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            value = conn.execute(f"SELECT '{CARD}'::text, '{EMAIL}'::text").fetchone()
        assert value is not None
        assert value[0] == "[REDACTED:card]"
        assert value[1] == EMAIL  # pci masks cards only
    finally:
        pg_gateway.gateway.policies.delete("cards-masked")
