"""The Cedar engine and the default pack: pure decisions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jitgate.errors import InvalidInput
from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.builtin import BuiltinPolicy
from jitgate.policy.cedar import CedarEngine, PolicyDocument
from jitgate.policy.service import default_pack
from jitgate.policy.types import Outcome, Request, Target
from jitgate.sql import classify_postgres

ALICE = Identity("u1", "alice", IdentityKind.USER, frozenset({"dbas"}))
BOT = Identity("a1", "ci-bot", IdentityKind.AGENT, frozenset({"robots"}))
PROD = Target("prod-db", "postgres", {"env": "prod"})
DEV = Target("dev-db", "postgres", {"env": "dev"})
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
MIDNIGHT = datetime(2026, 11, 25, 0, 30, tzinfo=UTC)


def sql_request(
    sql: str,
    target: Target = DEV,
    *,
    principal: Identity = ALICE,
    actor: Identity | None = None,
    at: datetime = NOON,
    **context: object,
) -> Request:
    stmt = classify_postgres(sql).statements[0]
    return Request(
        action=f"sql:{stmt.kind.value}",
        principal=principal,
        actor=actor,
        target=target,
        statement=stmt,
        text=sql,
        at=at,
        context=context,
    )


@pytest.fixture(scope="module")
def default() -> CedarEngine:
    return CedarEngine([PolicyDocument("default", default_pack())])


@pytest.mark.parametrize(
    ("sql", "target", "outcome"),
    [
        ("SELECT * FROM accounts", PROD, Outcome.ALLOW),
        ("INSERT INTO t VALUES (1)", PROD, Outcome.ALLOW),
        ("DELETE FROM t WHERE id = 1", PROD, Outcome.ALLOW),
        ("DELETE FROM t", DEV, Outcome.REVIEW),
        ("UPDATE t SET a = 1 WHERE 1 = 1", DEV, Outcome.REVIEW),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", DEV, Outcome.REVIEW),
        ("DROP TABLE t", PROD, Outcome.DENY),
        ("DROP TABLE t", DEV, Outcome.ALLOW),
        ("TRUNCATE t", PROD, Outcome.DENY),
        ("SELECT pg_read_file('/etc/passwd')", DEV, Outcome.DENY),
        ("COPY t FROM PROGRAM 'id'", DEV, Outcome.DENY),
        ("SELECT dblink_exec('x', 'y')", DEV, Outcome.DENY),
        ("DO $$ BEGIN NULL; END $$", DEV, Outcome.DENY),
        ("SELEC 1", DEV, Outcome.DENY),
    ],
)
def test_default_pack(default: CedarEngine, sql: str, target: Target, outcome: Outcome) -> None:
    assert default.decide(sql_request(sql, target)).outcome is outcome


def test_default_pack_agrees_with_the_builtin_reference(default: CedarEngine) -> None:
    builtin = BuiltinPolicy()
    for sql in (
        "SELECT 1",
        "DELETE FROM t",
        "DROP TABLE t",
        "TRUNCATE t",
        "SELECT lo_import('x')",
        "UPDATE t SET a = 1 WHERE id = 2",
        "CREATE TABLE t (a int)",
        "garbage",
    ):
        for target in (PROD, DEV):
            request = sql_request(sql, target)
            assert default.decide(request).outcome is builtin.decide(request).outcome, sql


def test_reasons_render_placeholders(default: CedarEngine) -> None:
    decision = default.decide(sql_request("DROP TABLE t", PROD))
    assert decision.reason == "DROP TABLE is not allowed on production connections"
    assert decision.policies == ("deny-drop-truncate-on-prod",)
    dangerous = default.decide(sql_request("SELECT pg_ls_dir('/')", DEV))
    assert "pg_ls_dir" in (dangerous.reason or "")


def test_agents_never_run_ddl_on_prod_and_their_writes_need_review() -> None:
    engine = CedarEngine(
        [
            PolicyDocument("default", default_pack()),
            PolicyDocument(
                "agents",
                """
            @id("agents-no-ddl-on-prod") @reason("agents may not change schemas on prod")
            forbid (principal, action in Action::"sql:admin", resource)
            when { context.is_agent && resource.tags has env && resource.tags.env == "prod" };

            @id("agent-writes-reviewed") @outcome("review")
            @reason("writes by agents need approval")
            permit (principal, action in Action::"sql:write", resource)
            when { context has actor };
        """,
            ),
        ]
    )
    ddl = engine.decide(sql_request("CREATE TABLE x (a int)", PROD, actor=BOT))
    assert ddl.outcome is Outcome.DENY and ddl.reason == "agents may not change schemas on prod"
    assert engine.decide(sql_request("CREATE TABLE x (a int)", PROD)).outcome is Outcome.ALLOW
    write = engine.decide(sql_request("INSERT INTO t VALUES (1)", DEV, actor=BOT))
    assert write.outcome is Outcome.REVIEW and write.reason == "writes by agents need approval"
    assert engine.decide(sql_request("SELECT 1", DEV, actor=BOT)).outcome is Outcome.ALLOW
    # A standalone agent (no user) counts as an agent too.
    alone = engine.decide(sql_request("CREATE TABLE x (a int)", PROD, principal=BOT))
    assert alone.outcome is Outcome.DENY


def test_risk_threshold_routes_to_review() -> None:
    engine = CedarEngine(
        [
            PolicyDocument("base", "permit (principal, action, resource);"),
            PolicyDocument(
                "risk",
                """@id("risky") @outcome("review") @reason("risk {risk}")
            permit (principal, action, resource) when { context.risk >= 70 };""",
            ),
        ]
    )
    calm = engine.decide(sql_request("SELECT 1", DEV))
    assert calm.outcome is Outcome.ALLOW
    risky = engine.decide(sql_request("UPDATE t SET a = 1", PROD, actor=BOT, at=MIDNIGHT))
    assert risky.outcome is Outcome.REVIEW and risky.reason is not None
    assert int(risky.reason.split()[-1]) >= 70


def test_groups_actions_and_grants() -> None:
    engine = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        @id("dbas-read") permit (principal in Group::"dbas", action in Action::"sql:read",
                                 resource);
        @id("prod-needs-grant") @reason("production needs a just-in-time grant")
        forbid (principal, action, resource)
        when { resource.tags has env && resource.tags.env == "prod" } unless { context.has_grant };
    """,
            )
        ]
    )
    assert engine.decide(sql_request("SELECT 1", DEV)).outcome is Outcome.ALLOW
    bob = Identity("u2", "bob", IdentityKind.USER, frozenset())
    assert engine.decide(sql_request("SELECT 1", DEV, principal=bob)).outcome is Outcome.DENY
    assert (
        engine.decide(sql_request("INSERT INTO t VALUES (1)", DEV)).reason
        == "no policy permits this"
    )
    denied = engine.decide(sql_request("SELECT 1", PROD))
    assert denied.reason == "production needs a just-in-time grant"
    assert engine.decide(sql_request("SELECT 1", PROD, has_grant=True)).outcome is Outcome.ALLOW


def test_mask_annotation_becomes_the_mask_profile() -> None:
    engine = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        @mask("pci") permit (principal, action, resource)
        when { resource.tags has data && resource.tags.data == "cards" };
        permit (principal, action, resource);
    """,
            )
        ]
    )
    cards = Target("cards", "postgres", {"data": "cards"})
    assert engine.decide(sql_request("SELECT 1", cards)).mask_profile == "pci"
    assert engine.decide(sql_request("SELECT 1", DEV)).mask_profile is None


def test_broken_forbid_fails_closed_broken_permit_does_not_permit() -> None:
    engine = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        permit (principal, action, resource);
        @id("typo") forbid (principal, action, resource) when { context.riks > 5 };
    """,
            )
        ]
    )
    decision = engine.decide(sql_request("SELECT 1", DEV))
    assert decision.outcome is Outcome.DENY and "typo" in (decision.reason or "")
    only_broken_permit = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        permit (principal, action, resource) when { context.nope == 1 };
    """,
            )
        ]
    )
    assert only_broken_permit.decide(sql_request("SELECT 1", DEV)).outcome is Outcome.DENY


def test_explain_names_the_policies(default: CedarEngine) -> None:
    explanation = default.explain(sql_request("DELETE FROM t", DEV))
    names = {p.name for p in explanation.matched}
    assert names == {"default-allow", "review-unbounded-writes"}
    assert explanation.context["has_where"] is False
    assert explanation.decision.policies == ("review-unbounded-writes",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("permit(principal, action, resource) when { context.x == };", "not valid Cedar"),
        ('@outcome("maybe") permit(principal, action, resource);', "@outcome"),
        ("   ", "empty"),
    ],
)
def test_invalid_documents_are_rejected_with_cedars_error(text: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        CedarEngine([PolicyDocument("bad", text)])


def test_no_policies_means_deny() -> None:
    assert CedarEngine([]).decide(sql_request("SELECT 1")).outcome is Outcome.DENY


def test_connect_action_and_business_hours() -> None:
    engine = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        permit (principal, action == Action::"connect", resource) when { context.business_hours };
    """,
            )
        ]
    )
    request = Request(action="connect", principal=ALICE, target=DEV, at=NOON)
    assert engine.decide(request).outcome is Outcome.ALLOW
    late = Request(action="connect", principal=ALICE, target=DEV, at=MIDNIGHT)
    assert engine.decide(late).outcome is Outcome.DENY


def test_deny_first_a_forbid_or_deny_outcome_wins_over_review_and_allow() -> None:
    engine = CedarEngine(
        [
            PolicyDocument(
                "p",
                """
        @id("review-deletes") @outcome("review")
        permit (principal, action == Action::"sql:delete", resource);
        @id("allow-all") permit (principal, action, resource);
        @id("no-deletes-on-audit") @reason("audit rows are kept")
        forbid (principal, action == Action::"sql:delete", resource)
        when { context.tables_written.contains("audit") };
        @id("deny-outcome") @outcome("deny") @reason("no updates to ledger")
        permit (principal, action == Action::"sql:update", resource)
        when { context.tables_written.contains("ledger") };
    """,
            )
        ]
    )
    held = engine.decide(sql_request("DELETE FROM t WHERE id = 1"))
    assert held.outcome is Outcome.REVIEW
    denied = engine.decide(sql_request("DELETE FROM audit WHERE id = 1"))
    assert denied.outcome is Outcome.DENY and denied.reason == "audit rows are kept"
    assert denied.policies == ("no-deletes-on-audit",)
    ledger = engine.decide(sql_request("UPDATE ledger SET a = 1 WHERE id = 1"))
    assert ledger.outcome is Outcome.DENY and ledger.reason == "no updates to ledger"
    assert engine.decide(sql_request("UPDATE t SET a = 1 WHERE id = 1")).allowed


@pytest.mark.parametrize(
    ("masks", "strictest"),
    [
        (["pii", "none"], "pii"),
        (["pci", "pii"], "pci"),
        (["secrets", "pci", "pii"], "secrets"),
        (["secrets", "custom-hr"], "custom-hr"),
        (["custom-b", "custom-a"], "custom-b"),
        (["custom-z", "strict", "pii"], "strict"),
        (["none"], "none"),
    ],
)
def test_the_strictest_of_several_matching_masks_applies(masks: list[str], strictest: str) -> None:
    text = "\n".join(f'@mask("{m}") permit (principal, action, resource);' for m in masks)
    for order in (text, "\n".join(reversed(text.splitlines()))):
        engine = CedarEngine([PolicyDocument("p", order)])
        assert engine.decide(sql_request("SELECT 1")).mask_profile == strictest
    reviewed = CedarEngine(
        [PolicyDocument("p", text + ('\n@outcome("review") permit (principal, action, resource);'))]
    )
    assert reviewed.decide(sql_request("SELECT 1")).mask_profile == strictest


@pytest.mark.parametrize(
    "text",
    [
        "permit (principal == ?principal, action, resource);",
        "permit (principal, action, resource in ?resource) when { context.risk < 5 };",
        "permit (principal, action, resource);\n"
        "forbid (principal == ?principal, action, resource);",
    ],
)
def test_policy_templates_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"templates .* are not supported"):
        CedarEngine([PolicyDocument("tmpl", text)])
