"""Policies stored in the database: default pack, validation, revisions, reload."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from jitgate.audit.log import AuditLog
from jitgate.errors import Conflict, InvalidInput
from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.gate import StatementGate
from jitgate.policy.service import LiveEngine, PolicyService
from jitgate.policy.types import Outcome, Request, Target
from jitgate.sql import PostgresClassifier
from jitgate.store.db import Store

ALICE = Identity("u1", "alice", IdentityKind.USER)
DB = Target("db", "postgres", {})


def test_default_pack_installed_once(store: Store) -> None:
    service = PolicyService(store, reload_interval=0)
    assert service.ensure_default_pack() is True
    assert service.ensure_default_pack() is False
    [record] = service.list()
    assert record.name == "default" and "deny-dangerous" in record.policies
    assert service.engine().version == 1


def test_invalid_policy_rejected_and_nothing_changes(store: Store) -> None:
    service = PolicyService(store, reload_interval=0)
    service.ensure_default_pack()
    before = service.engine().version
    with pytest.raises(InvalidInput, match="not valid Cedar"):
        service.put("broken", "permit(principal, action, resource) when { context.x == };")
    with pytest.raises(InvalidInput, match="invalid policy name"):
        service.put("bad name!", "permit(principal, action, resource);")
    assert [r.name for r in service.list()] == ["default"]
    assert service.engine().version == before


def test_changes_bump_the_revision_and_apply_at_once(store: Store) -> None:
    service = PolicyService(store, reload_interval=60)  # only local invalidation reloads
    service.ensure_default_pack()
    request = Request(action="sql:select", principal=ALICE, target=DB)
    assert service.engine().decide(request).outcome is Outcome.ALLOW
    service.put(
        "lockdown",
        '@id("no") @reason("locked") forbid(principal, action, resource);',
        create_only=True,
    )
    decision = service.engine().decide(request)
    assert decision.outcome is Outcome.DENY and decision.reason == "locked"
    with pytest.raises(Conflict):
        service.put("lockdown", "permit(principal, action, resource);", create_only=True)
    service.put("lockdown", "permit(principal, action, resource);", enabled=False)
    assert service.engine().decide(request).outcome is Outcome.ALLOW
    service.delete("lockdown")
    assert service.engine().version == 4
    with store.session() as session:
        actions = [e.action for e in AuditLog.query(session, action="policy:*")]
    assert actions == ["policy:create", "policy:update", "policy:delete"]


def test_another_node_sees_the_change_after_its_reload_interval(store: Store) -> None:
    node_a = PolicyService(store, reload_interval=0)
    node_b = PolicyService(store, reload_interval=0)
    node_a.ensure_default_pack()
    assert node_b.engine().version == 1
    node_a.put("extra", "permit(principal, action, resource);")
    assert node_b.engine().version == 2


def test_a_typo_is_refused_against_the_schema_and_nothing_changes(store: Store) -> None:
    service = PolicyService(store, reload_interval=0)
    service.ensure_default_pack()
    before = service.engine().version
    typo = '@id("risky") forbid (principal, action, resource) when { context.riks >= 70 };'
    for attempt in (lambda: service.put("risky", typo), lambda: service.validate("risky", typo)):
        with pytest.raises(InvalidInput, match="attribute `riks` in context not found"):
            attempt()
    assert [r.name for r in service.list()] == ["default"]
    assert service.engine().version == before
    service.put("risky", typo.replace("riks", "risk"))
    assert service.engine().version == before + 1


def test_an_unreadable_store_refuses_without_caching_the_refusal(store: Store) -> None:
    """The store goes away under a session's gate: refusals with a clear reason (also for
    connecting), nothing cached, and decisions again once it is back."""
    service = PolicyService(store, reload_interval=0)
    service.ensure_default_pack()
    gate = StatementGate(
        LiveEngine(service), principal=ALICE, actor=None, target=DB, client_addr=None
    )
    stmt = PostgresClassifier().classify("SELECT 1").statements[0]
    assert gate(stmt, stmt.text).allowed
    real_session = store.session

    def down() -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("store down"))

    store.session = down  # type: ignore[method-assign]
    try:
        for _ in range(2):
            refused = gate(stmt, stmt.text)
            assert refused.outcome is Outcome.DENY
            assert "policy store cannot be read" in (refused.reason or "")
        connect = gate.decide(None, "", action="connect")
        assert connect.outcome is Outcome.DENY and "policy store" in (connect.reason or "")
    finally:
        store.session = real_session  # type: ignore[method-assign]
    assert gate(stmt, stmt.text).allowed
