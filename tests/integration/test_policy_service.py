"""Policies stored in the database: default pack, validation, revisions, reload."""

from __future__ import annotations

import pytest

from jitgate.audit.log import AuditLog
from jitgate.errors import Conflict, InvalidInput
from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.service import PolicyService
from jitgate.policy.types import Outcome, Request, Target
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
    service.put("lockdown", '@id("no") @reason("locked") forbid(principal, action, resource);',
                create_only=True)
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
