"""Delegation: an agent acting on behalf of a user (RFC 8693 token exchange).

A user consents either by creating a *delegation record* (agent, expiry, optional list of
connections) or by handing the agent one of the user's own tokens. The agent then
exchanges its own token (``actor_token``) plus that consent (``subject_token``) for a
short-lived JWT signed by the gateway::

    {"iss": ISSUER, "aud": "jitgate", "sub": <user id>, "name": <user name>,
     "act": {"sub": <agent id>, "name": <agent name>}, "jti": ..., "exp": ..., "iat": ...}

Every later check sees principal = user and actor = agent. A delegated token is refused
once it expires, once its delegation or either source token is revoked, or when the user
or agent is disabled. Delegated tokens cannot be exchanged again (no chains).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import aliased

from jitgate.audit.log import AuditLog
from jitgate.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from jitgate.identity.principal import Authenticated, AuthMethod, IdentityKind
from jitgate.identity.service import IdentityService
from jitgate.identity.signing import SigningKey
from jitgate.store.models import (
    APITokenRow,
    DelegatedTokenRow,
    DelegationRow,
    IdentityRow,
    utcnow,
)

ISSUER = "urn:jitgate:gateway"
AUDIENCE = "jitgate"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_DELEGATION = "urn:jitgate:params:token-type:delegation"


@dataclass(frozen=True, slots=True)
class DelegationInfo:
    id: str
    user: str
    agent: str
    reason: str | None
    connections: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > utcnow()


@dataclass(frozen=True, slots=True)
class ExchangedToken:
    access_token: str
    expires_at: datetime
    jti: str


class DelegationService:
    def __init__(self, identities: IdentityService, signing_key: SigningKey) -> None:
        self.identities = identities
        self.store = identities.store
        self.key = signing_key
        self.settings = identities.token_settings
        #: How the exchange checks the actor's and the consenting user's tokens: the
        #: gateway's :class:`~jitgate.identity.authenticator.Authenticator` binds its own
        #: ``authenticate`` here (API, login and OIDC tokens, expiry and revocation alike).
        self.authenticate: Callable[..., Authenticated] = identities.verify_token

    # ------------------------------------------------------------- records

    def create(
        self,
        caller: Authenticated,
        agent_name: str,
        *,
        ttl: timedelta,
        connections: Sequence[str] | None = None,
        reason: str | None = None,
        client_addr: str | None = None,
    ) -> DelegationInfo:
        if caller.actor is not None or caller.principal.kind is not IdentityKind.USER:
            raise Forbidden("only a user, acting for themselves, can delegate")
        max_ttl = timedelta(seconds=self.settings.delegation_max_ttl_seconds)
        if ttl <= timedelta(0) or ttl > max_ttl:
            raise InvalidInput(
                f"delegation lifetime must be between 1 and {int(max_ttl.total_seconds())} s"
            )
        with self.store.session() as session:
            agent = session.scalar(select(IdentityRow).where(IdentityRow.name == agent_name))
            if agent is None or agent.kind != IdentityKind.AGENT:
                raise NotFound(f"no agent named {agent_name[:128]!r}")
            row = DelegationRow(
                id=str(uuid.uuid4()),
                user_id=caller.principal.id,
                agent_id=agent.id,
                reason=reason,
                connections=sorted(set(connections)) if connections else None,
                expires_at=utcnow() + ttl,
            )
            session.add(row)
            AuditLog.record(
                session,
                "delegation:create",
                caller=caller,
                target_type="delegation",
                target_name=row.id,
                details={
                    "agent": agent_name,
                    "expires_at": row.expires_at.isoformat(),
                    "connections": row.connections,
                },
                client_addr=client_addr,
            )
            session.flush()
            return self._info(row, caller.principal.name, agent.name)

    @staticmethod
    def _info(row: DelegationRow, user: str, agent: str) -> DelegationInfo:
        return DelegationInfo(
            id=row.id,
            user=user,
            agent=agent,
            reason=row.reason,
            connections=tuple(row.connections) if row.connections else None,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    def list(
        self, *, user_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[DelegationInfo]:
        """Oldest first; ``after`` is the id of the last delegation of the previous page."""
        user, agent = aliased(IdentityRow), aliased(IdentityRow)
        with self.store.session() as session:
            stmt = (
                select(DelegationRow, user.name, agent.name)
                .join(user, DelegationRow.user_id == user.id)
                .join(agent, DelegationRow.agent_id == agent.id)
                .order_by(DelegationRow.created_at, DelegationRow.id)
                .limit(limit)
            )
            if user_id:
                stmt = stmt.where(
                    (DelegationRow.user_id == user_id) | (DelegationRow.agent_id == user_id)
                )
            if after:
                last = session.get(DelegationRow, after)
                if last is None:
                    raise InvalidInput("invalid cursor")
                stmt = stmt.where(
                    (DelegationRow.created_at > last.created_at)
                    | ((DelegationRow.created_at == last.created_at) & (DelegationRow.id > last.id))
                )
            return [self._info(row, u, a) for row, u, a in session.execute(stmt)]

    def revoke(
        self, caller: Authenticated, delegation_id: str, *, client_addr: str | None = None
    ) -> DelegationInfo:
        from jitgate.identity.principal import Role

        with self.store.session() as session:
            row = session.get(DelegationRow, delegation_id)
            if row is None:
                raise NotFound(f"no delegation {delegation_id[:40]!r}")
            if row.user_id != caller.principal.id and not caller.has_role(Role.ADMIN):
                raise Forbidden("only the delegating user or an admin can revoke a delegation")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                AuditLog.record(
                    session,
                    "delegation:revoke",
                    caller=caller,
                    target_type="delegation",
                    target_name=row.id,
                    client_addr=client_addr,
                )
            user = session.get(IdentityRow, row.user_id)
            agent = session.get(IdentityRow, row.agent_id)
            session.flush()
            return self._info(row, user.name if user else "?", agent.name if agent else "?")

    # ------------------------------------------------------------ exchange

    def exchange(
        self,
        *,
        actor_token: str,
        subject_token: str,
        subject_token_type: str,
        client_addr: str | None = None,
    ) -> ExchangedToken:
        actor = self.authenticate(actor_token, client_addr=client_addr)
        if actor.actor is not None:
            raise Forbidden("a delegated token cannot act in another token exchange")
        if actor.principal.kind is not IdentityKind.AGENT:
            raise Forbidden("the actor token must be an agent's own token")
        now = utcnow()
        expires = now + timedelta(seconds=self.settings.delegated_token_ttl_seconds)
        if actor.expires_at is not None:
            expires = min(expires, actor.expires_at)
        delegation_id = subject_token_id = None
        connections: list[str] | None = None
        if subject_token_type == TOKEN_TYPE_DELEGATION:
            with self.store.session() as session:
                record = session.get(DelegationRow, subject_token)
                if record is None or record.agent_id != actor.principal.id:
                    raise Forbidden("no delegation from that user to this agent")
                if record.revoked_at is not None:
                    raise Forbidden("the delegation has been revoked")
                if record.expires_at <= now:
                    raise Forbidden("the delegation has expired")
                user_row = session.get(IdentityRow, record.user_id)
                assert user_row is not None
                user = self.identities.to_identity(user_row)
                if user_row.disabled:
                    raise Forbidden("the delegating user is disabled")
                delegation_id, connections = record.id, record.connections
                expires = min(expires, record.expires_at)
        elif subject_token_type in (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT):
            subject = self.authenticate(subject_token, client_addr=client_addr)
            if subject.actor is not None:
                raise Forbidden("a delegated token cannot consent to another delegation")
            if subject.principal.kind is not IdentityKind.USER:
                raise Forbidden("the subject token must belong to a user")
            user = subject.principal
            subject_token_id = _revocable_id(subject)
            if subject.expires_at is not None:
                expires = min(expires, subject.expires_at)
        else:
            raise InvalidInput(f"unsupported subject_token_type {subject_token_type[:80]!r}")
        jti = str(uuid.uuid4())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user.id,
            "name": user.name,
            "act": {"sub": actor.principal.id, "name": actor.principal.name},
            "jti": jti,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        if connections:
            claims["connections"] = connections
        with self.store.session() as session:
            session.add(
                DelegatedTokenRow(
                    jti=jti,
                    user_id=user.id,
                    agent_id=actor.principal.id,
                    delegation_id=delegation_id,
                    subject_token_id=subject_token_id,
                    actor_token_id=_revocable_id(actor),
                    expires_at=expires,
                )
            )
            AuditLog.record(
                session,
                "delegation:exchange",
                caller=Authenticated(
                    principal=user, actor=actor.principal, method=AuthMethod.DELEGATED
                ),
                target_type="delegated_token",
                target_name=jti,
                details={"delegation_id": delegation_id, "expires_at": expires.isoformat()},
                client_addr=client_addr,
            )
        return ExchangedToken(self.key.sign_jwt(claims), expires, jti)

    def verify(self, token: str) -> Authenticated:
        try:
            _header, claims = self.key.verify_jwt(token)
        except ValueError as exc:
            raise Unauthenticated(str(exc)) from None
        now = utcnow()
        if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
            raise Unauthenticated("not a delegated token")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now.timestamp():
            raise Unauthenticated("token expired")
        jti = claims.get("jti")
        with self.store.session() as session:
            row = session.get(DelegatedTokenRow, jti) if isinstance(jti, str) else None
            if row is None:
                raise Unauthenticated("unknown token")
            if row.revoked_at is not None:
                raise Unauthenticated("token revoked")
            if row.delegation_id is not None:
                record = session.get(DelegationRow, row.delegation_id)
                if record is None or record.revoked_at is not None:
                    raise Unauthenticated("delegation revoked")
                if record.expires_at <= now:
                    raise Unauthenticated("delegation expired")
            for token_id in (row.subject_token_id, row.actor_token_id):
                if token_id is None:
                    continue
                source = session.get(APITokenRow, token_id)
                if source is None or source.revoked_at is not None:
                    raise Unauthenticated("a token this delegation came from was revoked")
            user_row = session.get(IdentityRow, row.user_id)
            agent_row = session.get(IdentityRow, row.agent_id)
            if user_row is None or agent_row is None or user_row.disabled or agent_row.disabled:
                raise Unauthenticated("identity is disabled")
            connections = claims.get("connections")
            return Authenticated(
                principal=self.identities.to_identity(user_row),
                actor=self.identities.to_identity(agent_row),
                method=AuthMethod.DELEGATED,
                token_id=row.jti,
                delegation_id=row.delegation_id,
                expires_at=row.expires_at,
                connections=frozenset(connections) if isinstance(connections, list) else None,
            )


def _revocable_id(who: Authenticated) -> str | None:
    """The id of the gateway token behind ``who``, when revoking it must end the delegated
    tokens exchanged with it (an OIDC token is not ours to revoke; it expires)."""
    if who.method in (AuthMethod.API_TOKEN, AuthMethod.LOGIN):
        return who.token_id
    return None
