"""A change to a mask profile, or to a connection's default profile, reaches sessions that
are already open: from their next result, without reconnecting.

One psycopg connection stays open through the gateway while an operator changes things.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from tests.fixtures.postgres_gateway import PgGateway, unique
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"
QUERY = f"SELECT '{EMAIL}'::text, '{CARD}'::text"


def eventually(read: Callable[[], object], expected: object, timeout: float = 8.0) -> None:
    """Changes made by another node arrive within the reload interval (2 s)."""
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, value
        time.sleep(0.2)


def test_open_session_follows_profile_and_default_changes(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    profile = unique("live")
    masking = pg_gateway.gateway.masking
    masking.put(profile, {"rules": [{"types": ["email"]}]})
    name = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:

        def read() -> object:
            return conn.execute(QUERY).fetchone()

        assert read() == ("[REDACTED:email]", CARD)
        # the profile changes: cards too, e-mails by the null strategy
        masking.put(
            profile,
            {
                "rules": [
                    {"types": ["email"], "strategy": "null"},
                    {"types": ["card"], "strategy": "partial"},
                ]
            },
        )
        assert read() == (None, "**** **** **** 1111")
        # the connection's default profile changes (as another node would see it)
        pg_gateway.gateway.connections.update(name, options={"mask_profile": "pci"})
        eventually(read, (EMAIL, "[REDACTED:card]"))
        pg_gateway.gateway.connections.update(name, options={})
        eventually(read, (EMAIL, CARD))
        pg_gateway.gateway.connections.update(name, options={"mask_profile": profile})
        eventually(read, (None, "**** **** **** 1111"))
        # a result already streaming keeps the masker it started with; the next one not
        with conn.cursor(name="c") as cursor, conn.transaction():
            cursor.execute(f"SELECT '{EMAIL}'::text FROM generate_series(1, 4)")
            first = cursor.fetchone()
            masking.put(profile, {"rules": [{"types": ["card"]}]})
            assert first == (None,)
        assert read() == (EMAIL, "[REDACTED:card]")
    session = pg_gateway.session(name)
    end = [e for e in pg_gateway.events(session) if e["type"] == "session.end"][-1]
    assert end["masked"]["email"] >= 3 and end["masked"]["card"] >= 3  # counts carried over
