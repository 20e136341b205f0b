"""The decision cache key: engines that read the statement text get it in the key."""

from __future__ import annotations

from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision, Request, Target
from jitgate.sql import PostgresClassifier


class TextEngine:
    version = 1
    reads_text = True

    def decide(self, request: Request) -> Decision:
        if "ssn" in request.text:
            return Decision.deny("mentions ssn")
        return Decision.allow("p")


def test_an_engine_reading_text_is_not_answered_from_another_texts_decision() -> None:
    gate = StatementGate(
        TextEngine(),
        principal=Identity("1", "a", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {}),
        client_addr=None,
    )
    classifier = PostgresClassifier()
    first = classifier.classify("SELECT * FROM people WHERE note = 'x'").statements[0]
    second = classifier.classify("SELECT * FROM people WHERE note = 'ssn'").statements[0]
    assert gate(first, first.text).allowed
    assert not gate(second, second.text).allowed
    assert gate(first, first.text).allowed and gate.hits == 1


def test_copy_direction_is_part_of_the_key() -> None:
    class Direction:
        version = 1

        def decide(self, request: Request) -> Decision:
            stmt = request.statement
            if stmt is not None and stmt.copy_direction == "to":
                return Decision.deny("no exports")
            return Decision.allow("p")

    gate = StatementGate(
        Direction(),
        principal=Identity("1", "a", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {}),
        client_addr=None,
    )
    classifier = PostgresClassifier()
    into = classifier.classify("COPY t FROM STDIN").statements[0]
    out = classifier.classify("COPY t TO STDOUT").statements[0]
    assert gate(into, into.text).allowed
    assert not gate(out, out.text).allowed


def _cedar_gate(*texts: str) -> StatementGate:
    from jitgate.policy.cedar import CedarEngine, PolicyDocument

    docs = [PolicyDocument("allow", '@id("allow") permit (principal, action, resource);')]
    docs += [PolicyDocument(f"p{i}", text) for i, text in enumerate(texts)]
    return StatementGate(
        CedarEngine(docs),
        principal=Identity("1", "a", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {}),
        client_addr=None,
    )


def test_a_text_policy_for_other_actions_keeps_the_sql_cache_on_the_classification() -> None:
    gate = _cedar_gate(
        '@id("env") forbid (principal, action == Action::"ssh:env", resource)\n'
        'when { context.text == "LD_PRELOAD" };'
    )
    classifier = PostgresClassifier()
    for aid in range(5):
        stmt = classifier.classify(f"SELECT abalance FROM acc WHERE aid = {aid}").statements[0]
        assert gate(stmt, stmt.text).allowed
    assert (gate.misses, gate.hits) == (1, 4)


def test_a_text_policy_on_a_parent_action_keys_the_cache_on_the_text() -> None:
    gate = _cedar_gate(
        '@id("no-ssn") forbid (principal, action in Action::"sql:read", resource)\n'
        'when { context.text like "*ssn*" };'
    )
    classifier = PostgresClassifier()
    plain = classifier.classify("SELECT id FROM people WHERE note = 'x'").statements[0]
    ssn = classifier.classify("SELECT id FROM people WHERE note = 'ssn'").statements[0]
    assert gate(plain, plain.text).allowed
    assert not gate(ssn, ssn.text).allowed  # same classification, another text
    assert gate(plain, plain.text).allowed and (gate.misses, gate.hits) == (2, 1)
