"""The per-session decision cache: literal-only differences hit, anything else misses."""

from __future__ import annotations

from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Decision, Request, Target
from jitgate.sql import PostgresClassifier


class CountingEngine:
    def __init__(self) -> None:
        self.version = 1
        self.calls: list[Request] = []

    def decide(self, request: Request) -> Decision:
        self.calls.append(request)
        if request.statement is not None and "secrets" in request.statement.tables_read:
            return Decision.deny("no secrets")
        return Decision.allow("p")


def gate(engine: CountingEngine) -> StatementGate:
    return StatementGate(
        engine,
        principal=Identity("1", "alice", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {}),
        client_addr=None,
    )


def test_literal_changes_hit_the_cache() -> None:
    engine, classifier = CountingEngine(), PostgresClassifier()
    g = gate(engine)
    for aid in range(50):
        stmt = classifier.classify(f"SELECT abalance FROM accounts WHERE aid = {aid}").statements[0]
        assert g(stmt, stmt.text).allowed
    assert len(engine.calls) == 1 and g.hits == 49


def test_structurally_different_statements_never_share_a_decision() -> None:
    engine, classifier = CountingEngine(), PostgresClassifier()
    g = gate(engine)
    pairs = [
        ("SELECT name FROM public_data d WHERE id = 1", "SELECT name FROM secrets d WHERE id = 1"),
        ("SELECT * FROM t", "SELECT * FROM secrets"),
    ]
    for allowed, denied in pairs:
        a = classifier.classify(allowed).statements[0]
        d = classifier.classify(denied).statements[0]
        assert g(a, a.text).allowed
        assert not g(d, d.text).allowed


def test_policy_version_change_invalidates() -> None:
    engine, classifier = CountingEngine(), PostgresClassifier()
    g = gate(engine)
    stmt = classifier.classify("SELECT 1").statements[0]
    g(stmt, stmt.text)
    g(stmt, stmt.text)
    engine.version = 2
    g(stmt, stmt.text)
    assert len(engine.calls) == 2


def test_engine_errors_fail_closed() -> None:
    class Broken:
        version = 1

        def decide(self, request: Request) -> Decision:
            raise RuntimeError("boom")

    g = StatementGate(
        Broken(),
        principal=Identity("1", "a", IdentityKind.USER),
        actor=None,
        target=Target("db", "postgres", {}),
        client_addr=None,
    )
    stmt = PostgresClassifier().classify("SELECT 1").statements[0]
    decision = g(stmt, stmt.text)
    assert not decision.allowed and "policy evaluation failed" in (decision.reason or "")
