"""Approval rules: who approves access to which connections, and within what limits.

A rule matches a connection by name and/or tags; the matching rule with the lowest
``priority`` applies, else :data:`DEFAULT_RULE`. A rule has one or more *steps* that must
all pass in order; a step passes with ``min_approvals`` approvals from members of its
``groups`` (an empty list means anyone with the approver role). Nobody approves their
own request unless ``allow_self_approval``. Requests from members of
``auto_approve_groups`` are approved at once (optionally only during business hours).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jitgate.errors import InvalidInput
from jitgate.identity.principal import Identity, Role


@dataclass(frozen=True, slots=True)
class Step:
    groups: tuple[str, ...] = ()
    min_approvals: int = 1
    name: str | None = None

    def admits(self, approver: Identity) -> bool:
        if not self.groups:
            return approver.has_role(Role.APPROVER)
        return bool(approver.groups.intersection(self.groups)) or approver.has_role(Role.ADMIN)

    def to_json(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "min_approvals": self.min_approvals, "name": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        groups = data.get("groups") or []
        minimum = int(data.get("min_approvals", 1))
        if minimum < 1 or minimum > 20:
            raise InvalidInput("min_approvals must be between 1 and 20")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidInput("step groups must be a list of group names")
        return cls(tuple(groups), minimum, data.get("name"))


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    name: str
    steps: tuple[Step, ...] = (Step(),)
    priority: int = 100
    connections: tuple[str, ...] | None = None
    tags: Mapping[str, str] | None = None
    allow_self_approval: bool = False
    auto_approve_groups: tuple[str, ...] = ()
    auto_approve_business_hours_only: bool = False
    max_duration_seconds: int = 8 * 3600
    max_uses: int | None = None
    pending_expiry_seconds: int = 3600
    allow_break_glass: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, connection: str, tags: Mapping[str, str]) -> bool:
        if self.connections is not None and connection not in self.connections:
            return False
        return not self.tags or all(tags.get(k) == v for k, v in self.tags.items())


DEFAULT_RULE = ApprovalRule(name="default")


def pick_rule(
    rules: Sequence[ApprovalRule], connection: str, tags: Mapping[str, str]
) -> ApprovalRule:
    for rule in sorted(rules, key=lambda r: (r.priority, r.name)):
        if rule.matches(connection, tags):
            return rule
    return DEFAULT_RULE
