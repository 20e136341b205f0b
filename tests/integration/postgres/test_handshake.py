"""Logging in through the gateway: client TLS, tokens, connection names, upstream auth and TLS."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from jitgate.config import PostgresListenerSettings
from jitgate.connections.types import ConnectionType
from tests.fixtures.postgres_gateway import APP_PASSWORD, PgGateway
from tests.integration.postgres.test_psql import psql
from tests.support.pgcluster import PgCluster, free_port
from tests.support.pgwire import WireClient

pytestmark = pytest.mark.postgres


def refusal(
    gw: PgGateway, dbname: str, *, token: str | None = None, **params: str
) -> dict[str, str]:
    """Log in with the raw client and return the FATAL ErrorResponse's fields."""
    with pytest.raises(ConnectionRefusedError) as refused:
        WireClient.connect(
            gw.port, dbname, token if token is not None else gw.admin_token, **params
        )
    fields: dict[str, str] = refused.value.args[0]
    assert fields["S"] == "FATAL"
    return fields


@pytest.mark.parametrize("cluster", ["pg_scram", "pg_md5", "pg_password"])
def test_upstream_password_methods(
    pg_gateway: PgGateway, cluster: str, request: pytest.FixtureRequest
) -> None:
    upstream: PgCluster = request.getfixturevalue(cluster)
    name = pg_gateway.add_connection(upstream).name
    with psycopg.connect(pg_gateway.dsn(name)) as conn:
        row = conn.execute("SELECT current_user, inet_server_port()").fetchone()
        assert row == ("app", upstream.port)
    method = upstream.psql("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1")
    assert (
        method == {"pg_scram": "scram-sha-256", "pg_md5": "md5", "pg_password": "password"}[cluster]
    )


def test_wrong_upstream_password_is_a_clear_refusal(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram, password="not-the-password").name
    fields = refusal(pg_gateway, name)
    assert fields["C"] == "08006"  # the gateway's configuration problem, not the client's
    assert 'password authentication failed for user "app"' in fields["M"]
    assert fields["D"] == "The upstream server answered with SQLSTATE 28P01."
    assert "not-the-password" not in str(fields)
    no_credential = pg_gateway.add_connection(pg_scram, password=None).name
    assert "no stored password" in refusal(pg_gateway, no_credential)["M"]


def test_token_and_connection_refusals(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    wrong = refusal(pg_gateway, name, token="jgt_definitely-not-a-token")
    assert wrong["C"] == "28P01"
    assert wrong["M"] == 'password authentication failed for user "admin"'
    missing = refusal(pg_gateway, "no-such-connection")
    assert missing["C"] == "3D000" and 'database "no-such-connection"' in missing["M"]
    ssh = pg_gateway.add_connection(
        None, type=ConnectionType.SSH, host="127.0.0.1", port=22, database=None
    ).name
    other = refusal(pg_gateway, ssh)
    assert other["C"] == "3D000" and "not a PostgreSQL target" in other["D"]
    replication = refusal(pg_gateway, name, replication="database")
    assert replication["C"] == "0A000"
    # a user's own token works, whatever user name the client gives
    token = pg_gateway.add_user()
    client = WireClient.connect(pg_gateway.port, name, token, user="anything")
    client.close()


def test_refused_sessions_leave_no_upstream_backend(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    refusal(pg_gateway, name, token="jgt_wrong", application_name="refused-app")
    assert pg_scram.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                         "AND application_name = 'refused-app'") == "0"  # fmt: skip


def test_unreachable_upstream(pg_gateway: PgGateway) -> None:
    name = pg_gateway.add_connection(None, port=free_port()).name
    fields = refusal(pg_gateway, name)
    assert fields["C"] == "08006" and "could not connect" in fields["M"]


def test_client_tls_required(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    gw = make_pg_gateway(require_tls=True)
    name = gw.add_connection(pg_scram).name
    fields = refusal(gw, name)
    assert fields["C"] == "28000" and "TLS is required" in fields["M"]
    with psycopg.connect(gw.dsn(name, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as plain:
        psycopg.connect(gw.dsn(name, sslmode="disable"))
    assert "TLS is required" in str(plain.value)


def test_tokens_travel_only_inside_tls_by_default(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    """Without ``allow_cleartext_loopback`` the gateway never asks a plain-TCP client for
    its token, even on loopback: 28000 before any password is sent."""
    gw = make_pg_gateway(allow_cleartext_loopback=False)
    assert PostgresListenerSettings().allow_cleartext_loopback is False  # the default
    name = gw.add_connection(pg_scram).name
    fields = refusal(gw, name)
    assert fields["C"] == "28000" and fields["M"] == "jitgate: TLS is required to send a token"
    with pytest.raises(psycopg.OperationalError, match="TLS is required"):
        psycopg.connect(gw.dsn(name, sslmode="disable"))
    with psycopg.connect(gw.dsn(name, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    done = psql(gw, name, "-c", "SELECT 2", sslmode="require")
    assert done.stdout.strip() == "2"


async def test_client_tls_with_asyncpg(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    import ssl

    name = pg_gateway.add_connection(pg_scram).name
    context = ssl.create_default_context(cafile=str(pg_gateway.gateway.tls_cert))
    conn = await asyncpg.connect(
        host="127.0.0.1", port=pg_gateway.port, user="admin",
        password=pg_gateway.admin_token, database=name, ssl=context,
    )  # fmt: skip
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def _upstream_ssl(gw: PgGateway, name: str) -> bool:
    with psycopg.connect(gw.dsn(name)) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None
        return bool(row[0])


def test_upstream_tls_modes(pg_gateway: PgGateway, pg_ssl: PgCluster, pg_scram: PgCluster) -> None:
    ca = pg_ssl.ca_cert
    for mode, extra, encrypted in (
        ("disable", {}, False),
        ("prefer", {}, True),
        ("require", {}, True),
        ("verify-ca", {"tls_ca": ca}, True),
        ("verify-full", {"tls_ca": ca}, True),
        ("verify-full", {"tls_ca": ca, "tls_server_name": "localhost"}, True),
    ):
        name = pg_gateway.add_connection(pg_ssl, tls_mode=mode, **extra).name
        assert _upstream_ssl(pg_gateway, name) is encrypted, mode
    # the upstream without TLS: prefer falls back, require refuses clearly
    prefer = pg_gateway.add_connection(pg_scram, tls_mode="prefer").name
    assert _upstream_ssl(pg_gateway, prefer) is False
    require = pg_gateway.add_connection(pg_scram, tls_mode="require").name
    fields = refusal(pg_gateway, require)
    assert fields["C"] == "08006" and "does not support TLS" in fields["M"]


def test_upstream_tls_verification_failures(pg_gateway: PgGateway, pg_ssl: PgCluster) -> None:
    wrong_name = pg_gateway.add_connection(
        pg_ssl, tls_mode="verify-full", tls_ca=pg_ssl.ca_cert, tls_server_name="db.example.org"
    ).name
    fields = refusal(pg_gateway, wrong_name)
    assert fields["C"] == "08006"
    assert "TLS to the upstream" in fields["M"] and "db.example.org" in fields["M"]
    unknown_ca = pg_gateway.add_connection(pg_ssl, tls_mode="verify-ca").name
    fields = refusal(pg_gateway, unknown_ca)
    assert "TLS to the upstream" in fields["M"] and "certificate verify failed" in fields["M"]
    assert APP_PASSWORD not in str(fields)


def test_newer_protocol_versions_are_negotiated_down(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    """libpq 18 may ask for protocol 3.2; the gateway answers NegotiateProtocolVersion 3.0."""
    name = pg_gateway.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway.dsn(name, max_protocol_version="3.2")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    sock = socket.create_connection(("127.0.0.1", pg_gateway.port), timeout=10)
    with sock:
        sock.sendall(struct.pack("!II", 8, 80877104))  # GSSENCRequest: declined
        assert sock.recv(1) == b"N"
        body = struct.pack("!I", (3 << 16) | 2) + b"user\0admin\0database\0" + name.encode()
        body += b"\0_pq_.something\0on\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        head = sock.recv(5)
        assert head[:1] == b"v"
        (length,) = struct.unpack("!I", head[1:])
        payload = sock.recv(length - 4)
        version, count = struct.unpack_from("!II", payload)
        assert (version, count) == (196608, 1) and payload[8:] == b"_pq_.something\0"
