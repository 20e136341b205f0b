"""Inline masking through the gateway, with real PostgreSQL and real clients.

Every client must still decode every column: masked text stays text, numeric columns get
NULL (or zeros), binary-format cells get NULL.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
from psycopg import errors

from jitgate.api.app import create_app
from tests.fixtures.gateway import API, serve_app
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, PgGateway, unique
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient
from tests.support.pgwire import query as wire_query

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
            (
                EMAIL,
                SSN,
                CARD,
                f"call {PHONE} or mail {EMAIL}",
                json.dumps({"email": EMAIL, "card": CARD_DIGITS, "n": 7}),
            ),
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


def test_psycopg_text_results_are_masked_and_decode(pg_gateway: PgGateway, customers: str) -> None:
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


def test_simple_protocol_psql_and_counts_in_the_recording(
    pg_gateway: PgGateway, customers: str
) -> None:
    name, table = split(customers)
    out = subprocess.run(
        [
            "psql",
            pg_gateway.dsn(name),
            "-X",
            "-A",
            "-t",
            "-c",
            f"SELECT email, ssn, card FROM {table} ORDER BY id",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
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


def test_binary_format_text_cells_are_masked_as_text(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        row = cur.execute(
            f"SELECT id, email, balance, data, card, raw FROM {table} WHERE id = 1"
        ).fetchone()
    assert row is not None and row[0] == 1
    # text and jsonb have a binary form the gateway can rewrite: masked, still decodable
    assert row[1] == "[REDACTED:email]"
    assert str(row[2]) == "12.50"
    assert row[3] == {"email": "[REDACTED:email]", "card": "************1111", "n": 7}
    assert row[4] == "**** **** **** 1111" and row[5] == b"\x01\x02"


def test_asyncpg_decodes_every_column(pg_gateway: PgGateway, customers: str) -> None:
    """asyncpg asks for binary results: every column decodes, text ones come back masked."""
    name, table = split(customers)

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=pg_gateway.port,
            database=name,
            user="admin",
            password=pg_gateway.admin_token,
            ssl=False,
        )
        try:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            return await conn.fetch(f"SELECT * FROM {table} ORDER BY id")
        finally:
            await conn.close()

    rows = asyncio.run(fetch())
    assert len(rows) == 2
    first, second = dict(rows[0]), dict(rows[1])
    assert_no_raw_values([first, second])
    assert first["id"] == 1 and first["name"] == "Alice"
    assert first["email"] == "[REDACTED:email]" and first["ssn"] == "[REDACTED:ssn]"
    assert first["card"] == "**** **** **** 1111"
    assert first["notes"] == "call [REDACTED:phone] or mail [REDACTED:email]"
    assert str(first["balance"]) == "12.50" and first["raw"] == b"\x01\x02"
    assert first["data"] == {"email": "[REDACTED:email]", "card": "************1111", "n": 7}
    assert second["ssn"] == "n/a" and second["email"] is None


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


def test_error_messages_are_masked_in_the_recording_too(
    pg_gateway: PgGateway, customers: str
) -> None:
    """What the recording keeps of an error is what the client saw: masked."""
    name, _table = split(customers)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with pytest.raises(errors.InvalidTextRepresentation) as excinfo:
            conn.execute(f"SELECT '{EMAIL}'::int")
        assert excinfo.value.diag.message_primary == (
            'invalid input syntax for type integer: "[REDACTED:email]"'
        )
    results = pg_gateway.events(pg_gateway.session(name), "result")
    errors_recorded = [r["error"] for r in results if "error" in r]
    masked = 'invalid input syntax for type integer: "[REDACTED:email]"'
    assert errors_recorded == [{"sqlstate": "22P02", "message": masked}]
    assert EMAIL not in repr(results)  # (the statement's own text is kept as sent)


def test_notification_payloads_are_masked(pg_gateway: PgGateway, customers: str) -> None:
    name, _table = split(customers)
    got: list[tuple[str, str]] = []
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        conn.execute("LISTEN jobs")
        conn.execute(f"NOTIFY jobs, 'card {CARD} for {EMAIL}'")
        conn.execute("NOTIFY jobs, 'nothing to hide'")
        conn.execute("SELECT 1")
    assert got == [
        ("jobs", "card **** **** **** 1111 for [REDACTED:email]"),
        ("jobs", "nothing to hide"),
    ]


def test_column_rule_masks_whatever_the_content(pg_gateway: PgGateway, customers: str) -> None:
    name, table = split(customers)
    pg_gateway.gateway.masking.put(
        "ssn-column",
        {"rules": [{"columns": [f"{table}.ssn"], "strategy": "redact", "label": "ssn"}]},
    )
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "ssn-column"})
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        rows = conn.execute(f"SELECT id, ssn, email FROM {table} ORDER BY id").fetchall()
    assert rows[1][1] == "[REDACTED:ssn]"  # "n/a" is no SSN, but the column rule masks it
    assert rows[0][2] == EMAIL  # this profile has no e-mail rule


def test_policy_chooses_the_mask_profile(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram, tags={"data": "cards"}).name
    pg_gateway.gateway.policies.put(
        "cards-masked",
        (
            '@id("mask-cards") @mask("pci")\n'
            "permit (principal, action, resource)\n"
            'when { resource.tags has data && resource.tags.data == "cards" };'
        ),
    )
    try:
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            value = conn.execute(f"SELECT '{CARD}'::text, '{EMAIL}'::text").fetchone()
        assert value is not None
        assert value[0] == "[REDACTED:card]"
        assert value[1] == EMAIL  # pci masks cards only
    finally:
        pg_gateway.gateway.policies.delete("cards-masked")


# -- the null strategy ---------------------------------------------------------------------


@pytest.fixture
def nulled(pg_gateway: PgGateway, customers: str) -> tuple[str, str]:
    """The customers connection with e-mails masked by the null strategy."""
    name, table = split(customers)
    profile = unique("mail-null")
    pg_gateway.gateway.masking.put(profile, {"rules": [{"types": ["email"], "strategy": "null"}]})
    pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
    return name, table


def copy_out(dsn: str, sql: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        data = b""
        with cur.copy(sql) as copy:
            for chunk in copy:
                data += bytes(chunk)
    return data.decode()


def test_null_strategy_in_copy_rows_writes_null(
    pg_gateway: PgGateway, nulled: tuple[str, str]
) -> None:
    name, table = nulled
    text = copy_out(
        pg_gateway.dsn(name), f"COPY (SELECT id, email, notes FROM {table} ORDER BY id) TO STDOUT"
    )
    assert EMAIL not in text
    lines = text.splitlines()
    assert lines[0].split("\t")[:2] == ["1", "\\N"]  # the e-mail cell is NULL
    assert lines[0].split("\t")[2] == "\\N"  # notes holds an e-mail: the whole cell is NULL
    assert lines[1] == "2\t\\N\t\\N"
    csv = copy_out(
        pg_gateway.dsn(name),
        f"COPY (SELECT id, email FROM {table} ORDER BY id) TO STDOUT (FORMAT csv, NULL 'NULL')",
    )
    assert csv.splitlines() == ["1,NULL", "2,NULL"]


def test_null_strategy_in_error_details_writes_the_marker(
    pg_gateway: PgGateway, nulled: tuple[str, str]
) -> None:
    name, table = nulled
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with pytest.raises(errors.UniqueViolation) as excinfo:
            conn.execute(f"INSERT INTO {table} (id, email) VALUES (9, %s)", (EMAIL,))
        detail = str(excinfo.value.diag.message_detail)
        assert EMAIL not in detail and "[REDACTED:email]" in detail
        assert conn.execute(f"SELECT email FROM {table} WHERE id = 1").fetchone() == (None,)


# -- column rules hold whatever the SQL ------------------------------------------------------


@pytest.fixture
def ssn_rule(pg_gateway: PgGateway, customers: str, pg_scram: PgCluster) -> tuple[str, str]:
    """The customers connection under one rule: ``<table>.ssn`` is masked whole. A view,
    a view on the view and a function reading the column exist beside the table."""
    name, table = split(customers)
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(f"CREATE VIEW {table}_v AS SELECT id, name, lower(ssn) AS x FROM {table}")
        conn.execute(f"CREATE VIEW {table}_vv AS SELECT x AS y, id FROM {table}_v")
        conn.execute(
            f"CREATE FUNCTION {table}_f(int) RETURNS text LANGUAGE sql AS "
            f"$$SELECT ssn FROM {table} WHERE id = $1$$"
        )
    profile = unique("ssn-column")
    pg_gateway.gateway.masking.put(
        profile, {"rules": [{"columns": [f"{table}.ssn"], "label": "ssn"}]}
    )
    pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
    return name, table


SSN_MASKED = "[REDACTED:ssn]"

BYPASSES = [
    "SELECT ssn AS s FROM {t} ORDER BY id",
    "SELECT upper(ssn) FROM {t} ORDER BY id",
    "SELECT ssn || '' FROM {t} ORDER BY id",
    "SELECT c.ssn AS a FROM {t} AS c ORDER BY c.id",
    "SELECT q.s FROM (SELECT id, ssn AS s FROM {t}) AS q ORDER BY q.id",
    "WITH q AS (SELECT id, lower(ssn) AS s FROM {t}) SELECT s FROM q ORDER BY id",
    "SELECT coalesce(ssn, '') FROM {t} ORDER BY id",
    "SELECT (SELECT s.ssn FROM {t} s WHERE s.id = o.id) FROM {t} o ORDER BY o.id",
    "SELECT x FROM {t}_v ORDER BY id",
    "SELECT upper(x) FROM {t}_v ORDER BY id",
    "SELECT y FROM {t}_vv ORDER BY id",
    "SELECT row_to_json(c)::text FROM {t} c ORDER BY id",
    "SELECT {t}_f(id) FROM {t} ORDER BY id",
    "SELECT ssn FROM {t} WHERE id = 1 UNION ALL SELECT ssn FROM {t} WHERE id = 2",
]


@pytest.mark.parametrize("sql", BYPASSES)
def test_column_rule_holds_through_expressions_views_and_subqueries(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str], sql: str
) -> None:
    name, table = ssn_rule
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        rows = conn.execute(sql.format(t=table)).fetchall()
    assert [row[0] for row in rows] == [SSN_MASKED, SSN_MASKED]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ssn AS s FROM {t} ORDER BY id",
        "SELECT lower(x) AS z FROM {t}_v ORDER BY id",
        "SELECT {t}_f(id) FROM {t} ORDER BY id",
    ],
)
def test_column_rule_holds_in_the_simple_protocol(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str], sql: str
) -> None:
    name, table = ssn_rule
    out = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-A", "-t", "-c", sql.format(t=table)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.split() == [SSN_MASKED, SSN_MASKED]


def test_star_masks_only_the_ruled_column(pg_gateway: PgGateway, ssn_rule: tuple[str, str]) -> None:
    name, table = ssn_rule
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        view = conn.execute(f"SELECT * FROM {table}_v ORDER BY id").fetchall()
        joined = conn.execute(
            f"SELECT a.*, b.ssn AS other FROM {table} a JOIN {table} b USING (id) ORDER BY id"
        ).fetchall()
        plain = conn.execute(
            f"SELECT id, name, email, count(ssn) OVER () FROM {table} ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (1, "Alice", EMAIL, SSN_MASKED),
        (2, "Bob", None, SSN_MASKED),
    ]
    assert view == [(1, "Alice", SSN_MASKED), (2, "Bob", SSN_MASKED)]
    assert [r[3] for r in joined] == [SSN_MASKED, SSN_MASKED]
    assert [r[-1] for r in joined] == [SSN_MASKED, SSN_MASKED]
    assert [r[1] for r in joined] == ["Alice", "Bob"]
    assert plain == [(1, "Alice", EMAIL, 2), (2, "Bob", None, 2)]  # nothing derived: as is


@pytest.mark.parametrize(
    "sql",
    [
        "COPY {t} TO STDOUT",
        "COPY {t} (id, ssn) TO STDOUT",
        "COPY (SELECT id, ssn FROM {t} ORDER BY id) TO STDOUT",
        "COPY (SELECT id, upper(x) FROM {t}_v ORDER BY id) TO STDOUT",
        "COPY (SELECT * FROM {t}_vv ORDER BY id) TO STDOUT (FORMAT csv, HEADER)",
    ],
)
def test_column_rule_holds_in_copy(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str], sql: str
) -> None:
    name, table = ssn_rule
    text = copy_out(pg_gateway.dsn(name), sql.format(t=table))
    assert SSN not in text and "n/a" not in text, text
    assert text.count(SSN_MASKED) == 2, text
    if "HEADER" in sql:
        assert text.splitlines()[0] == "y,id"
    if sql.startswith("COPY {t} TO"):
        first = text.splitlines()[0].split("\t")
        assert first[:4] == ["1", "Alice", EMAIL, SSN_MASKED]  # other columns as they are


def test_binary_copy_is_refused_while_masking(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str]
) -> None:
    name, table = ssn_rule
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            pytest.raises(errors.InsufficientPrivilege) as excinfo,
            cur.copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy,
        ):
            for _chunk in copy:
                pass
        assert "binary format cannot be masked" in str(excinfo.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    out = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-c", f"COPY {table} TO STDOUT WITH BINARY"],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode != 0 and b"cannot be masked" in out.stderr
    assert SSN.encode() not in out.stdout


def test_column_rule_survives_ddl_in_the_session(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str]
) -> None:
    name, table = ssn_rule
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        assert conn.execute(f"SELECT x FROM {table}_v WHERE id = 2").fetchone() == (SSN_MASKED,)
        conn.execute(
            f"CREATE OR REPLACE VIEW {table}_v AS SELECT id, name, ssn AS x, name AS w FROM {table}"
        )
        assert conn.execute(f"SELECT x, w FROM {table}_v WHERE id = 2").fetchone() == (
            SSN_MASKED,
            "Bob",
        )
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN name TO nick")
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN ssn TO name")
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN nick TO ssn")
        row = conn.execute(f"SELECT name, ssn FROM {table} WHERE id = 2").fetchone()
    assert row == ("n/a", SSN_MASKED)  # the rule follows the name: "ssn" is Bob's now


# -- notices, a broken upstream ----------------------------------------------------------------


@pytest.fixture
def copy_targets(ssn_rule: tuple[str, str], pg_scram: PgCluster) -> tuple[str, str]:
    """Beside the ssn_rule customers: a notes table to copy into, and an orders table no
    column rule covers."""
    name, table = ssn_rule
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table}_notes (id int PRIMARY KEY, body text)")
        conn.execute(f"INSERT INTO {table}_notes VALUES (1, 'note'), (2, 'note')")
        conn.execute(f"CREATE TABLE {table}_orders (id int PRIMARY KEY, amount int)")
        conn.execute(f"INSERT INTO {table}_orders VALUES (5, 10)")
    return name, table


COPIES = [
    "CREATE TABLE {t}_copy AS SELECT id, ssn FROM {t}",
    "SELECT id, ssn INTO {t}_copy FROM {t}",
    "CREATE MATERIALIZED VIEW {t}_copy AS SELECT id, upper(ssn) AS s FROM {t}",
    "CREATE TABLE {t}_copy AS SELECT * FROM {t}",
    "INSERT INTO {t}_notes (id, body) SELECT id + 10, ssn FROM {t}",
    "INSERT INTO {t}_notes (id, body) SELECT id + 10, c::text FROM {t} c",
    "UPDATE {t}_notes SET body = c.ssn FROM {t} c WHERE c.id = {t}_notes.id",
    "UPDATE {t}_notes SET body = (SELECT ssn FROM {t} WHERE id = 1) WHERE id = 1",
    "MERGE INTO {t}_notes n USING {t} c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.ssn",
    "WITH w AS (INSERT INTO {t}_notes SELECT id + 10, ssn FROM {t} RETURNING id) "
    "SELECT count(*) FROM w",
    "UPDATE {t} SET name = ssn WHERE id = 1",
    "INSERT INTO {t}_notes (id, body) SELECT id + 10, {t}_f(id) FROM {t}",
]


def assert_nothing_copied(pg_scram: PgCluster, table: str) -> None:
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", [f"{table}_copy"]).fetchone() == (None,)
        notes = conn.execute(f"SELECT id, body FROM {table}_notes ORDER BY id").fetchall()
        names = conn.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    assert notes == [(1, "note"), (2, "note")]
    assert names == [("Alice",), ("Bob",)]


@pytest.mark.parametrize("sql", COPIES)
def test_copies_of_masked_columns_are_refused(
    pg_gateway: PgGateway, copy_targets: tuple[str, str], pg_scram: PgCluster, sql: str
) -> None:
    name, table = copy_targets
    text = sql.format(t=table)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as excinfo:
            conn.execute(text)  # the extended protocol
        assert "masking applies to results, not to copies" in str(excinfo.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    out = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-c", text],  # simple protocol
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "not to copies" in out.stderr and "42501" not in out.stdout
    assert_nothing_copied(pg_scram, table)
    refused = [s for s in pg_gateway.statements(pg_gateway.session(name)) if s["text"] == text]
    assert [(s["status"], s["error"]) for s in refused] == [("denied", "42501")]


def test_a_refused_copy_fails_the_transaction(
    pg_gateway: PgGateway, copy_targets: tuple[str, str], pg_scram: PgCluster
) -> None:
    name, table = copy_targets
    with psycopg.connect(pg_gateway.dsn(name)) as conn:
        conn.execute(f"INSERT INTO {table}_notes VALUES (3, 'kept?')")
        with pytest.raises(errors.InsufficientPrivilege, match=rf"\({table}\.ssn\)"):
            conn.execute(f"CREATE TABLE {table}_copy AS SELECT ssn FROM {table}")
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert_nothing_copied(pg_scram, table)


ALLOWED_WRITES = [
    "UPDATE {t} SET name = 'Alice' WHERE id = 1",
    "INSERT INTO {t}_notes VALUES (7, 'hello')",
    "UPDATE {t}_orders SET amount = amount + 1 WHERE id = 5",
    "INSERT INTO {t}_orders SELECT id + 100, amount FROM {t}_orders",
    "CREATE TABLE {t}_o2 AS SELECT * FROM {t}_orders",
    "INSERT INTO {t}_notes (id, body) SELECT id + 20, upper(name) FROM {t}",
    "UPDATE {t}_notes SET body = c.name FROM {t} c WHERE c.id = {t}_notes.id AND c.ssn <> ''",
]


def test_ordinary_writes_and_copies_of_unmasked_columns_stay_allowed(
    pg_gateway: PgGateway, copy_targets: tuple[str, str]
) -> None:
    name, table = copy_targets
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        for sql in ALLOWED_WRITES:
            conn.execute(sql.format(t=table))
        notes = conn.execute(f"SELECT id, body FROM {table}_notes ORDER BY id").fetchall()
        copied = conn.execute(f"SELECT * FROM {table}_o2").fetchall()
        masked = conn.execute(f"SELECT ssn FROM {table} ORDER BY id").fetchall()
    assert notes == [(1, "Alice"), (2, "Bob"), (7, "hello"), (21, "ALICE"), (22, "BOB")]
    assert sorted(copied) == [(5, 11), (105, 11)]
    assert masked == [(SSN_MASKED,), (SSN_MASKED,)]  # results are masked as before
    text = copy_out(pg_gateway.dsn(name), f"COPY (SELECT ssn FROM {table} ORDER BY id) TO STDOUT")
    assert text.splitlines() == [SSN_MASKED, SSN_MASKED]


def test_detector_only_profiles_do_not_refuse_copies(
    pg_gateway: PgGateway, copy_targets: tuple[str, str]
) -> None:
    name, table = copy_targets
    profile = unique("ssn-detector")
    pg_gateway.gateway.masking.put(profile, {"rules": [{"types": ["ssn"]}]})
    pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table}_copy AS SELECT id, ssn FROM {table}")
        rows = conn.execute(f"SELECT ssn FROM {table}_copy ORDER BY id").fetchall()
    assert rows == [("[REDACTED:ssn]",), ("n/a",)]  # the detector follows the values


def test_notices_are_masked(
    pg_gateway: PgGateway, pg_scram: PgCluster, nulled: tuple[str, str]
) -> None:
    """RAISE NOTICE text is masked (``public.say`` raises ``said: <msg>``)."""
    name, _table = nulled
    notices: list[str] = []
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("SELECT say(%s)", (f"mail {EMAIL} now",))
    assert notices == ["said: mail [REDACTED:email] now"]  # null strategy: the marker
    pii = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(pii, options={"mask_profile": "pii"})
    notices.clear()
    with psycopg.connect(pg_gateway.dsn(pii), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        value = conn.execute("SELECT say(%s)", (f"card {CARD}",)).fetchone()
    assert notices == ["said: card **** **** **** 1111"]
    assert value == ("card **** **** **** 1111",)


class FakeUpstream:
    """A PostgreSQL server that trusts the gateway and answers every Query with a
    RowDescription of two text columns and then ``answer`` (raw bytes)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def frame(code: bytes, payload: bytes = b"") -> bytes:
        return code + struct.pack("!I", len(payload) + 4) + payload

    def _serve(self) -> None:
        with self.sock:
            conn, _ = self.sock.accept()
        conn.settimeout(30)
        frame = self.frame
        conn.recv(65536)  # StartupMessage
        conn.sendall(
            frame(b"R", struct.pack("!I", 0))
            + frame(b"S", b"client_encoding\0UTF8\0")
            + frame(b"S", b"server_version\x0015.0\0")
            + frame(b"K", struct.pack("!II", 7, 7))
            + frame(b"Z", b"I")
        )
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                if data[:1] == b"Q":
                    field = struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
                    fields = struct.pack("!h", 2) + b"x\0" + field + b"y\0" + field
                    conn.sendall(frame(b"T", fields) + self.answer)
        except OSError:
            pass
        finally:
            conn.close()
            self.closed.set()


def test_a_malformed_upstream_row_under_masking_is_a_protocol_error(
    pg_gateway: PgGateway,
) -> None:
    # Two cells announced, the second one's length is missing.
    bad_row = FakeUpstream.frame(b"D", struct.pack("!hi", 2, 3) + b"abc")
    upstream = FakeUpstream(
        bad_row + FakeUpstream.frame(b"C", b"SELECT 1\0") + FakeUpstream.frame(b"Z", b"I")
    )
    name = pg_gateway.add_connection(None, port=upstream.port, password=None).name
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "pii"})
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    client.send(wire_query("SELECT x"))
    answer = client.read_all_until_closed()  # the gateway closes the session
    client.close()
    assert b"abc" not in client.received  # nothing of the bad row reached the client
    assert all(m.code != b"D" for m in answer)
    assert [m.sqlstate for m in answer if m.code == b"E"] == ["08P01"]  # said, natively
    assert upstream.closed.wait(10), "the upstream leg was not closed"
    row = pg_gateway.session(name)
    assert row.end_reason == "upstream protocol error"


# -- operator tools: the masking API and `jitgate mask` ------------------------------------------


@pytest.fixture
def masking_api(pg_gateway: PgGateway) -> Iterator[API]:
    with (
        serve_app(create_app(pg_gateway.gateway)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield API(client, pg_gateway.admin_token)


def test_masking_api_profiles_crud_and_errors(pg_gateway: PgGateway, masking_api: API) -> None:
    name = unique("api-profile")
    listed = masking_api.get("/api/v1/masking/profiles").json()["items"]
    assert {"none", "pii", "pci", "secrets", "strict"} <= {p["name"] for p in listed}
    assert all(p["builtin"] for p in listed if p["name"] == "pii")
    body = {
        "definition": {
            "description": "ids",
            "rules": [{"columns": ["customers.ssn"], "label": "ssn", "strategy": "partial"}],
        }
    }
    put = masking_api.request("PUT", f"/api/v1/masking/profiles/{name}", json=body)
    assert put.status_code == 200, put.text
    assert put.json()["definition"]["rules"][0]["columns"] == ["customers.ssn"]
    stored = {p["name"]: p for p in masking_api.get("/api/v1/masking/profiles").json()["items"]}
    assert stored[name]["builtin"] is False
    # invalid definitions are refused with the reason, in the API's error shape
    bad = masking_api.request(
        "PUT",
        f"/api/v1/masking/profiles/{name}",
        json={"definition": {"rules": [{"types": ["nope"]}]}},
    )
    assert bad.status_code == 400 and "unknown type" in bad.json()["error"]["message"]
    marker = masking_api.request(
        "PUT", f"/api/v1/masking/profiles/{name}", json={"definition": {"marker": "'", "rules": []}}
    )
    assert marker.status_code in (400, 422)
    # a user who is not an admin may read and test, not change
    user = pg_gateway.add_user()
    assert masking_api.as_(user).get("/api/v1/masking/profiles").status_code == 200
    denied = masking_api.as_(user).request("PUT", f"/api/v1/masking/profiles/{name}", json=body)
    assert denied.status_code == 403
    assert masking_api.as_(None).get("/api/v1/masking/profiles").status_code == 401
    assert masking_api.delete(f"/api/v1/masking/profiles/{name}").status_code == 204
    missing = masking_api.delete(f"/api/v1/masking/profiles/{name}")
    assert missing.status_code == 404 and missing.json()["error"]["code"]


def test_masking_api_test_explains(masking_api: API) -> None:
    answer = masking_api.post(
        "/api/v1/masking/test",
        json={"profile": "pii", "text": f"card {CARD}, mail {EMAIL}, order 4111111111111112"},
    ).json()
    assert answer["masked"] == (
        "card **** **** **** 1111, mail [REDACTED:email], order 4111111111111112"
    )
    assert answer["changed"] and answer["counts"] == {"card": 1, "email": 1}
    kinds = [(f["type"], f["start"]) for f in answer["findings"]]
    assert kinds == [("card", 5), ("email", 31)]
    assert all("partial" in f["why"] or "redact" in f["why"] for f in answer["findings"])
    assert "luhn" in answer["findings"][0]["why"].lower()
    column = masking_api.post(
        "/api/v1/masking/test", json={"profile": "strict", "text": "hunter2", "column": "password"}
    ).json()
    assert column["masked"] == "[REDACTED:secret]" and "column rule" in column["findings"][0]["why"]
    numeric = masking_api.post(
        "/api/v1/masking/test",
        json={"profile": "pci", "text": CARD_DIGITS, "type_class": "numeric"},
    ).json()
    assert numeric["masked"] is None  # a numeric column gets NULL
    unknown = masking_api.post("/api/v1/masking/test", json={"profile": "nope", "text": "x"})
    assert unknown.status_code == 400 and "unknown mask profile" in unknown.text


def jitgate_cli(
    api: API, *args: str, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JITGATE_SERVER": str(api.client.base_url),
        "JITGATE_TOKEN": api.token,
        "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="jitgate-xdg-"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "jitgate.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_cli_mask_test_reads_stdin_and_says_why(masking_api: API) -> None:
    out = jitgate_cli(
        masking_api,
        "mask",
        "test",
        "--profile",
        "pii",
        stdin=f"card {CARD}\nnothing here\nssn {SSN} and {EMAIL}\n",
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "card **** **** **** 1111"
    assert lines[1].startswith("    card") and "Luhn" in lines[1] and "partial" in lines[1]
    assert lines[2] == "nothing here"
    assert lines[3] == "ssn [REDACTED:ssn] and [REDACTED:email]"
    assert "ssn" in lines[4] and "email" in lines[5]
    assert CARD not in out and SSN not in out.split("\n", 3)[3].splitlines()[0]
    data = json.loads(
        jitgate_cli(
            masking_api, "mask", "test", "--profile", "pii", "--output", "json", stdin=f"{EMAIL}\n"
        ).stdout
    )
    assert data[0]["input"] == EMAIL and data[0]["masked"] == "[REDACTED:email]"
    ruled = jitgate_cli(
        masking_api, "mask", "test", "--profile", "strict", "--column", "api_key", stdin="abc\n"
    ).stdout
    assert ruled.splitlines()[0] == "[REDACTED:secret]" and "column rule" in ruled
    failed = jitgate_cli(masking_api, "mask", "test", "--profile", "nope", stdin="x\n", check=False)
    assert failed.returncode != 0 and "unknown mask profile" in failed.stderr


def test_cli_mask_profiles_put_list_rm(masking_api: API, tmp_path: Path) -> None:
    name = unique("cli-profile")
    definition = tmp_path / "profile.yaml"
    definition.write_text(
        "description: support desk\nrules:\n  - {types: [email], strategy: hash}\n"
    )
    saved = jitgate_cli(masking_api, "mask", "profiles", "put", name, "--file", str(definition))
    assert f"mask profile {name} saved" in saved.stdout
    rows = json.loads(jitgate_cli(masking_api, "mask", "profiles", "list", "-o", "json").stdout)
    mine = next(r for r in rows if r["name"] == name)
    assert mine["builtin"] is False and mine["definition"]["rules"][0]["strategy"] == "hash"
    table = jitgate_cli(masking_api, "mask", "profiles", "list").stdout
    assert name in table and "pii" in table
    tokens = jitgate_cli(
        masking_api, "mask", "test", "--profile", name, stdin=f"{EMAIL}\n{EMAIL.upper()}\n"
    ).stdout.splitlines()
    hashed = [line for line in tokens if line.startswith("tok_")]
    assert len(hashed) == 2 and hashed[0] == hashed[1]  # deterministic, case-insensitive
    definition.write_text("rules: [{types: [nope]}]\n")
    bad = jitgate_cli(
        masking_api, "mask", "profiles", "put", name, "--file", str(definition), check=False
    )
    assert bad.returncode != 0 and "unknown type" in bad.stderr
    removed = jitgate_cli(masking_api, "mask", "profiles", "rm", name)
    assert f"mask profile {name} removed" in removed.stdout
    again = jitgate_cli(masking_api, "mask", "profiles", "rm", name, check=False)
    assert again.returncode != 0


def test_where_lineage_is_not_known_the_column_is_masked_whole(
    pg_gateway: PgGateway, ssn_rule: tuple[str, str]
) -> None:
    """SQL PREPARE/EXECUTE, cursors and a pipeline sent before any look-up: expressions of
    unknown origin are masked whole; plain columns are still told apart by their origin."""
    name, table = ssn_rule
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        with conn.pipeline():  # nothing looked up yet, and no moment between requests
            conn.execute("SELECT 1")
            cur = conn.execute(f"SELECT name, ssn || '' FROM {table} ORDER BY id")
        assert cur.fetchall() == [(SSN_MASKED, SSN_MASKED), (SSN_MASKED, SSN_MASKED)]
        # the next statement is sent between requests: looked up, only ssn is masked
        assert conn.execute(f"SELECT name, ssn || '' FROM {table} ORDER BY id").fetchall() == [
            ("Alice", SSN_MASKED),
            ("Bob", SSN_MASKED),
        ]
        conn.execute(f"PREPARE p AS SELECT id, lower(ssn), name FROM {table} ORDER BY id")
        assert conn.execute("EXECUTE p").fetchall() == [
            (1, SSN_MASKED, "Alice"),
            (2, SSN_MASKED, "Bob"),
        ]
        with conn.transaction():
            conn.execute(f"DECLARE c CURSOR FOR SELECT name, upper(ssn) FROM {table} ORDER BY id")
            assert conn.execute("FETCH ALL FROM c").fetchall() == [
                ("Alice", SSN_MASKED),
                ("Bob", SSN_MASKED),
            ]
