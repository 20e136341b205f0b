"""The CLI against a real `jitgate serve`: `connections rm` removes the connection and its
encrypted credential; a delegated token from `tokens exchange` carries the RFC 8693 `act`
claim naming the agent, verified with the gateway's published keys."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, query
from tests.support.served import Served, serving

pytestmark = pytest.mark.postgres


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    with serving(tmp_path / "data") as running:
        yield running


def add(served: Served, name: str, cluster: PgCluster) -> None:
    served.cli("connections", "add", name, "--type", "postgres", "--host", "127.0.0.1",
               "--port", str(cluster.port), "--database", "app", "--username", APP_USER,
               "--password-stdin", "--tls-mode", "disable", stdin=APP_PASSWORD + "\n")  # fmt: skip


def store_rows(data_dir: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the gateway's SQLite store (read-only)."""
    db = sqlite3.connect(f"file:{data_dir / 'jitgate.db'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    finally:
        db.close()


def login_refusal(port: int, dbname: str, token: str) -> dict[str, str]:
    with pytest.raises(ConnectionRefusedError) as refused:
        WireClient.connect(port, dbname, token)
    fields: dict[str, str] = refused.value.args[0]
    return fields


def test_connections_rm_removes_the_connection_and_its_credential(
    served: tuple[Served, int], pg_scram: PgCluster
) -> None:
    gw, port = served
    add(gw, "gone-db", pg_scram)
    add(gw, "kept-db", pg_scram)
    client = WireClient.connect(port, "gone-db", gw.admin_token)
    client.send(query("SELECT 1"))
    client.until_ready()
    client.close()
    rows = store_rows(gw.data_dir)["connections"]
    blobs = {r[1]: [v for v in r if isinstance(v, bytes) and len(v) > 16] for r in rows}
    assert blobs["gone-db"] and blobs["kept-db"]  # the credentials, encrypted
    gone_blob = blobs["gone-db"][0]

    removed = gw.cli("connections", "rm", "gone-db")
    assert removed.stdout.strip() == "connection gone-db removed"
    listed = json.loads(gw.cli("connections", "list", "-o", "json").stdout)
    assert [c["name"] for c in listed] == ["kept-db"]
    shown = gw.cli("connections", "show", "gone-db", check=False)
    assert shown.returncode == 1 and shown.stderr == "error: no connection named 'gone-db'\n"
    again = gw.cli("connections", "rm", "gone-db", check=False)
    assert again.returncode == 1 and "no connection named 'gone-db'" in again.stderr
    assert login_refusal(port, "gone-db", gw.admin_token)["C"] == "3D000"

    # Nothing of it is left in any table of the store: no row names it, and its encrypted
    # credential is in no row; the other connection keeps its own.
    after = store_rows(gw.data_dir)
    assert all(r[1] != "gone-db" for r in after["connections"])
    for table, table_rows in after.items():
        for row in table_rows:
            assert gone_blob not in row, f"the removed credential is still in {table}"
    assert any(blobs["kept-db"][0] in r for r in after["connections"])
    audit = json.loads(gw.cli("audit", "list", "--action", "connection:delete",
                              "-o", "json").stdout)  # fmt: skip
    assert [(e["target_name"], e["actor"]) for e in audit] == [("gone-db", "admin")]


def test_delegated_token_names_the_agent_in_its_act_claim(
    served: tuple[Served, int], pg_scram: PgCluster
) -> None:
    gw, port = served
    add(gw, "kept-db", pg_scram)
    add(gw, "other-db", pg_scram)
    gw.cli("users", "add", "alice")
    alice = gw.cli("tokens", "create", "--user", "alice", "--name", "laptop").stdout.strip()
    bot = gw.cli("tokens", "create", "--agent", "ci-bot", "--name", "ci").stdout.strip()
    ids = {name: json.loads(gw.cli("users", "show", name, "-o", "json").stdout)["id"]
           for name in ("alice", "ci-bot")}  # fmt: skip
    keys = KeySet.import_key_set(httpx.get(gw.api + "/api/v1/keys").json())

    delegation = json.loads(gw.cli("delegations", "create", "--agent", "ci-bot",
                                   "--connection", "kept-db", "-o", "json",
                                   token=alice).stdout)["id"]  # fmt: skip
    by_record = gw.cli("tokens", "exchange", "--delegation", delegation, token=bot)
    by_consent = gw.cli("tokens", "exchange", "--subject-token-stdin", token=bot, stdin=alice)
    for exchanged in (by_record.stdout.strip(), by_consent.stdout.strip()):
        decoded = jwt.decode(exchanged, keys, algorithms=["Ed25519"])  # the signature checks
        claims = decoded.claims
        assert (claims["sub"], claims["name"]) == (ids["alice"], "alice")
        assert claims["act"] == {"sub": ids["ci-bot"], "name": "ci-bot"}  # RFC 8693 §4.1
        who = json.loads(gw.cli("whoami", "-o", "json", token=exchanged).stdout)
        assert who["identity"]["name"] == "alice" and who["actor"]["name"] == "ci-bot"

    # Through the PostgreSQL listener: the session is alice's, acted by ci-bot; the
    # delegation's connection list holds (28000 elsewhere).
    token = by_record.stdout.strip()
    client = WireClient.connect(port, "kept-db", token, application_name="delegated")
    client.send(query("SELECT 1"))
    client.until_ready()
    client.close()
    refused = login_refusal(port, "other-db", token)
    assert refused["C"] == "28000" and "not valid for 'other-db'" in refused["M"]
    sessions = json.loads(gw.cli("sessions", "list", "-o", "json").stdout)
    [session] = [s for s in sessions if s["client_program"] == "delegated"]
    assert (session["identity"], session["actor"]) == ("alice", "ci-bot")
