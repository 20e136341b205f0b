"""The classifier's two caches: exact text, and fingerprint (same statement, other constants)."""

from __future__ import annotations

import dataclasses

import pytest

from jitgate.sql import Classification, PostgresClassifier, classify_postgres
from jitgate.sql.types import CommandKind

PGBENCH_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
PGBENCH_SCRIPT = (
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}; "
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}; "
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, 1, {aid}, {delta}, CURRENT_TIMESTAMP);"
)


def cold(sql: str) -> Classification:
    return PostgresClassifier(exact_cache_size=0, fingerprint_cache_size=0).classify(sql)


def test_exact_hit_returns_the_same_object() -> None:
    classifier = PostgresClassifier()
    first = classifier.classify("SELECT * FROM t WHERE id = 1")
    second = classifier.classify("SELECT * FROM t WHERE id = 1")
    assert second is first
    assert classifier.stats.exact_hits == 1
    assert classifier.stats.misses == 1


def test_fingerprint_hit_rebuilds_text_and_offsets() -> None:
    classifier = PostgresClassifier()
    classifier.classify(PGBENCH_SELECT.format(1))
    sql = PGBENCH_SELECT.format(98765)
    result = classifier.classify(sql)
    assert classifier.stats.fingerprint_hits == 1
    (statement,) = result.statements
    assert statement.text == "SELECT abalance FROM pgbench_accounts WHERE aid = 98765"
    assert (statement.start, statement.end) == (0, len(sql) - 1)
    assert result == cold(sql)


def test_fingerprint_hit_for_a_script_with_non_ascii_constants() -> None:
    classifier = PostgresClassifier()
    classifier.classify(PGBENCH_SCRIPT.format(delta=-1, aid=2, tid=3))
    classifier.classify("SELECT 'a'; DELETE FROM t WHERE name = 'b'")
    for sql in (
        PGBENCH_SCRIPT.format(delta=-4313, aid=123456, tid=77),
        "SELECT 'äöü 🎉 long'; DELETE FROM t WHERE name = 'ß'",
    ):
        result = classifier.classify(sql)
        assert result == cold(sql)
        for statement in result.statements:
            assert sql[statement.start : statement.end] == statement.text
    assert classifier.stats.fingerprint_hits == 2


def test_fingerprint_cache_reuses_only_for_other_constants_or_parameters() -> None:
    classifier = PostgresClassifier()
    classifier.classify("SELECT * FROM t WHERE id = 1")
    for sql in ("SELECT * FROM t WHERE id = 2", "SELECT * FROM t WHERE id = $1"):
        assert classifier.classify(sql) == cold(sql)
    assert classifier.stats.fingerprint_hits == 2
    for sql in ("SELECT * FROM t WHERE id = 1 /* traced */", "SELECT * FROM t  WHERE id = 1"):
        assert classifier.classify(sql) == cold(sql)
    assert classifier.stats.fingerprint_hits == 2
    assert classifier.stats.fingerprint_entries == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # Pairs alike to libpg_query's fingerprint or to its normalized text (most share
        # one fingerprint: aliased relation names, schemas and digits are ignored).
        ("SELECT * FROM users u WHERE id = 1", "SELECT * FROM payroll u WHERE id = 1"),
        ("SELECT * FROM s1.t", "SELECT * FROM s2.t"),
        ("SELECT * FROM orders_2024", "SELECT * FROM orders_2025"),
        ("SELECT a, f() FROM t", "SELECT a, f(), pg_read_file('x') FROM t"),
        ("SELECT f(a, b) FROM t", "SELECT f(b, a) FROM t"),
        # $1 and 1 have one fingerprint and one normalized text
        ("DELETE FROM t WHERE $1 = $2", "DELETE FROM t WHERE 1 = 1"),
        ("DELETE FROM t WHERE 1 = 1", "DELETE FROM t WHERE $1 = $2"),
        ("DELETE FROM t WHERE f($1) = f($2)", "DELETE FROM t WHERE f(1) = f(1)"),
        ("DELETE FROM t WHERE $1", "DELETE FROM t WHERE true"),
        # one normalized text (the constant becomes $1, glued to bool): the fingerprint differs
        ("DELETE FROM t WHERE bool$1", "DELETE FROM t WHERE bool't'"),
        ("DELETE FROM t WHERE 1 = 2", "DELETE FROM t WHERE 1 = 1"),
        ("DELETE FROM t WHERE 1 = 1", "DELETE FROM t WHERE 1 = 2"),
        ("DELETE FROM t WHERE 'a' = 'b'", "DELETE FROM t WHERE 'a' = 'a'"),
        ("DELETE FROM t WHERE f(1) = f(2)", "DELETE FROM t WHERE f(1) = f(1)"),
        ("DELETE FROM t WHERE x IN (1, 2)", "DELETE FROM t WHERE 1 IN (1, 2)"),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", "EXPLAIN (ANALYZE true) DELETE FROM t"),
        ("EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t"),
        (
            "EXPLAIN (ANALYZE false, ANALYZE false) DELETE FROM t",
            "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t",
        ),
        ("START TRANSACTION READ WRITE", "START TRANSACTION READ ONLY"),
        ("COPY t TO STDOUT", "COPY t TO '/etc/x'"),
        ("FETCH 5 FROM c", "FETCH 6 FROM c"),
        ("PREPARE a AS SELECT 1", "PREPARE b AS SELECT 1"),
        ("EXECUTE a", "EXECUTE b"),
        ("CREATE TABLE t AS EXECUTE a", "CREATE TABLE t AS EXECUTE b"),
        ("CREATE TABLE t AS EXECUTE a(1)", "CREATE TABLE t AS EXECUTE a(2)"),
        (
            "EXPLAIN ANALYZE CREATE TABLE t AS EXECUTE a",
            "EXPLAIN ANALYZE CREATE TABLE t AS EXECUTE b",
        ),
    ],
)
def test_cached_result_always_equals_a_fresh_classification(first: str, second: str) -> None:
    classifier = PostgresClassifier()
    assert classifier.classify(first) == cold(first)
    assert classifier.classify(second) == cold(second)
    assert classifier.classify(first) == cold(first)


def test_literal_dependent_results_stay_out_of_the_fingerprint_cache() -> None:
    classifier = PostgresClassifier()
    trivial = classifier.classify("DELETE FROM t WHERE 1 = 1")
    assert trivial.statements[0].trivial_where is True
    assert classifier.stats.fingerprint_entries == 0
    assert classifier.classify("DELETE FROM t WHERE 1 = 2").statements[0].trivial_where is False


def test_parse_errors_and_unknown_stay_out_of_the_fingerprint_cache() -> None:
    classifier = PostgresClassifier()
    for sql in ("SELEC 1", "SELECT 'x", "SELECT 1\x00"):
        assert classifier.classify(sql).unknown is True
    assert classifier.stats.fingerprint_entries == 0
    again = classifier.classify("SELEC 1")
    assert again.unknown is True
    assert classifier.stats.exact_hits == 1


def test_empty_queries_through_the_caches() -> None:
    classifier = PostgresClassifier()
    for sql in ("", ";", "", "-- a", ";"):
        assert classifier.classify(sql) == cold(sql)
        assert classifier.classify(sql).kinds == (CommandKind.EMPTY,)


def test_exact_cache_is_least_recently_used() -> None:
    classifier = PostgresClassifier(exact_cache_size=2, fingerprint_cache_size=0)
    a, b, c = "SELECT 1 FROM a", "SELECT 1 FROM b", "SELECT 1 FROM c"
    classifier.classify(a)
    classifier.classify(b)
    classifier.classify(a)  # a is now the most recent
    classifier.classify(c)  # evicts b
    assert classifier.stats.exact_entries == 2
    hits = classifier.stats.exact_hits
    classifier.classify(a)
    assert classifier.stats.exact_hits == hits + 1
    classifier.classify(b)
    assert classifier.stats.exact_hits == hits + 1


def test_fingerprint_cache_is_bounded() -> None:
    classifier = PostgresClassifier(exact_cache_size=3, fingerprint_cache_size=5)
    for number in range(50):
        classifier.classify(f"SELECT * FROM table_{number} WHERE id = {number}")
    stats = classifier.stats
    assert (stats.exact_entries, stats.fingerprint_entries) == (3, 5)
    assert stats.misses == 50


def test_zero_sized_caches_disable_caching() -> None:
    classifier = PostgresClassifier(exact_cache_size=0, fingerprint_cache_size=0)
    first = classifier.classify("SELECT 1")
    assert classifier.classify("SELECT 1") == first
    assert classifier.classify("SELECT 1") is not first
    stats = classifier.stats
    assert (stats.exact_hits, stats.fingerprint_hits, stats.exact_entries) == (0, 0, 0)


def test_long_strings_are_classified_but_not_cached() -> None:
    classifier = PostgresClassifier(max_cached_length=100)
    sql = "INSERT INTO t VALUES " + ", ".join(f"({n})" for n in range(100))
    result = classifier.classify(sql)
    assert result.kinds == (CommandKind.INSERT,)
    assert result.statements[0].tables_written == {"t"}
    assert classifier.classify(sql) == result
    stats = classifier.stats
    assert (stats.exact_entries, stats.fingerprint_entries, stats.misses) == (0, 0, 2)


def test_clear_caches() -> None:
    classifier = PostgresClassifier()
    classifier.classify("SELECT 1")
    classifier.clear_caches()
    assert (classifier.stats.exact_entries, classifier.stats.fingerprint_entries) == (0, 0)


def test_module_level_function_uses_a_shared_cache() -> None:
    sql = "SELECT 'classify_postgres shared cache check'"
    assert classify_postgres(sql) is classify_postgres(sql)
    assert classify_postgres(sql).kinds == (CommandKind.SELECT,)


def test_rebuilt_statement_keeps_every_field() -> None:
    from jitgate.sql.postgres import _with_span

    sql = "PREPARE p AS WITH d AS (DELETE FROM t WHERE 1 = 1 RETURNING *) SELECT pg_read_file('x')"
    original = cold(sql).statements[0]
    moved = _with_span(original, "  " + sql, slice(2, 2 + len(sql)))
    assert moved == dataclasses.replace(original, start=2, end=2 + len(sql))
