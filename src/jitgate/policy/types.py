"""What the policy engine is asked and what it answers.

A :class:`Request` is one inspected unit of a session — a SQL statement, an SSH command,
an API call, or the act of connecting — with who is asking (principal and, when an agent
acts for a user, actor), the connection (with its tags) and the classification.
A :class:`Decision` is allow, deny (with a reason) or review (needs approval), with an
optional mask profile for the response. Engines are pure: no I/O, no clock reads other
than the ``at`` carried in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from jitgate.identity.principal import Identity
from jitgate.sql.types import Statement


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Target:
    """The connection as policy sees it: no host, no credential."""

    name: str
    type: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    action: str  # e.g. "connect", "sql:select", "sql:delete", "ssh:exec"
    principal: Identity
    target: Target
    actor: Identity | None = None
    statement: Statement | None = None
    text: str = ""
    client_addr: str | None = None
    at: datetime | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unknown(self) -> bool:
        return self.statement is not None and self.statement.kind == "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str | None = None
    mask_profile: str | None = None
    policies: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @classmethod
    def allow(cls, *policies: str, mask_profile: str | None = None) -> Decision:
        return cls(Outcome.ALLOW, None, mask_profile, policies)

    @classmethod
    def deny(cls, reason: str, *policies: str) -> Decision:
        return cls(Outcome.DENY, reason, None, policies)

    @classmethod
    def review(cls, reason: str, *policies: str) -> Decision:
        return cls(Outcome.REVIEW, reason, None, policies)


class PolicyEngine(Protocol):
    """Pure decision function. ``version`` changes whenever the policies change."""

    @property
    def version(self) -> int: ...

    def decide(self, request: Request) -> Decision: ...
