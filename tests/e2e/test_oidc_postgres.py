"""Logging in to the PostgreSQL listener of a real `jitgate serve` with an OIDC JWT from a
real provider (tests/oidc/provider.mjs): psql over TLS, asyncpg for the SQLSTATEs."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.fixtures.oidc import OIDCProvider
from tests.support.pgcluster import PgCluster
from tests.support.served import Served, start_gateway, stop, wait_ready

pytestmark = pytest.mark.postgres

CONNECTION = "oidc-db"
NO_BOB = (
    '@id("no-bob")\n@reason("bob may not use this database")\n'
    'forbid (principal == User::"bob", action == Action::"connect", resource);\n'
)


@dataclass
class Env:
    served: Served
    pg_port: int
    cluster: PgCluster

    @property
    def cert(self) -> Path:
        return self.served.data_dir / "tls" / "gateway.crt"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, oidc_provider: OIDCProvider) -> Iterator[Env]:
    # The upstream logs every connection and statement, so a test can read what it saw.
    cluster = PgCluster(auth="scram-sha-256", settings={
        "log_connections": "on", "log_statement": "'all'",
        "log_line_prefix": "'%m [%p] user=%u db=%d app=%a '"}).start()  # fmt: skip
    tmp = tmp_path_factory.mktemp("oidc-pg")
    data_dir = tmp / "data"
    oidc = (
        f"oidc:\n  issuer: {oidc_provider.issuer}\n  audiences: [jitgate, jitgate-cli]\n"
        "  client_id: jitgate-cli\n  groups_claim: groups\ntokens:\n  cache_seconds: 0\n"
    )
    proc = start_gateway(data_dir, extra_config=oidc)
    try:
        api = wait_ready(proc, data_dir)
        served = Served(proc, data_dir, api, (data_dir / "admin.token").read_text().strip())
        state = json.loads((data_dir / "serve.json").read_text())
        pg_port = int(state["listeners"]["postgres"].rsplit(":", 1)[1])
        served.cli("connections", "add", CONNECTION, "--type", "postgres", "--host",
                   "127.0.0.1", "--port", str(cluster.port), "--database", "postgres",
                   "--username", cluster.superuser, "--password-stdin", "--tls-mode",
                   "disable", stdin=cluster.password + "\n")  # fmt: skip
        policy = tmp / "no-bob.cedar"
        policy.write_text(NO_BOB)
        served.cli("policy", "add", "no-bob", "-f", str(policy))
        yield Env(served, pg_port, cluster)
    finally:
        if proc.poll() is None:
            stop(proc)
        cluster.stop()


def psql(
    env: Env, token: str, *sql: str, user: str = "alice", app: str = "oidc-psql"
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "JITGATE_"))}
    dsn = (
        f"host=127.0.0.1 port={env.pg_port} dbname={CONNECTION} user={user} "
        f"sslmode=verify-ca sslrootcert={env.cert} application_name={app}"
    )
    args = [a for s in sql for a in ("-c", s)]
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", dsn, *args], capture_output=True,
        text=True, env={**clean, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}, timeout=60,
    )  # fmt: skip


async def asyncpg_refusal(env: Env, token: str, user: str) -> asyncpg.PostgresError:
    context = ssl.create_default_context(cafile=str(env.cert))
    context.check_hostname = False
    with pytest.raises(asyncpg.PostgresError) as refused:
        await asyncpg.connect(
            host="127.0.0.1",
            port=env.pg_port,
            user=user,
            password=token,
            database=CONNECTION,
            ssl=context,
            timeout=10,
        )
    return refused.value


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = claims["sub"] + "x"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def sessions(env: Env) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(
        env.served.cli("sessions", "list", "-o", "json").stdout
    )
    return listed


async def test_oidc_jwt_logs_in_and_a_tampered_one_gets_28p01(
    env: Env, oidc_provider: OIDCProvider
) -> None:
    token = oidc_provider.login_device("alice", "alice-password").access_token
    assert token.count(".") == 2  # a real JWT from the provider
    done = psql(env, token, "SELECT current_user, ssl FROM pg_stat_ssl "
                "WHERE pid = pg_backend_pid()", "SELECT 'via-oidc'", app="oidc-login")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the upstream ran it as the stored credential's role; the gateway leg is TLS
    assert done.stdout.splitlines() == ["postgres|f", "via-oidc"]
    mine = [s for s in sessions(env) if s["client_program"] == "oidc-login"]
    assert len(mine) == 1, mine
    shown = json.loads(env.served.cli("sessions", "show", str(mine[0]["id"]),
                                      "-o", "json").stdout)  # fmt: skip
    session = shown.get("session", shown)
    assert session["identity"] == "alice" and session["actor"] is None
    assert session["auth_method"] == "oidc"
    assert "SELECT 'via-oidc'" in json.dumps(shown)

    forged = await asyncpg_refusal(env, tampered(token), "alice")
    assert forged.sqlstate == "28P01"
    assert 'password authentication failed for user "alice"' in str(forged)
    refused = psql(env, tampered(token), "SELECT 1")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr


async def test_user_without_access_gets_28000(env: Env, oidc_provider: OIDCProvider) -> None:
    token = oidc_provider.login_device("bob", "bob-password").access_token
    refused = await asyncpg_refusal(env, token, "bob")
    assert refused.sqlstate == "28000"
    assert "jitgate: bob may not connect to 'oidc-db'" in str(refused)
    done = psql(env, token, "SELECT 1", user="bob")
    assert done.returncode != 0 and "bob may not connect" in done.stderr
    # the same provider's token for alice is let in: it is bob, not the token kind
    alice = oidc_provider.login_device("alice", "alice-password").access_token
    assert psql(env, alice, "SELECT 1").stdout.strip() == "1"


def test_the_upstream_never_sees_the_clients_token(env: Env, oidc_provider: OIDCProvider) -> None:
    token = oidc_provider.login_device("alice", "alice-password").access_token
    signature = token.rsplit(".", 1)[1]
    # Everything the upstream reports to the session: its own pg_stat_activity rows (as
    # JSON, every column), every setting, the startup parameters it was given.
    done = psql(
        env, token,
        "SELECT row_to_json(a) FROM pg_stat_activity a",
        "SHOW ALL",
        "SELECT current_setting('application_name'), session_user",
        "SELECT 'leak-check-' || pg_backend_pid()",
        app="leak-check",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"application_name":"leak-check"' in done.stdout  # the session's own row is there
    assert "\nleak-check|postgres\n" in done.stdout
    # … and pg_stat_activity read directly on the upstream, and the upstream's log, which
    # has every connection and statement of this session.
    direct = env.cluster.psql("SELECT row_to_json(a) FROM pg_stat_activity a")
    log = (env.cluster.root / "server.log").read_text(errors="replace")
    assert "app=leak-check LOG:  statement: SHOW ALL" in log
    assert "connection authorized: user=postgres database=postgres" in log
    for seen in (done.stdout, done.stderr, direct, log):
        assert token not in seen and signature not in seen
