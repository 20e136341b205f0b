"""The Cedar schema policies are checked against at submission."""

from __future__ import annotations

import pytest

from jitgate.errors import InvalidInput
from jitgate.policy import schema
from jitgate.policy.cedar import PolicyDocument, _action_parents
from jitgate.policy.service import default_pack
from jitgate.sql.types import CommandKind


def test_the_default_pack_validates() -> None:
    schema.check(PolicyDocument("default", default_pack()))


@pytest.mark.parametrize(
    "text",
    [
        '@id("agents-no-ddl") forbid (principal, action in Action::"sql:admin", resource)\n'
        'when { context.is_agent && resource.tags has env && resource.tags.env == "prod" };',
        'permit (principal in Group::"dbas", action in [Action::"sql:read", Action::"ssh"], '
        "resource) when { context.risk < 70 && context.business_hours };",
        'permit (principal is Agent, action == Action::"sql:update", resource)\n'
        'when { context has actor && context.actor.groups.contains("robots") &&\n'
        '       context has has_where && context.has_where && principal.name like "ci-*" };',
        'forbid (principal, action == Action::"ssh:forward", resource == Connection::"db")\n'
        'unless { context.text like "127.0.0.1:*" && context.grant_scopes.contains("x") };',
        '@mask("pci") permit (principal, action, resource)\n'
        'when { resource.tags has data && resource.tags.data == "cards" && '
        "context.hour >= 8 && context has copy_target };",
    ],
)
def test_policies_that_use_the_model_validate(text: str) -> None:
    schema.check(PolicyDocument("ok", text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '@id("typo") forbid (principal, action, resource) when { context.riks > 50 };',
            "typo: attribute `riks` in context not found",
        ),
        (
            'permit (principal, action == Action::"sql:dellete", resource);',
            'unrecognized action `Action::"sql:dellete"`',
        ),
        (
            'permit (principal, action, resource) when { context.risk == "high" };',
            "Long and String are not compatible",
        ),
        ('permit (principal, action, resource) when { principal.grups.contains("a") };', "grups"),
        (
            'permit (principal, action, resource) when { context.actor.name == "bot" };',
            "optional attribute `actor`",
        ),
        ("permit (principal is Team, action, resource);", "Team"),
    ],
)
def test_typos_and_type_errors_are_refused_with_cedars_message(text: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match="does not validate against the jitgate schema") as exc:
        schema.check(PolicyDocument("bad", text))
    assert needle in exc.value.message
    assert exc.value.message.count("riks") <= 1  # one message, not one per action


def test_every_action_the_engine_asks_about_is_declared() -> None:
    actions = schema.action_ids()
    assert {f"sql:{kind.value}" for kind in CommandKind} <= set(actions)
    assert {"connect", "ssh:exec", "ssh:line", "ssh:env", "ssh:forward"} <= set(actions)
    # The schema's hierarchy is the one the engine builds its Action entities with.
    for action, parents in actions.items():
        assert [p["id"] for p in _action_parents(action)] == parents, action
