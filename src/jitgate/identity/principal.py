"""Who is acting: identities, their roles, and the result of authentication.

An :class:`Identity` is a user (human) or an agent (non-human). Authentication yields an
:class:`Authenticated`: the *principal* the action is attributed to and, when an agent
acts on behalf of a user (delegation), the *actor* — both are checked and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class IdentityKind(StrEnum):
    USER = "user"
    AGENT = "agent"


class Role(StrEnum):
    ADMIN = "admin"
    APPROVER = "approver"
    AUDITOR = "auditor"
    USER = "user"


class AuthMethod(StrEnum):
    API_TOKEN = "api_token"
    LOGIN = "login"
    OIDC = "oidc"
    DELEGATED = "delegated"


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    name: str
    kind: IdentityKind
    groups: frozenset[str] = frozenset()
    roles: frozenset[Role] = frozenset({Role.USER})

    @property
    def is_agent(self) -> bool:
        return self.kind is IdentityKind.AGENT

    def has_role(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A verified caller. ``principal`` is who the action counts for; ``actor`` the agent."""

    principal: Identity
    method: AuthMethod
    actor: Identity | None = None
    token_id: str | None = None
    delegation_id: str | None = None
    expires_at: datetime | None = None
    #: When set, the credential is valid only for these connections (delegations).
    connections: frozenset[str] | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def has_role(self, role: Role) -> bool:
        """Roles of a delegated call are those of the user *and* the agent (the lesser)."""
        if not self.principal.has_role(role):
            return False
        return self.actor is None or self.actor.has_role(role) or role is Role.USER

    def may_use(self, connection: str) -> bool:
        return self.connections is None or connection in self.connections

    @property
    def display(self) -> str:
        if self.actor is not None:
            return f"{self.actor.name} on behalf of {self.principal.name}"
        return self.principal.name
