"""Identities, groups → roles, passwords, tokens — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from jitgate.audit.log import AuditLog
from jitgate.config import RolesSettings, TokenSettings
from jitgate.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from jitgate.identity.principal import AuthMethod, IdentityKind, Role
from jitgate.identity.service import IdentityService
from jitgate.store.db import Store
from jitgate.store.models import APITokenRow, utcnow


@pytest.fixture
def identities(store: Store) -> IdentityService:
    return IdentityService(store, RolesSettings(), TokenSettings())


def test_roles_come_from_groups(identities: IdentityService) -> None:
    identities.create_identity("root", groups=["admins"])
    identities.create_identity("bob", groups=["approvers", "dbas"])
    identities.create_identity("carol", groups=["auditors"])
    identities.create_identity("dave")
    root, bob = identities.identity("root"), identities.identity("bob")
    assert root.has_role(Role.APPROVER) and root.has_role(Role.AUDITOR)
    assert bob.roles == {Role.APPROVER, Role.USER} and bob.groups == {"approvers", "dbas"}
    assert identities.identity("carol").roles == {Role.AUDITOR, Role.USER}
    assert identities.identity("dave").roles == {Role.USER}


def test_custom_role_mapping(store: Store) -> None:
    service = IdentityService(store, RolesSettings(approver=["sre"]), TokenSettings())
    service.create_identity("erin", groups=["sre"])
    assert service.identity("erin").has_role(Role.APPROVER)


def test_duplicate_and_invalid_names(identities: IdentityService) -> None:
    identities.create_identity("alice")
    with pytest.raises(Conflict):
        identities.create_identity("alice")
    with pytest.raises(InvalidInput):
        identities.create_identity("alice'; DROP TABLE identities; --")
    with pytest.raises(InvalidInput):
        identities.create_identity("bot", kind=IdentityKind.AGENT, password="longenough")
    assert [i.identity.name for i in identities.list()] == ["alice"]


def test_password_login(identities: IdentityService) -> None:
    identities.create_identity("alice", password="correct horse battery")
    assert identities.login("alice", "correct horse battery").name == "alice"
    with pytest.raises(Unauthenticated, match="invalid user name or password"):
        identities.login("alice", "wrong")
    with pytest.raises(Unauthenticated, match="invalid user name or password"):
        identities.login("nobody", "wrong")
    identities.update("alice", disabled=True)
    with pytest.raises(Unauthenticated):
        identities.login("alice", "correct horse battery")
    with identities.store.session() as session:
        failures = AuditLog.query(session, action="user:login_failed")
    assert [e.target_name for e in failures] == ["alice", "nobody", "alice"]


def test_token_lifecycle(identities: IdentityService) -> None:
    identities.create_identity("alice")
    info, token = identities.create_token("alice", "laptop", ttl=timedelta(days=1))
    who = identities.verify_token(token, client_addr="10.0.0.1")
    assert who.principal.name == "alice" and who.method is AuthMethod.API_TOKEN
    assert who.token_id == info.id
    with identities.store.session() as session:
        row = session.get(APITokenRow, info.id)
        assert row is not None
        assert token not in repr(row.__dict__)
        assert token[20:] not in row.secret_digest.hex()
        assert row.last_used_at is not None and row.last_used_addr == "10.0.0.1"
    assert identities.list_tokens(identity_name="alice")[0].last_used_at is not None
    with pytest.raises(Conflict):
        identities.create_token("alice", "laptop")
    identities.revoke_token(info.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        identities.verify_token(token)
    assert identities.list_tokens(identity_name="alice") == []
    assert len(identities.list_tokens(identity_name="alice", include_inactive=True)) == 1


def test_forged_and_expired_tokens(identities: IdentityService) -> None:
    identities.create_identity("alice")
    info, token = identities.create_token("alice", "t", ttl=timedelta(days=1))
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthenticated, match="unknown token"):
        identities.verify_token(forged)
    with pytest.raises(Unauthenticated, match="malformed"):
        identities.verify_token("not-a-token")
    with identities.store.session() as session:
        row = session.get(APITokenRow, info.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        identities.verify_token(token)


def test_token_lifetime_limits(identities: IdentityService) -> None:
    identities.create_identity("alice")
    with pytest.raises(InvalidInput, match="maximum"):
        identities.create_token("alice", "forever", ttl=timedelta(days=10_000))
    with pytest.raises(NotFound):
        identities.create_token("ghost", "t")


def test_agent_tokens_and_disabled_identities(identities: IdentityService) -> None:
    identities.create_identity("ci-bot", kind=IdentityKind.AGENT)
    _info, token = identities.create_token("ci-bot", "ci")
    assert identities.verify_token(token).principal.is_agent
    identities.update("ci-bot", disabled=True)
    with pytest.raises(Unauthenticated, match="disabled"):
        identities.verify_token(token)


def test_revoke_requires_owner_when_asked(identities: IdentityService) -> None:
    alice = identities.create_identity("alice").identity
    identities.create_identity("bob")
    info, _ = identities.create_token("bob", "t")
    with pytest.raises(Forbidden):
        identities.revoke_token(info.id, require_owner=alice.id)


def test_external_identity_provisioned_and_groups_synced(identities: IdentityService) -> None:
    first = identities.ensure_external(
        issuer="https://idp",
        subject="s-1",
        username="alice",
        kind=IdentityKind.USER,
        groups=["admins", "weird group!"],
        email="a@example.com",
    )
    assert first.name == "alice" and first.groups == {"admins"} and first.has_role(Role.ADMIN)
    again = identities.ensure_external(
        issuer="https://idp",
        subject="s-1",
        username="alice",
        kind=IdentityKind.USER,
        groups=["dbas"],
        email=None,
    )
    assert again.id == first.id and again.groups == {"dbas"} and not again.has_role(Role.ADMIN)
    other = identities.ensure_external(
        issuer="https://other",
        subject="s-1",
        username="alice",
        kind=IdentityKind.USER,
        groups=[],
        email=None,
    )
    assert other.name == "alice-2"


def test_every_change_is_audited(identities: IdentityService) -> None:
    identities.create_identity("alice", groups=["dbas"])
    identities.update("alice", groups=["approvers"])
    info, _ = identities.create_token("alice", "t")
    identities.revoke_token(info.id)
    identities.delete("alice")
    with identities.store.session() as session:
        actions = [e.action for e in AuditLog.query(session)]
        rows = session.scalars(select(APITokenRow)).all()
    assert actions == ["user:create", "user:update", "token:create", "token:revoke", "user:delete"]
    assert rows == []  # tokens go with their identity
