"""Result-column lineage: which table columns each output column is derived from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate.sql.lineage import CopyOptions, Output, Source, result_lineage

C = ("customers",)


def sources(sql: str) -> list[set[tuple[tuple[str, ...], str]]]:
    outputs = result_lineage(sql).outputs
    assert outputs is not None
    return [{(s.relation, s.column) for s in o.sources} for o in outputs]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ssn AS s FROM customers",
        "SELECT upper(ssn) FROM customers",
        "SELECT ssn || '' FROM customers",
        "SELECT c.ssn FROM customers c",
        "SELECT public.customers.ssn FROM public.customers",
        "SELECT s FROM (SELECT ssn AS s FROM customers) AS x",
        "WITH x AS (SELECT upper(ssn) AS u FROM customers) SELECT u FROM x",
        "WITH x (u) AS (SELECT ssn FROM customers) SELECT x.u FROM x",
        "SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE 'b' END FROM customers",
        "SELECT coalesce(ssn, 'none')::varchar(20) FROM customers",
        "SELECT (SELECT ssn FROM customers LIMIT 1)",
        "SELECT ARRAY(SELECT ssn FROM customers)",
        "SELECT max(ssn) FROM customers",
        "SELECT string_agg(ssn, ',') FROM customers",
        "SELECT lag(ssn) OVER (ORDER BY id) FROM customers",
        "SELECT x.y FROM customers AS x (a, y)",  # column aliases: by position
        "SELECT ssn FROM customers JOIN orders USING (id)",
        "SELECT 'x' UNION ALL SELECT ssn FROM customers",
        "UPDATE customers SET name = 'x' RETURNING ssn",
        "INSERT INTO customers (id) VALUES (1) RETURNING upper(ssn)",
        "COPY (SELECT ssn FROM customers) TO STDOUT",
        "COPY customers (ssn) TO STDOUT",
    ],
)
def test_a_value_computed_from_a_column_is_derived_from_it(sql: str) -> None:
    lineage = result_lineage(sql)
    assert lineage.outputs is not None and len(lineage.outputs) == 1
    found = lineage.outputs[0].sources
    assert any(s.relation[-1:] == C and (s.column == "ssn" or s.position == 2) for s in found), (
        found
    )
    assert any(relation[-1:] == C for relation in lineage.relations)


def test_names_do_not_matter_only_derivation() -> None:
    assert sources("SELECT ssn AS s, name AS ssn, 1 AS x FROM customers") == [
        {(C, "ssn")},
        {(C, "name")},
        set(),
    ]


def test_predicates_and_ordering_are_not_lineage() -> None:
    sql = (
        "SELECT id FROM customers WHERE ssn = '1' GROUP BY id, ssn HAVING count(ssn) > 1 "
        "ORDER BY ssn"
    )
    assert sources(sql) == [{(C, "id")}]
    assert sources("SELECT count(ssn), count(*) FROM customers") == [set(), set()]
    assert sources("SELECT EXISTS (SELECT 1 FROM customers WHERE ssn = '1')") == [set()]


def test_whole_rows() -> None:
    found = sources("SELECT row_to_json(c) FROM customers c")[0]
    assert (C, "*") in found
    assert (C, "*") in sources("SELECT to_jsonb(c.*) FROM customers c")[0]


def test_stars_are_left_to_the_catalog() -> None:
    outputs = result_lineage("SELECT *, upper(name) FROM customers").outputs
    assert outputs == (
        Output(None, relation=C, width=None),
        Output("upper", frozenset({Source(C, "name")})),
    )
    # A subquery's star is its own outputs.
    (output,) = (
        result_lineage("SELECT * FROM (SELECT upper(ssn) AS u FROM customers) s").outputs or ()
    )
    assert output.name == "u" and output.width == 1 and output.sources == {Source(C, "ssn")}
    # A star over a USING join has a shape of its own: one stretch of unknown width.
    (joined,) = result_lineage("SELECT * FROM customers JOIN orders USING (id)").outputs or ()
    assert joined.width is None and joined.relation is None
    assert {Source(C, "*"), Source(("orders",), "*")} <= joined.sources


def test_unknown_functions_are_opaque() -> None:
    outputs = result_lineage(
        "SELECT get_ssn(id), public.upper(name), pg_catalog.upper(name), upper(name) FROM customers"
    ).outputs
    assert outputs is not None
    assert [o.opaque for o in outputs] == [True, True, False, False]
    (function_star,) = result_lineage("SELECT * FROM my_rows()").outputs or ()
    assert function_star.opaque and function_star.width is None
    (builtin_star,) = result_lineage("SELECT * FROM generate_series(1, 3)").outputs or ()
    assert not builtin_star.opaque


def test_recursive_ctes_mix_their_columns() -> None:
    sql = (
        "WITH RECURSIVE r (a, b) AS (SELECT id, ssn FROM customers "
        "UNION ALL SELECT b::int, a::text FROM r) SELECT a FROM r"
    )
    assert (C, "ssn") in sources(sql)[0]


def test_statements_without_analysed_rows() -> None:
    for sql in ("FETCH 10 FROM c", "EXECUTE p", "CALL proc()", "SELECT 1; SELECT 2", "SELEC"):
        assert result_lineage(sql).outputs is None, sql
    assert result_lineage("SHOW search_path").outputs == (Output(None, width=None),)
    assert result_lineage("DECLARE c CURSOR FOR SELECT ssn FROM customers").relations == {C}
    assert result_lineage("SELECT 1 INTO t").outputs == ()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("COPY t TO STDOUT", CopyOptions()),
        ("COPY t TO STDOUT WITH BINARY", CopyOptions(format="binary")),
        ("COPY BINARY t TO STDOUT", CopyOptions(format="binary")),
        ("COPY t TO STDOUT (FORMAT 'binary')", CopyOptions(format="binary")),
        (
            "COPY t TO STDOUT (FORMAT csv, HEADER, DELIMITER ';', NULL 'x', QUOTE '''')",
            CopyOptions(format="csv", delimiter=";", null="x", quote="'", escape="'", header=True),
        ),
        ("COPY t TO STDOUT CSV", CopyOptions(format="csv", delimiter=",", null="")),
        ("COPY t TO STDOUT (FORMAT text, NULL '')", CopyOptions(null="")),
        ("COPY t TO '/tmp/x'", CopyOptions(to_client=False)),
    ],
)
def test_copy_options(sql: str, expected: CopyOptions) -> None:
    assert result_lineage(sql).copy == expected


def test_copy_of_a_whole_table_needs_its_columns() -> None:
    lineage = result_lineage("COPY customers TO STDOUT")
    assert lineage.outputs == (Output(None, relation=C, width=None),)
    assert result_lineage("COPY customers FROM STDIN").outputs == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_never_raises(sql: str) -> None:
    result_lineage(sql)


def test_deep_nesting_is_opaque_not_a_crash() -> None:
    sql = "SELECT " + "upper(" * 300 + "ssn" + ")" * 300 + " FROM customers"
    lineage = result_lineage(sql)
    assert lineage.outputs is None or lineage.opaque


def _written(sql: str) -> list[tuple[set[Source], bool, tuple[str, ...] | None]]:
    written = result_lineage(sql).written
    assert written is not None, sql
    return [(set(o.sources), o.opaque, o.relation) for o in written]


SSN = Source(("customers",), "ssn")


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE x AS SELECT ssn FROM customers",
        "SELECT upper(ssn) INTO x FROM customers",
        "CREATE MATERIALIZED VIEW m AS SELECT ssn AS s FROM customers",
        "INSERT INTO notes (body) SELECT ssn FROM customers",
        "INSERT INTO notes (body) VALUES ((SELECT ssn FROM customers LIMIT 1))",
        "UPDATE notes SET body = c.ssn FROM customers c WHERE c.id = notes.id",
        "UPDATE notes SET body = (SELECT ssn FROM customers WHERE id = 1)",
        "MERGE INTO notes n USING customers c ON n.id = c.id "
        "WHEN MATCHED THEN UPDATE SET body = c.ssn",
        "MERGE INTO notes n USING customers c ON n.id = c.id "
        "WHEN NOT MATCHED THEN INSERT (body) VALUES (c.ssn)",
        "WITH w AS (INSERT INTO notes (body) SELECT ssn FROM customers RETURNING id) "
        "SELECT * FROM w",
        "WITH q AS (SELECT ssn AS s FROM customers) INSERT INTO notes (body) SELECT s FROM q",
        "COPY (SELECT ssn FROM customers) TO '/tmp/out'",
    ],
)
def test_written_values_are_derived_from_what_feeds_them(sql: str) -> None:
    assert any(SSN in sources for sources, _opaque, _relation in _written(sql)), sql


def test_written_values_of_ordinary_writes() -> None:
    assert _written("UPDATE customers SET name = 'x' WHERE ssn = '1'") == [(set(), False, None)]
    assert _written("INSERT INTO t VALUES (1, 'a')") == [(set(), False, None)] * 2
    assert _written("UPDATE accounts SET balance = balance + 1 WHERE id = 5") == [
        ({Source(("accounts",), "balance")}, False, None)
    ]
    assert _written("DELETE FROM customers WHERE ssn = '1'") == []
    assert _written("SELECT ssn FROM customers") == []
    assert _written("COPY (SELECT ssn FROM customers) TO STDOUT") == []
    assert _written("CREATE TABLE x AS SELECT ssn FROM customers WITH NO DATA") == []


def test_written_stars_unknown_functions_and_unknown_queries() -> None:
    assert _written("INSERT INTO archive SELECT * FROM customers") == [
        (set(), False, ("customers",))
    ]
    assert _written("INSERT INTO notes SELECT f(id) FROM customers") == [
        ({Source(("customers",), "id")}, True, None)
    ]
    assert _written("CREATE TABLE x AS EXECUTE p") == [(set(), True, None)]
    assert result_lineage("INSERT INTO notes SELECT ssn FROM customers; SELECT 1").written is None
    assert result_lineage("not sql").written is None
