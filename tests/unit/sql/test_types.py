"""Classification summary properties and the immutability of the SQL types."""

from __future__ import annotations

import dataclasses

import pytest

import jitgate.sql
from jitgate.sql import Classification, CommandKind, Statement

K = CommandKind


def statement(kind: CommandKind = K.SELECT, **fields: object) -> Statement:
    return Statement(kind=kind, tag=kind.value.upper(), text="", start=0, end=0, **fields)  # type: ignore[arg-type]


def test_summary_of_several_statements() -> None:
    result = Classification(
        (
            statement(
                K.SELECT, tables_read=frozenset({"a"}), functions=frozenset({"f"}), read_only=True
            ),
            statement(
                K.DELETE,
                tables_written=frozenset({"b"}),
                has_where=True,
                dangerous=("x", "y"),
            ),
            statement(K.UPDATE, tables_read=frozenset({"c"}), has_where=False, dangerous=("x",)),
        )
    )
    assert result.kinds == (K.SELECT, K.DELETE, K.UPDATE)
    assert result.tags == ("SELECT", "DELETE", "UPDATE")
    assert result.tables_read == {"a", "c"}
    assert result.tables_written == {"b"}
    assert result.functions == {"f"}
    assert result.dangerous == ("x", "y")
    assert result.has_where is False
    assert result.read_only is False


@pytest.mark.parametrize(
    ("flags", "expected"),
    [((None, None), None), ((True, None), True), ((True, False), False), ((), None)],
)
def test_has_where_summary(flags: tuple[bool | None, ...], expected: bool | None) -> None:
    result = Classification(tuple(statement(has_where=flag) for flag in flags))
    assert result.has_where is expected


def test_read_only_needs_every_statement_and_no_unknown() -> None:
    read_only = statement(read_only=True)
    assert Classification((read_only, read_only)).read_only is True
    assert Classification((read_only, statement(read_only=False))).read_only is False
    assert Classification((read_only,), unknown=True, error="x").read_only is False


def test_writes_in_cte_and_trivial_where_summaries() -> None:
    plain = statement()
    assert Classification((plain,)).writes_in_cte is False
    assert Classification((plain, statement(writes_in_cte=True))).writes_in_cte is True
    assert Classification((plain, statement(trivial_where=True))).trivial_where is True


def test_types_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        statement().kind = K.DELETE  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Classification(()).unknown = True  # type: ignore[misc]


def test_public_names() -> None:
    for name in jitgate.sql.__all__:
        assert hasattr(jitgate.sql, name), name
    assert {"Classification", "Statement", "CommandKind", "PostgresClassifier"} <= set(
        jitgate.sql.__all__
    )
