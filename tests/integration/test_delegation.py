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
    TOKEN_TYPE_JWT,
    DelegationService,
)
from jitgate.identity.oidc import OIDCValidator
from jitgate.identity.principal import AuthMethod, IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.identity.signing import SigningKey
from jitgate.store.db import Store
from jitgate.store.models import DelegationRow, utcnow
from tests.fixtures.oidc import OIDCProvider


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
    exchanged = d.exchange(
        actor_token=world["bot_token"],
        subject_token=record.id,
        subject_token_type=TOKEN_TYPE_DELEGATION,
    )
    who = world["auth"].authenticate(exchanged.access_token)
    assert who.principal.name == "alice" and who.actor is not None
    assert who.actor.name == "ci-bot" and who.method is AuthMethod.DELEGATED
    assert who.connections == {"db1"} and who.may_use("db1") and not who.may_use("db2")
    assert who.display == "ci-bot on behalf of alice"
    assert exchanged.expires_at <= record.expires_at


def test_exchange_with_user_token(world: dict) -> None:
    d: DelegationService = world["delegations"]
    exchanged = d.exchange(
        actor_token=world["bot_token"],
        subject_token=world["alice_token"],
        subject_token_type=TOKEN_TYPE_ACCESS,
    )
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
        d.exchange(
            actor_token=world["other_token"],
            subject_token=record.id,
            subject_token_type=TOKEN_TYPE_DELEGATION,
        )


def test_user_cannot_be_actor_and_agent_cannot_be_subject(world: dict) -> None:
    d: DelegationService = world["delegations"]
    with pytest.raises(Forbidden, match="agent"):
        d.exchange(
            actor_token=world["alice_token"],
            subject_token=world["alice_token"],
            subject_token_type=TOKEN_TYPE_ACCESS,
        )
    with pytest.raises(Forbidden, match="user"):
        d.exchange(
            actor_token=world["bot_token"],
            subject_token=world["other_token"],
            subject_token_type=TOKEN_TYPE_ACCESS,
        )
    with pytest.raises(InvalidInput):
        d.exchange(
            actor_token=world["bot_token"], subject_token="x", subject_token_type="urn:unknown"
        )


def test_revoked_and_expired_delegations(world: dict) -> None:
    d: DelegationService = world["delegations"]
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    token = d.exchange(
        actor_token=world["bot_token"],
        subject_token=record.id,
        subject_token_type=TOKEN_TYPE_DELEGATION,
    ).access_token
    d.revoke(world["alice"], record.id)
    with pytest.raises(Unauthenticated, match="delegation revoked"):
        world["auth"].authenticate(token)
    with pytest.raises(Forbidden, match="revoked"):
        d.exchange(
            actor_token=world["bot_token"],
            subject_token=record.id,
            subject_token_type=TOKEN_TYPE_DELEGATION,
        )
    second = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    with d.store.session() as session:
        row = session.get(DelegationRow, second.id)
        row.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(Forbidden, match="expired"):
        d.exchange(
            actor_token=world["bot_token"],
            subject_token=second.id,
            subject_token_type=TOKEN_TYPE_DELEGATION,
        )


def test_forged_delegated_token(world: dict) -> None:
    d: DelegationService = world["delegations"]
    token = d.exchange(
        actor_token=world["bot_token"],
        subject_token=world["alice_token"],
        subject_token_type=TOKEN_TYPE_ACCESS,
    ).access_token
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
    delegated = d.exchange(
        actor_token=world["bot_token"],
        subject_token=world["alice_token"],
        subject_token_type=TOKEN_TYPE_ACCESS,
    ).access_token
    assert world["auth"].authenticate(delegated).actor is not None  # a valid token …
    # … that cannot consent to a further delegation, as an access token or as a JWT
    for token_type in (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT):
        with pytest.raises(Forbidden, match="cannot consent"):
            d.exchange(
                actor_token=world["other_token"],
                subject_token=delegated,
                subject_token_type=token_type,
            )
    # … nor act in one, whatever the consent
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    with pytest.raises(Forbidden, match="cannot act"):
        d.exchange(
            actor_token=delegated, subject_token=record.id, subject_token_type=TOKEN_TYPE_DELEGATION
        )
    with pytest.raises(Forbidden, match="cannot act"):
        d.exchange(
            actor_token=delegated,
            subject_token=world["alice_token"],
            subject_token_type=TOKEN_TYPE_ACCESS,
        )


def test_exchange_checks_tokens_like_every_request(world: dict) -> None:
    d: DelegationService = world["delegations"]
    identities: IdentityService = world["identities"]
    _, short = identities.create_token("alice", "short", ttl=timedelta(seconds=60))
    with identities.store.session() as session:
        from jitgate.store.models import APITokenRow

        for row in session.query(APITokenRow).filter(APITokenRow.name == "short"):
            row.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        d.exchange(
            actor_token=world["bot_token"],
            subject_token=short,
            subject_token_type=TOKEN_TYPE_ACCESS,
        )
    bot = identities.verify_token(world["bot_token"])
    identities.revoke_token(bot.token_id)
    record = d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5))
    with pytest.raises(Unauthenticated, match="revoked"):
        d.exchange(
            actor_token=world["bot_token"],
            subject_token=record.id,
            subject_token_type=TOKEN_TYPE_DELEGATION,
        )


def test_oidc_user_token_as_consent(store: Store, oidc_provider: OIDCProvider) -> None:
    identities = IdentityService(store, RolesSettings(), TokenSettings())
    delegations = DelegationService(identities, SigningKey.generate())
    validator = OIDCValidator(oidc_provider.settings())
    try:
        _oidc_consent(identities, delegations, validator, oidc_provider)
    finally:
        validator.close()


def _oidc_consent(
    identities: IdentityService,
    delegations: DelegationService,
    validator: OIDCValidator,
    oidc_provider: OIDCProvider,
) -> None:
    auth = Authenticator(identities, delegations, validator, cache_seconds=0)
    identities.create_identity("ci-bot", kind=IdentityKind.AGENT)
    _, bot_token = identities.create_token("ci-bot", "t")
    idp = oidc_provider.login_device("alice", "alice-password")
    consent = auth.authenticate(idp.access_token)
    assert consent.method is AuthMethod.OIDC and consent.expires_at is not None

    exchanged = delegations.exchange(
        actor_token=bot_token, subject_token=idp.access_token, subject_token_type=TOKEN_TYPE_JWT
    )
    who = auth.authenticate(exchanged.access_token)
    assert (who.principal.name, who.actor.name) == ("alice", "ci-bot")
    assert who.principal.id == consent.principal.id and who.method is AuthMethod.DELEGATED
    assert exchanged.expires_at <= consent.expires_at  # never outlives the consent

    # An IdP-issued agent token may act too; an IdP agent cannot consent as a user.
    machine = oidc_provider.client_credentials_token()
    by_idp_agent = delegations.exchange(
        actor_token=machine, subject_token=idp.access_token, subject_token_type=TOKEN_TYPE_JWT
    )
    assert auth.authenticate(by_idp_agent.access_token).actor.kind is IdentityKind.AGENT
    with pytest.raises(Forbidden, match="user"):
        delegations.exchange(
            actor_token=bot_token, subject_token=machine, subject_token_type=TOKEN_TYPE_JWT
        )
    header, payload, signature = idp.access_token.split(".")
    forged = ("B" if signature[0] == "A" else "A") + signature[1:]
    with pytest.raises(Unauthenticated):
        delegations.exchange(
            actor_token=bot_token,
            subject_token=f"{header}.{payload}.{forged}",
            subject_token_type=TOKEN_TYPE_JWT,
        )


def test_delegations_listed_page_by_page(world: dict) -> None:
    d: DelegationService = world["delegations"]
    made = [d.create(world["alice"], "ci-bot", ttl=timedelta(minutes=5)).id for _ in range(5)]
    seen: list[str] = []
    after = None
    while True:
        page = d.list(after=after, limit=2)
        seen += [i.id for i in page]
        if len(page) < 2:
            break
        after = page[-1].id
    assert sorted(seen) == sorted(made) and len(seen) == len(made)
    assert [i.user for i in d.list(limit=1)] == ["alice"]
    with pytest.raises(InvalidInput):
        d.list(after="no-such-delegation")


def test_only_users_delegate_and_ttl_bounded(world: dict) -> None:
    d: DelegationService = world["delegations"]
    bot = world["identities"].verify_token(world["bot_token"])
    with pytest.raises(Forbidden):
        d.create(bot, "other-bot", ttl=timedelta(minutes=5))
    with pytest.raises(InvalidInput):
        d.create(world["alice"], "ci-bot", ttl=timedelta(days=3))
