"""The risk score: each factor on its own, and operator overrides merged over the defaults."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from jitgate.config import load_settings
from jitgate.policy.risk import DEFAULT_BASE, RiskSettings, risk_score
from jitgate.sql import classify_postgres
from jitgate.sql.types import Statement

WEDNESDAY_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEFAULTS = RiskSettings()


def stmt(sql: str) -> Statement:
    return classify_postgres(sql).statements[0]


def score(
    sql: str | None = None,
    *,
    kind: str | None = None,
    tags: dict[str, str] | None = None,
    agent: bool = False,
    at: datetime = WEDNESDAY_NOON,
    settings: RiskSettings = DEFAULTS,
) -> int:
    statement = stmt(sql) if sql is not None else None
    return risk_score(
        kind=kind or (statement.kind.value if statement else "connect"),
        statement=statement,
        tags=tags or {},
        agent=agent,
        at=at,
        settings=settings,
    )


def test_kind_sets_the_base() -> None:
    assert score("SELECT * FROM t") == DEFAULT_BASE["select"] == 5
    assert score("DELETE FROM t WHERE id = 1") == DEFAULT_BASE["delete"] + 5  # + one table
    assert score("CREATE INDEX i ON t (a)") == DEFAULT_BASE["ddl"] + 5
    assert score("BEGIN") == DEFAULT_BASE["transaction"] == 0
    assert score(kind="exec") == DEFAULT_BASE["exec"]
    assert score(kind="a-kind-nobody-knows") == DEFAULTS.default_base


def test_a_prod_tag_adds_its_weight() -> None:
    plain = score("SELECT 1")
    assert score("SELECT 1", tags={"env": "prod"}) == plain + DEFAULTS.prod
    assert score("SELECT 1", tags={"env": "staging"}) == plain
    custom = RiskSettings(prod_tag="tier", prod_value="critical", prod=40)
    assert score("SELECT 1", tags={"tier": "critical"}, settings=custom) == plain + 40
    assert score("SELECT 1", tags={"env": "prod"}, settings=custom) == plain


def test_an_agent_actor_adds_its_weight() -> None:
    assert score("SELECT 1", agent=True) == score("SELECT 1") + DEFAULTS.agent


def test_rows_and_objects_touched() -> None:
    bounded = score("UPDATE t SET a = 1 WHERE id = 1")
    # Every row: no WHERE, or a WHERE that is always true.
    assert score("UPDATE t SET a = 1") == bounded + DEFAULTS.unbounded
    assert score("UPDATE t SET a = 1 WHERE true") == bounded + DEFAULTS.unbounded
    # Objects: each table written adds per_table, up to tables_cap tables.
    one = score("DROP TABLE a")
    assert score("DROP TABLE a, b") == one + DEFAULTS.per_table
    assert score("DROP TABLE a, b, c, d, e") == one + DEFAULTS.per_table * (DEFAULTS.tables_cap - 1)


@pytest.mark.parametrize(
    ("at", "off_hours"),
    [
        (datetime(2026, 11, 25, 7, 59, tzinfo=UTC), True),  # before 08:00
        (datetime(2026, 11, 25, 8, 0, tzinfo=UTC), False),  # the first business minute
        (datetime(2026, 11, 25, 17, 59, tzinfo=UTC), False),
        (datetime(2026, 11, 25, 18, 0, tzinfo=UTC), True),  # the end is exclusive
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True),  # Saturday
    ],
)
def test_time_of_day(at: datetime, off_hours: bool) -> None:
    assert score("SELECT 1", at=at) == score("SELECT 1") + (DEFAULTS.off_hours if off_hours else 0)


def test_the_score_is_clamped() -> None:
    worst = score(
        "TRUNCATE a, b, c, d",
        tags={"env": "prod"},
        agent=True,
        at=datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
    )
    assert worst == 100
    assert (
        score(
            "SELECT 1",
            settings=RiskSettings(base={"select": 0}, off_hours=-50),
            at=datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
        )
        == 0
    )


def test_operator_overrides_are_merged_over_the_documented_weights() -> None:
    settings = load_settings(
        env={}, overrides={"risk": {"base": {"ddl": 70, "vacuum": 1}, "prod": 10}}
    ).risk
    assert settings.base["ddl"] == 70 and settings.base["vacuum"] == 1
    assert {k: v for k, v in settings.base.items() if k not in ("ddl", "vacuum")} == {
        k: v for k, v in DEFAULT_BASE.items() if k != "ddl"
    }
    assert score("SELECT 1", settings=settings) == DEFAULT_BASE["select"]  # not default_base
    assert score("CREATE TABLE x (a int)", tags={"env": "prod"}, settings=settings) == 70 + 5 + 10
    assert DEFAULT_BASE["ddl"] == 55  # the documented default is untouched
    with pytest.raises(ValidationError, match=r"0\.\.100"):
        RiskSettings(base={"select": 500})
