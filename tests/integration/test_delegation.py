"""Agent-on-behalf-of-user delegation (RFC 8693 token exchange)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jitgate.config import RolesSettings, TokenSettings
from jitgate.errors import Forbidden, InvalidInput, Unauthenticated
from jitgate.identity.authenticator import Authenticator
from jitgate.identity.delegation import (
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_DELEGATION,
    DelegationService,
)
from jitgate.identity.principal import AuthMethod, IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.identity.signing import SigningKey
from jitgate.store.db import Store
from jitgate.store.models import DelegationRow, utcnow


@pytest.fixture
def world(store: Store) -> dict[str, object]:
    identities = IdentityService(store, RolesSettings(), TokenSettings())
    delegations = DelegationService(identities, SigningKey.generate())
    identities.create_identity("alice", groups=["dbas"])
    identities.create_identity("ci-bot", kind=IdentityKind.AGENT)
    identities.create_identity("other-bot", kind=IdentityKind.AGENT)
    _, alice_token = identities.create_token("alice", "t")
    _, bot_token = identities.create_token("ci-bot", "t")
    _, other_token = identities.create_token("other-bot", "t")
    alice = identities.verify_token(alice_token)
    return {
        "identities": identities,
        "delegations": delegations,
        "auth": Authenticator(identities, delegations, cache_seconds=0),
        "alice": alice,
        "alice_token": alice_token,
        "bot_token": bot_token,
        "other_token": other_token,
    }


def test_exchange_with_delegation_record(world: dict) -> None:
    d: DelegationService = world["delegations"]
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=30), connections=["db1"])
    exchanged = d.exchange(actor_token=world["bot_token"], subject_token=record.id,
                           subject_token_type=TOKEN_TYPE_DELEGATION)
    who = world["auth"].authenticate(exchanged.access_token)
    assert who.principal.name == "alice" and who.actor is not None
    assert who.actor.name == "ci-bot" and who.method is AuthMethod.DELEGATED
    assert who.connections == {"db1"} and who.may_use("db1") and not who.may_use("db2")
    assert who.display == "ci-bot on behalf of alice"
    assert exchanged.expires_at <= record.expires_at


def test_exchange_with_user_token(world: dict) -> None:
    d: DelegationService = world["delegations"]
    exchanged = d.exchange(actor_token=world["bot_token"], subject_token=world["alice_token"],
                           subject_token_type=TOKEN_TYPE_ACCESS)
    who = world["auth"].authenticate(exchanged.access_token)
    assert (who.principal.name, who.actor.name) == ("alice", "ci-bot")
    # Revoking the user's token that gave consent ends the delegated token too.
    world["identities"].revoke_token(world["alice"].token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        world["auth"].authenticate(exchanged.access_token)


def test_mismatched_agent_refused(world: dict) -> None:
    d: DelegationService = world["delegations"]
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    with pytest.raises(Forbidden, match="no delegation"):
        d.exchange(actor_token=world["other_token"], subject_token=record.id,
                   subject_token_type=TOKEN_TYPE_DELEGATION)


def test_user_cannot_be_actor_and_agent_cannot_be_subject(world: dict) -> None:
    d: DelegationService = world["delegations"]
    with pytest.raises(Forbidden, match="agent"):
        d.exchange(actor_token=world["alice_token"], subject_token=world["alice_token"],
                   subject_token_type=TOKEN_TYPE_ACCESS)
    with pytest.raises(Forbidden, match="user"):
        d.exchange(actor_token=world["bot_token"], subject_token=world["other_token"],
                   subject_token_type=TOKEN_TYPE_ACCESS)
    with pytest.raises(InvalidInput):
        d.exchange(actor_token=world["bot_token"], subject_token="x",
                   subject_token_type="urn:unknown")


def test_revoked_and_expired_delegations(world: dict) -> None:
    d: DelegationService = world["delegations"]
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    token = d.exchange(actor_token=world["bot_token"], subject_token=record.id,
                       subject_token_type=TOKEN_TYPE_DELEGATION).access_token
    d.revoke(world["alice"], record.id)
    with pytest.raises(Unauthenticated, match="delegation revoked"):
        world["auth"].authenticate(token)
    with pytest.raises(Forbidden, match="revoked"):
        d.exchange(actor_token=world["bot_token"], subject_token=record.id,
                   subject_token_type=TOKEN_TYPE_DELEGATION)
    second = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    with d.store.session() as session:
        row = session.get(DelegationRow, second.id)
        row.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(Forbidden, match="expired"):
        d.exchange(actor_token=world["bot_token"], subject_token=second.id,
                   subject_token_type=TOKEN_TYPE_DELEGATION)


def test_forged_delegated_token(world: dict) -> None:
    d: DelegationService = world["delegations"]
    token = d.exchange(actor_token=world["bot_token"], subject_token=world["alice_token"],
                       subject_token_type=TOKEN_TYPE_ACCESS).access_token
    impostor = DelegationService(world["identities"], SigningKey.generate())
    with pytest.raises(Unauthenticated):
        impostor.verify(token)
    header, payload, signature = token.split(".")
    # Change the first character: all six of its bits are signature bits (the last
    # character's low bits are padding, so changing those may change nothing at all).
    forged = ("B" if signature[0] == "A" else "A") + signature[1:]
    with pytest.raises(Unauthenticated):
        world["auth"].authenticate(f"{header}.{payload}.{forged}")


def test_no_delegation_chains(world: dict) -> None:
    d: DelegationService = world["delegations"]
    token = d.exchange(actor_token=world["bot_token"], subject_token=world["alice_token"],
                       subject_token_type=TOKEN_TYPE_ACCESS).access_token
    with pytest.raises(Unauthenticated):
        d.exchange(actor_token=world["bot_token"], subject_token=token,
                   subject_token_type=TOKEN_TYPE_ACCESS)


def test_only_users_delegate_and_ttl_bounded(world: dict) -> None:
    d: DelegationService = world["delegations"]
    bot = world["identities"].verify_token(world["bot_token"])
    with pytest.raises(Forbidden):
        d.create(bot, "other-bot", ttl=timedelta(minutes=5))
    with pytest.raises(InvalidInput):
        d.create(world["alice"], "ci-bot", ttl=timedelta(days=3))
