"""Column rules mask whatever a cell holds; JSON stays JSON when values inside it are masked.

Real PostgreSQL behind the gateway, read with psql and psycopg (text and binary format).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess

import psycopg
import pytest

from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, PgGateway, unique
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

CARD = "4111111111111111"
EMAIL = "alice.smith@example.com"
# Values no detector finds; a column rule masks them all the same. Some look like what a
# masker writes (stars, a token, a marker of another type): they are masked too.
ODD = ["n/a", "****1234", "****ÄÖÜßéèàΩΨΦ", "tok_aaaaaaaaaaaaaaaa", "[REDACTED:card]", "7"]


@pytest.fixture
def people(pg_gateway: PgGateway, pg_scram: PgCluster) -> tuple[str, str]:
    """A connection and a table whose ``ssn`` and ``api_secret`` columns hold odd values,
    and JSON documents with sensitive values as strings and as numbers."""
    name = pg_gateway.add_connection(pg_scram).name
    table = f"people_{name.replace('-', '_')}"
    with psycopg.connect(pg_scram.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, ssn text, api_secret varchar(80), "
            "doc jsonb, raw json, profile jsonb)"
        )
        for index, odd in enumerate(ODD):
            doc = {
                "card": int(CARD),
                "cards": [int(CARD), f"x {CARD} y"],
                "email": EMAIL,
                "n": index,
                "nested": {"k": [1.5, EMAIL]},
            }
            conn.execute(
                f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    index,
                    odd,
                    odd,
                    json.dumps(doc),
                    f'[{CARD}, "{EMAIL}", 1.10]',
                    json.dumps({"ssn": odd, "id": index}),
                ),
            )
    profile = unique("columns")
    pg_gateway.gateway.masking.put(
        profile,
        {
            "rules": [
                {"columns": [f"{table}.ssn"], "label": "ssn"},
                {"columns": ["*secret*", "profile"], "label": "secret", "strategy": "partial"},
                {"types": ["card"], "strategy": "partial"},
                {"types": ["email"]},
            ]
        },
    )
    pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
    return name, table


def test_column_rules_mask_every_value_whatever_it_holds(
    pg_gateway: PgGateway, people: tuple[str, str]
) -> None:
    name, table = people
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT ssn, api_secret, ssn AS s, upper(ssn) FROM {table} ORDER BY id"
        ).fetchall()
    assert len(rows) == len(ODD)
    for (ssn, secret, alias, upper), odd in zip(rows, ODD, strict=True):
        assert ssn == alias == upper == "[REDACTED:ssn]", odd
        assert secret != odd and odd not in secret
        assert secret.count("*") >= 1  # partial: at most the last four letters kept
    psql = subprocess.run(
        [
            "psql",
            pg_gateway.dsn(name),
            "-X",
            "-A",
            "-t",
            "-c",
            f"SELECT ssn FROM {table} ORDER BY id",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert psql.splitlines() == ["[REDACTED:ssn]"] * len(ODD)


def test_masked_json_stays_json_for_the_client(
    pg_gateway: PgGateway, people: tuple[str, str]
) -> None:
    name, table = people
    query = f"SELECT doc, raw, profile FROM {table} ORDER BY id"
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        decoded = conn.execute(query).fetchall()  # psycopg parses json and jsonb itself
        texts = conn.execute(f"SELECT doc::text, raw::text FROM {table} ORDER BY id").fetchall()
        binary = conn.cursor(binary=True).execute(query).fetchall()
    assert decoded == binary
    for doc, raw, profile in decoded:
        assert doc["card"] == "************1111"  # a masked number became a string
        assert doc["cards"] == ["************1111", "x ************1111 y"]
        assert doc["email"] == "[REDACTED:email]"
        assert doc["nested"] == {"k": [1.5, "[REDACTED:email]"]}
        assert isinstance(doc["n"], int)
        assert raw == ["************1111", "[REDACTED:email]", 1.1]
        # a column rule on a jsonb column: the whole document becomes a JSON string
        assert isinstance(profile, str) and "*" in profile
    for doc_text, raw_text in texts:  # text casts are text columns holding JSON
        assert isinstance(json.loads(doc_text), dict) and CARD not in doc_text
        assert json.loads(raw_text)[0] == "************1111"
    out = subprocess.run(
        ["psql", pg_gateway.dsn(name), "-X", "-A", "-t", "-F", "\x1f", "-c", query],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    cells = [cell for line in out.splitlines() for cell in line.split("\x1f")]
    assert len(cells) == 3 * len(ODD)
    for cell in cells:
        json.loads(cell)  # every masked cell is still a JSON document
        assert CARD not in cell and EMAIL not in cell


def test_masked_json_in_copy_is_json(pg_gateway: PgGateway, people: tuple[str, str]) -> None:
    name, table = people
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn, conn.cursor() as cur:
        data = b""
        with cur.copy(
            f"COPY (SELECT doc, raw FROM {table} ORDER BY id) TO STDOUT (FORMAT csv)"
        ) as copy:
            for chunk in copy:
                data += bytes(chunk)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert len(rows) == len(ODD)
    for doc, raw in rows:
        assert json.loads(doc)["card"] == "************1111"
        assert json.loads(raw)[1] == "[REDACTED:email]"


def test_values_after_json_escapes_are_masked(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    """A value right after ``\\n``, ``\\t`` or ``\\"`` (as JSON and logs write them) is found."""
    name = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(name, options={"mask_profile": "pii"})
    doc = {"note": f'line one\n{EMAIL}\tcard\t{CARD}\n"123-45-6789"', "p": "call\n(415) 555-2671"}
    log = f"user=bob\\nmail={EMAIL}\\tcard\\t{CARD}"  # a log line with escaped newlines
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        row = conn.execute(
            "SELECT %s::jsonb, %s::json, %s::text, %s::jsonb::text",
            (json.dumps(doc), json.dumps(doc), log, json.dumps(doc)),
        ).fetchone()
        binary = conn.cursor(binary=True).execute("SELECT %s::jsonb", (json.dumps(doc),)).fetchone()
    assert row is not None and binary is not None
    expected = {
        "note": 'line one\n[REDACTED:email]\tcard\t************1111\n"[REDACTED:ssn]"',
        "p": "call\n[REDACTED:phone]",
    }
    assert row[0] == row[1] == binary[0] == expected
    assert row[2] == "user=bob\\nmail=[REDACTED:email]\\tcard\\t************1111"
    assert json.loads(row[3]) == expected
