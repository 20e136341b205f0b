"""The risk score (0–100) policies can read as ``context.risk``.

It is a small, additive, documented function, tunable in the ``risk`` section of the
configuration::

    risk = base[kind]                                  # what the statement does
         + prod          if the connection is tagged env=prod (tag configurable)
         + agent         if an agent acts (alone or on behalf of a user)
         + unbounded     if an UPDATE/DELETE has no WHERE (or an always-true one)
         + dangerous     if the classifier flagged it (file access, programs, …)
         + per_table     × number of tables written (objects touched), capped at tables_cap
         + off_hours     outside business hours (hour in [start, end), Monday–Friday, UTC)
    clamped to 0..100

so an operator can write ``@outcome("review") permit(...) when { context.risk >= 70 };``.
Operator overrides of ``base`` are merged over the documented weights below, kind by kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jitgate.sql.types import Statement

DEFAULT_BASE: dict[str, int] = {
    "select": 5, "show": 0, "explain": 5, "empty": 0, "set": 5, "transaction": 0,
    "cursor": 5, "listen": 5, "notify": 10, "prepare": 10, "execute": 20, "deallocate": 0,
    "insert": 20, "update": 30, "delete": 40, "merge": 35, "copy": 25, "call": 40,
    "lock": 30, "maintenance": 30, "session": 10, "truncate": 70, "ddl": 55, "dcl": 65,
    "do": 70, "unknown": 90, "connect": 10, "exec": 40, "shell": 50,
    "line": 40, "sftp_read": 10, "sftp_write": 30, "forward": 35, "env": 5,
}  # fmt: skip


class RiskSettings(BaseModel):
    """The weights. ``base`` given by the operator is merged over :data:`DEFAULT_BASE`
    (``base: {ddl: 70}`` changes DDL only; every other kind keeps its documented weight)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_BASE))
    default_base: int = 30
    prod: int = 25
    prod_tag: str = "env"
    prod_value: str = "prod"
    agent: int = 15
    unbounded: int = 20
    dangerous: int = 30
    per_table: int = 5
    tables_cap: int = 3
    off_hours: int = 10
    business_start_hour: int = Field(default=8, ge=0, le=23)
    business_end_hour: int = Field(default=18, ge=1, le=24)

    @field_validator("base", mode="before")
    @classmethod
    def _merge_base(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {**DEFAULT_BASE, **value}
        return value

    @field_validator("base", mode="after")
    @classmethod
    def _check_base(cls, value: dict[str, int]) -> dict[str, int]:
        wrong = sorted(kind for kind, weight in value.items() if not 0 <= weight <= 100)
        if wrong:
            raise ValueError(f"base weights must be 0..100 (see {', '.join(wrong)})")
        return value


def is_business_hours(at: datetime, settings: RiskSettings) -> bool:
    return at.weekday() < 5 and settings.business_start_hour <= at.hour < settings.business_end_hour


def risk_score(
    *,
    kind: str,
    statement: Statement | None,
    tags: Mapping[str, str],
    agent: bool,
    at: datetime,
    settings: RiskSettings,
) -> int:
    score = settings.base.get(kind, settings.default_base)
    if tags.get(settings.prod_tag) == settings.prod_value:
        score += settings.prod
    if agent:
        score += settings.agent
    if statement is not None:
        if statement.has_where is False or (statement.has_where and statement.trivial_where):
            score += settings.unbounded
        if statement.dangerous:
            score += settings.dangerous
        score += settings.per_table * min(len(statement.tables_written), settings.tables_cap)
    if not is_business_hours(at, settings):
        score += settings.off_hours
    return max(0, min(100, score))
