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
