"""Two gateway nodes sharing one PostgreSQL store: a grant revoked through one ends the
sessions that depend on it on the other."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from jitgate.identity.principal import Authenticated, AuthMethod
from jitgate.server.gateway import Gateway
from jitgate.server.jobs import RemoteGrantChanges
from jitgate.store.db import Store
from tests.fixtures.gateway import make_settings
from tests.fixtures.postgres_gateway import run_pg_gateway
from tests.fixtures.store import _empty
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

NEEDS_GRANT = """
@id("agents-need-a-grant") @reason("agents need a just-in-time grant")
forbid (principal, action == Action::"connect", resource) when { context.is_agent }
unless { context.has_grant };
"""


def test_a_grant_revoked_on_another_node_ends_the_session_here(
    tmp_path: Path, pg_database: str, _pg_store: Store, pg_scram: PgCluster
) -> None:
    _empty(_pg_store)
    with run_pg_gateway(tmp_path / "a", settings_overrides={"database_url": pg_database}) as a:
        name = a.add_connection(pg_scram).name
        a.gateway.policies.put("agents", NEEDS_GRANT)
        agent = a.add_agent("nightly")
        a.gateway.identities.create_identity("bob", groups=("approvers",))
        approver = Authenticated(
            principal=a.gateway.identities.identity("bob"), method=AuthMethod.API_TOKEN
        )
        bot = a.gateway.authenticator.authenticate(agent)
        request = a.gateway.access.create_request(
            bot, name, reason="job", duration=timedelta(minutes=10)
        )
        grant_id = a.gateway.access.approve(approver, request.id).grant_id
        assert grant_id
        watch = RemoteGrantChanges(a.gateway)
        assert watch.check() is False  # the baseline: nothing from elsewhere yet
        node_b = Gateway.open(make_settings(tmp_path / "b", database_url=pg_database))
        try:
            with psycopg.connect(a.dsn(name, token=agent, user="nightly"), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
                node_b.access.revoke_grant(approver, grant_id, reason="revoked")
                assert watch.check() is True
                deadline = time.monotonic() + 10
                with pytest.raises(psycopg.OperationalError, match="jitgate: grant revoked"):
                    while time.monotonic() < deadline:
                        conn.execute("SELECT 1")
                        time.sleep(0.05)
        finally:
            node_b.close()
        assert a.session(name).end_reason == "jitgate: grant revoked"
