"""Property tests: any text is classified without raising, and caching never changes a result."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.sql import Classification, CommandKind, PostgresClassifier

# Shared across examples on purpose: later examples hit entries cached by earlier ones.
_cached = PostgresClassifier(exact_cache_size=256, fingerprint_cache_size=256)
_cold = PostgresClassifier(exact_cache_size=0, fingerprint_cache_size=0)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
    "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
    "UPDATE s.t SET a = 'x' WHERE id = 1 OR 1 = 1",
    "DELETE FROM t WHERE $1 = $2",
    "INSERT INTO t (a, b) VALUES (1, 'two') ON CONFLICT DO NOTHING",
    "COPY (SELECT * FROM a) TO PROGRAM 'gzip'",
    "COPY t FROM STDIN",
    "EXPLAIN (ANALYZE false) DELETE FROM t",
    "EXPLAIN ANALYZE UPDATE t SET a = 1",
    "PREPARE p (int) AS DELETE FROM t WHERE id = $1",
    "EXECUTE p(3)",
    "SELECT pg_catalog.pg_read_file('/etc/passwd')",
    'SELECT * FROM "Quoted"."Name" q JOIN other o ON q.id = o.id',
    "DO $$ BEGIN PERFORM 1; END $$",
    "SET ROLE admin",
    "BEGIN; SELECT 1; COMMIT",
    "CREATE TABLE n AS SELECT * FROM t WHERE flag = true",
    "SELECT 'é; 🎉' AS x; DELETE FROM t",
    "DROP TABLE a.b, c",
    "GRANT SELECT ON t TO bob",
    "-- comment\nSELECT 1 /* inline */",
    "DELETE FROM t WHERE id IN (1, 2, 3) AND NOT false",
]

MUTATION_TEXT = st.lists(
    st.sampled_from([*" ;'\"$()-/*\n,.=1aZé🎉\x00\\", "--", "/*", "*/", "$$", "E'", "U&'"]),
    max_size=4,
).map("".join)


def check_invariants(sql: str, result: Classification) -> None:
    assert isinstance(result, Classification)
    assert result.statements
    assert result.unknown == any(s.kind is CommandKind.UNKNOWN for s in result.statements)
    if result.unknown:
        assert result.error
        assert result.read_only is False
    for statement in result.statements:
        assert isinstance(statement.kind, CommandKind)
        assert sql[statement.start : statement.end] == statement.text
        if not result.unknown and statement.kind is not CommandKind.EMPTY:
            # a statement's own text is that whole statement, and only it
            assert statement.text == statement.text.strip(" \t\n\r\f\v")
            (alone,) = _cold.classify(statement.text).statements
            assert alone == dataclasses.replace(statement, start=0, end=len(statement.text))


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_classified(sql: str) -> None:
    result = _cached.classify(sql)
    check_invariants(sql, result)
    assert result == _cold.classify(sql)


@FUZZ
@given(st.binary(max_size=120))
def test_any_decoded_bytes_are_classified(raw: bytes) -> None:
    sql = raw.decode("utf-8", errors="surrogateescape")
    check_invariants(sql, _cached.classify(sql))


@st.composite
def mutated_sql(draw: st.DrawFn) -> str:
    sql = draw(st.sampled_from(VALID))
    if draw(st.booleans()):
        sql = f"{sql}; {draw(st.sampled_from(VALID))}"
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        start = draw(st.integers(min_value=0, max_value=len(sql)))
        end = draw(st.integers(min_value=start, max_value=min(len(sql), start + 3)))
        sql = sql[:start] + draw(MUTATION_TEXT) + sql[end:]
    return sql


@FUZZ
@given(mutated_sql())
def test_mutated_sql_is_classified_and_caching_changes_nothing(sql: str) -> None:
    result = _cached.classify(sql)
    check_invariants(sql, result)
    assert result == _cold.classify(sql)


TEMPLATES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n}",
    "UPDATE t SET a = {s} WHERE id = {n}; SELECT {s}, {n}; DELETE FROM u WHERE x = {n}",
    "DELETE FROM t WHERE {n} = {m}",
    "DELETE FROM t WHERE {s} = {s2} OR id = {n}",
    "DELETE FROM t WHERE f({n}) = f({m})",
    "UPDATE t SET a = 1 WHERE {n} IN ({m}, 3)",
    "INSERT INTO t VALUES ({n}, {s}) RETURNING *; SELECT {s2}",
    "SELECT * FROM t LIMIT {n} OFFSET {m}",
]


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@FUZZ
@given(
    template=st.sampled_from(TEMPLATES),
    n=st.integers(min_value=-(10**12), max_value=10**12),
    m=st.integers(min_value=-3, max_value=3),
    s=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])),
    s2=st.sampled_from(["", "a", "1", "t", "ä🎉"]),
)
def test_other_constants_reuse_the_shape_correctly(
    template: str, n: int, m: int, s: str, s2: str
) -> None:
    sql = template.format(n=n, m=m, s=quoted(s), s2=quoted(s2))
    result = _cached.classify(sql)
    check_invariants(sql, result)
    assert result.unknown is False
    assert result == _cold.classify(sql)
