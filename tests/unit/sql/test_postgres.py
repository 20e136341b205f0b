"""PostgreSQL classifier: kinds, tags, tables, WHERE checks, dangers, spans and errors."""

from __future__ import annotations

import pglast
import pytest

from jitgate.sql import (
    DANGEROUS_FUNCTIONS,
    Classification,
    CommandKind,
    PostgresClassifier,
    Statement,
    executed_as,
)

K = CommandKind

# No cache: every call here exercises the parser and the tree walk.
_cold = PostgresClassifier(exact_cache_size=0, fingerprint_cache_size=0)


def classify(sql: str) -> Classification:
    return _cold.classify(sql)


def one(sql: str) -> Statement:
    result = classify(sql)
    assert len(result.statements) == 1, result
    return result.statements[0]


# --- kinds and command tags -----------------------------------------------------------------

KIND_AND_TAG = [
    ("SELECT 1", K.SELECT, "SELECT"),
    ("VALUES (1), (2)", K.SELECT, "SELECT"),
    ("TABLE t", K.SELECT, "SELECT"),
    ("SELECT 1 UNION SELECT 2", K.SELECT, "SELECT"),
    ("INSERT INTO t VALUES (1)", K.INSERT, "INSERT"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2", K.INSERT, "INSERT"),
    ("UPDATE t SET a = 1 WHERE id = 2", K.UPDATE, "UPDATE"),
    ("DELETE FROM t WHERE id = 1", K.DELETE, "DELETE"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", K.MERGE, "MERGE"),
    ("TRUNCATE t", K.TRUNCATE, "TRUNCATE TABLE"),
    ("TRUNCATE TABLE a, b RESTART IDENTITY CASCADE", K.TRUNCATE, "TRUNCATE TABLE"),
    ("CREATE TABLE t (id int)", K.DDL, "CREATE TABLE"),
    ("CREATE TEMP TABLE t (id int)", K.DDL, "CREATE TABLE"),
    ("CREATE TABLE n AS SELECT 1", K.DDL, "CREATE TABLE AS"),
    ("SELECT 1 AS a INTO n", K.DDL, "SELECT INTO"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", K.DDL, "CREATE MATERIALIZED VIEW"),
    ("CREATE VIEW v AS SELECT 1", K.DDL, "CREATE VIEW"),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", K.DDL, "CREATE VIEW"),
    ("CREATE INDEX i ON t (a)", K.DDL, "CREATE INDEX"),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", K.DDL, "CREATE INDEX"),
    ("CREATE SEQUENCE s", K.DDL, "CREATE SEQUENCE"),
    ("ALTER SEQUENCE s RESTART", K.DDL, "ALTER SEQUENCE"),
    ("CREATE SCHEMA s", K.DDL, "CREATE SCHEMA"),
    ("CREATE EXTENSION dblink", K.DDL, "CREATE EXTENSION"),
    ("CREATE TYPE mood AS ENUM ('sad', 'ok')", K.DDL, "CREATE TYPE"),
    ("CREATE TYPE pair AS (a int, b int)", K.DDL, "CREATE TYPE"),
    ("CREATE DOMAIN posint AS int CHECK (VALUE > 0)", K.DDL, "CREATE DOMAIN"),
    ("CREATE AGGREGATE agg (int) (sfunc = int4pl, stype = int)", K.DDL, "CREATE AGGREGATE"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", K.DDL, "CREATE FUNCTION"),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'", K.DDL, "CREATE PROCEDURE"),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        K.DDL,
        "CREATE TRIGGER",
    ),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", K.DDL, "CREATE RULE"),
    ("CREATE POLICY p ON t USING (true)", K.DDL, "CREATE POLICY"),
    ("CREATE DATABASE d", K.DDL, "CREATE DATABASE"),
    ("ALTER DATABASE d SET work_mem = '1MB'", K.DDL, "ALTER DATABASE"),
    ("DROP DATABASE d", K.DDL, "DROP DATABASE"),
    ("CREATE TABLESPACE ts LOCATION '/x'", K.DDL, "CREATE TABLESPACE"),
    ("DROP TABLE t", K.DDL, "DROP TABLE"),
    ("DROP TABLE IF EXISTS a, b CASCADE", K.DDL, "DROP TABLE"),
    ("DROP VIEW v", K.DDL, "DROP VIEW"),
    ("DROP MATERIALIZED VIEW mv", K.DDL, "DROP MATERIALIZED VIEW"),
    ("DROP INDEX i", K.DDL, "DROP INDEX"),
    ("DROP FUNCTION f()", K.DDL, "DROP FUNCTION"),
    ("DROP SCHEMA s CASCADE", K.DDL, "DROP SCHEMA"),
    ("DROP EXTENSION dblink", K.DDL, "DROP EXTENSION"),
    ("DROP FOREIGN DATA WRAPPER w", K.DDL, "DROP FOREIGN DATA WRAPPER"),
    ("DROP TEXT SEARCH CONFIGURATION c", K.DDL, "DROP TEXT SEARCH CONFIGURATION"),
    ("ALTER TABLE t ADD COLUMN b int", K.DDL, "ALTER TABLE"),
    ("ALTER TABLE t RENAME COLUMN a TO b", K.DDL, "ALTER TABLE"),
    ("ALTER TABLE t RENAME TO u", K.DDL, "ALTER TABLE"),
    ("ALTER TABLE t SET SCHEMA s", K.DDL, "ALTER TABLE"),
    ("ALTER TABLE t OWNER TO bob", K.DDL, "ALTER TABLE"),
    ("ALTER INDEX i RENAME TO j", K.DDL, "ALTER INDEX"),
    ("ALTER VIEW v RENAME TO w", K.DDL, "ALTER VIEW"),
    ("ALTER MATERIALIZED VIEW mv RENAME TO w", K.DDL, "ALTER MATERIALIZED VIEW"),
    ("ALTER FUNCTION f() OWNER TO bob", K.DDL, "ALTER FUNCTION"),
    ("ALTER FUNCTION f() SECURITY DEFINER", K.DDL, "ALTER FUNCTION"),
    ("ALTER SCHEMA s RENAME TO u", K.DDL, "ALTER SCHEMA"),
    ("ALTER TYPE mood ADD VALUE 'happy'", K.DDL, "ALTER TYPE"),
    ("ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b", K.DDL, "ALTER TABLE"),
    ("COMMENT ON TABLE t IS 'x'", K.DDL, "COMMENT"),
    ("SECURITY LABEL ON TABLE t IS 'x'", K.DDL, "SECURITY LABEL"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER w", K.DDL, "CREATE SERVER"),
    ("CREATE USER MAPPING FOR bob SERVER s", K.DDL, "CREATE USER MAPPING"),
    ("CREATE FOREIGN TABLE ft (a int) SERVER s", K.DDL, "CREATE FOREIGN TABLE"),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO l", K.DDL, "IMPORT FOREIGN SCHEMA"),
    ("CREATE PUBLICATION p FOR TABLE t", K.DDL, "CREATE PUBLICATION"),
    ("CREATE STATISTICS st ON a, b FROM t", K.DDL, "CREATE STATISTICS"),
    ("CREATE CAST (int AS text) WITH INOUT", K.DDL, "CREATE CAST"),
    ("CREATE LANGUAGE pl HANDLER h", K.DDL, "CREATE LANGUAGE"),
    (
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
        K.DDL,
        "CREATE EVENT TRIGGER",
    ),
    ("ALTER SYSTEM SET work_mem = '1MB'", K.DDL, "ALTER SYSTEM"),
    ("GRANT SELECT ON t TO bob", K.DCL, "GRANT"),
    ("REVOKE SELECT ON t FROM bob", K.DCL, "REVOKE"),
    ("GRANT admin TO bob", K.DCL, "GRANT ROLE"),
    ("REVOKE admin FROM bob", K.DCL, "REVOKE ROLE"),
    ("CREATE ROLE r", K.DCL, "CREATE ROLE"),
    ("CREATE USER u WITH PASSWORD 'x'", K.DCL, "CREATE ROLE"),
    ("CREATE GROUP g", K.DCL, "CREATE ROLE"),
    ("ALTER ROLE r SUPERUSER", K.DCL, "ALTER ROLE"),
    ("ALTER USER u PASSWORD 'x'", K.DCL, "ALTER ROLE"),
    ("ALTER ROLE r SET search_path = s", K.DCL, "ALTER ROLE"),
    ("ALTER GROUP g ADD USER u", K.DCL, "ALTER ROLE"),
    ("DROP ROLE r", K.DCL, "DROP ROLE"),
    ("DROP USER IF EXISTS u", K.DCL, "DROP ROLE"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", K.DCL, "ALTER DEFAULT PRIVILEGES"),
    ("REASSIGN OWNED BY a TO b", K.DCL, "REASSIGN OWNED"),
    ("DROP OWNED BY a", K.DCL, "DROP OWNED"),
    ("COPY t FROM STDIN", K.COPY, "COPY"),
    ("CALL p()", K.CALL, "CALL"),
    ("DO $$ BEGIN END $$", K.DO, "DO"),
    ("SET work_mem = '1MB'", K.SET, "SET"),
    ("SET LOCAL statement_timeout = 0", K.SET, "SET"),
    ("SET TIME ZONE 'UTC'", K.SET, "SET"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K.SET, "SET"),
    ("SET ROLE admin", K.SET, "SET"),
    ("SET SESSION AUTHORIZATION bob", K.SET, "SET"),
    ("RESET work_mem", K.SET, "RESET"),
    ("RESET ALL", K.SET, "RESET"),
    ("SET CONSTRAINTS ALL DEFERRED", K.SET, "SET CONSTRAINTS"),
    ("SHOW work_mem", K.SHOW, "SHOW"),
    ("SHOW ALL", K.SHOW, "SHOW"),
    ("BEGIN", K.TRANSACTION, "BEGIN"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", K.TRANSACTION, "BEGIN"),
    ("START TRANSACTION READ ONLY", K.TRANSACTION, "START TRANSACTION"),
    ("COMMIT", K.TRANSACTION, "COMMIT"),
    ("END", K.TRANSACTION, "COMMIT"),
    ("ROLLBACK", K.TRANSACTION, "ROLLBACK"),
    ("ABORT", K.TRANSACTION, "ROLLBACK"),
    ("SAVEPOINT s", K.TRANSACTION, "SAVEPOINT"),
    ("RELEASE SAVEPOINT s", K.TRANSACTION, "RELEASE"),
    ("ROLLBACK TO SAVEPOINT s", K.TRANSACTION, "ROLLBACK"),
    ("PREPARE TRANSACTION 'x'", K.TRANSACTION, "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'x'", K.TRANSACTION, "COMMIT PREPARED"),
    ("ROLLBACK PREPARED 'x'", K.TRANSACTION, "ROLLBACK PREPARED"),
    ("PREPARE p AS SELECT 1", K.PREPARE, "PREPARE"),
    ("EXECUTE p", K.EXECUTE, "EXECUTE"),
    ("DEALLOCATE p", K.DEALLOCATE, "DEALLOCATE"),
    ("DEALLOCATE ALL", K.DEALLOCATE, "DEALLOCATE ALL"),
    ("EXPLAIN SELECT 1", K.EXPLAIN, "EXPLAIN"),
    ("DECLARE c CURSOR FOR SELECT 1", K.CURSOR, "DECLARE CURSOR"),
    ("FETCH 10 FROM c", K.CURSOR, "FETCH"),
    ("MOVE NEXT IN c", K.CURSOR, "MOVE"),
    ("CLOSE c", K.CURSOR, "CLOSE CURSOR"),
    ("CLOSE ALL", K.CURSOR, "CLOSE CURSOR ALL"),
    ("LISTEN ch", K.LISTEN, "LISTEN"),
    ("UNLISTEN ch", K.LISTEN, "UNLISTEN"),
    ("UNLISTEN *", K.LISTEN, "UNLISTEN"),
    ("NOTIFY ch", K.NOTIFY, "NOTIFY"),
    ("NOTIFY ch, 'payload'", K.NOTIFY, "NOTIFY"),
    ("LOCK TABLE t", K.LOCK, "LOCK TABLE"),
    ("VACUUM", K.MAINTENANCE, "VACUUM"),
    ("VACUUM (FULL, ANALYZE) t", K.MAINTENANCE, "VACUUM"),
    ("ANALYZE t", K.MAINTENANCE, "ANALYZE"),
    ("CLUSTER t USING i", K.MAINTENANCE, "CLUSTER"),
    ("REINDEX TABLE t", K.MAINTENANCE, "REINDEX"),
    ("CHECKPOINT", K.MAINTENANCE, "CHECKPOINT"),
    ("REFRESH MATERIALIZED VIEW mv", K.MAINTENANCE, "REFRESH MATERIALIZED VIEW"),
    ("DISCARD ALL", K.SESSION, "DISCARD ALL"),
    ("DISCARD PLANS", K.SESSION, "DISCARD PLANS"),
    ("DISCARD TEMP", K.SESSION, "DISCARD TEMP"),
    ("DISCARD SEQUENCES", K.SESSION, "DISCARD SEQUENCES"),
    ("LOAD 'auto_explain'", K.SESSION, "LOAD"),
]


@pytest.mark.parametrize(("sql", "kind", "tag"), KIND_AND_TAG)
def test_kind_and_tag(sql: str, kind: CommandKind, tag: str) -> None:
    statement = one(sql)
    assert (statement.kind, statement.tag) == (kind, tag)
    assert statement.error is None
    assert statement.text == sql


def test_kind_values_are_the_policy_action_names() -> None:
    assert [k.value for k in CommandKind] == [
        "select", "insert", "update", "delete", "merge", "truncate", "ddl", "dcl", "copy",
        "call", "do", "set", "show", "transaction", "prepare", "execute", "deallocate",
        "explain", "cursor", "listen", "notify", "lock", "maintenance", "session", "empty",
        "unknown",
    ]  # fmt: skip


def test_every_postgresql_statement_type_is_classified() -> None:
    """A new statement type in a pglast upgrade must be mapped on purpose, not guessed."""
    from jitgate.sql.postgres import _Classifier

    never_top_level = {"RawStmt", "PLAssignStmt", "ReturnStmt", "SetOperationStmt"}
    never_top_level |= {"ReplicaIdentityStmt"}
    names = [n for n in dir(pglast.ast) if n.endswith("Stmt") and n not in never_top_level]
    assert len(names) > 100
    unmapped = [n for n in names if n not in ("ExplainStmt", "PrepareStmt")]
    sample_fields = {"TransactionStmt": {"kind": "TRANS_STMT_BEGIN"}}
    unmapped = [
        n for n in unmapped if _Classifier._head(n, sample_fields.get(n, {})).kind is K.UNKNOWN
    ]
    assert unmapped == []


def test_unrecognized_statement_type_is_unknown_never_safe() -> None:
    from jitgate.sql.postgres import _Classifier, _FunctionRules

    draft = _Classifier(_FunctionRules(DANGEROUS_FUNCTIONS)).draft("ReturnStmt", {})
    assert draft.kind is K.UNKNOWN
    assert draft.read_only is False
    assert draft.error is not None and "ReturnStmt" in draft.error


# --- tables -----------------------------------------------------------------------------------

TABLES = [
    ("SELECT * FROM a, s.b", {"a", "s.b"}, set()),
    ("SELECT * FROM db.s.t", {"db.s.t"}, set()),
    (
        'SELECT * FROM "MyTable", "My Schema"."T", Upper, "lower"',
        {"MyTable", "My Schema.T", "upper", "lower"},
        set(),
    ),
    ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)", {"a", "b", "c"}, set()),
    ("SELECT * FROM a, LATERAL (SELECT * FROM b) x", {"a", "b"}, set()),
    ("SELECT (SELECT max(x) FROM b) FROM a WHERE EXISTS (SELECT 1 FROM c)", {"a", "b", "c"}, set()),
    (
        "SELECT * FROM a WHERE id IN (SELECT id FROM b) ORDER BY (SELECT 1 FROM c)",
        {"a", "b", "c"},
        set(),
    ),
    ("SELECT * FROM ONLY a TABLESAMPLE SYSTEM (10)", {"a"}, set()),
    ("SELECT * FROM a UNION SELECT * FROM b INTERSECT SELECT * FROM c", {"a", "b", "c"}, set()),
    ("SELECT * FROM a FOR UPDATE", {"a"}, set()),
    ("INSERT INTO s.t (a) SELECT b FROM u", {"u"}, {"s.t"}),
    ("INSERT INTO t VALUES ((SELECT max(id) FROM u))", {"u"}, {"t"}),
    (
        "INSERT INTO t AS x VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1 WHERE x.a > 0",
        set(),
        {"t"},
    ),
    ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", {"u"}, {"t"}),
    ("UPDATE ONLY t AS x SET a = 1 WHERE id = 1 RETURNING *", set(), {"t"}),
    ("DELETE FROM t USING u WHERE t.id = u.id", {"u"}, {"t"}),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
        {"s"},
        {"t"},
    ),
    ("TRUNCATE a, s.b", set(), {"a", "s.b"}),
    ("SELECT * INTO n FROM t", {"t"}, {"n"}),
    ("CREATE TABLE s.n AS SELECT * FROM t", {"t"}, {"s.n"}),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", {"t"}, {"mv"}),
    ("CREATE VIEW v AS SELECT * FROM t JOIN u ON true", {"t", "u"}, {"v"}),
    ("CREATE TABLE t (id int REFERENCES p (id), LIKE src)", {"p", "src"}, {"t"}),
    ("CREATE INDEX ON s.t (a)", set(), {"s.t"}),
    ("ALTER TABLE s.t ADD COLUMN b int", set(), {"s.t"}),
    ("ALTER TABLE t RENAME TO u", set(), {"t"}),
    ("DROP TABLE a.b, c", set(), {"a.b", "c"}),
    ('DROP VIEW IF EXISTS "V"', set(), {"V"}),
    ("DROP INDEX s.i", set(), {"s.i"}),
    ("DROP FUNCTION f()", set(), set()),
    ("GRANT SELECT ON s.t TO bob", set(), {"s.t"}),
    ("LOCK TABLE t", set(), {"t"}),
    ("LOCK TABLE t IN ACCESS SHARE MODE", {"t"}, set()),
    ("LOCK TABLE t IN ROW EXCLUSIVE MODE", set(), {"t"}),
    ("VACUUM t, s.u", set(), {"t", "s.u"}),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", set(), {"mv"}),
    ("COPY t FROM STDIN", set(), {"t"}),
    ("COPY s.t TO STDOUT", {"s.t"}, set()),
    ("COPY (SELECT * FROM a JOIN b ON true) TO STDOUT", {"a", "b"}, set()),
    ("DECLARE c CURSOR FOR SELECT * FROM t", {"t"}, set()),
    ("EXPLAIN DELETE FROM t USING u", {"t", "u"}, set()),
    ("SELECT * FROM generate_series(1, 3)", set(), set()),
]


@pytest.mark.parametrize(("sql", "read", "written"), TABLES)
def test_tables(sql: str, read: set[str], written: set[str]) -> None:
    statement = one(sql)
    assert statement.tables_read == read
    assert statement.tables_written == written


CTE_TABLES = [
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", {"t"}),
    ("WITH x AS (SELECT 1) SELECT * FROM public.x", {"public.x"}),
    (
        "WITH x AS (SELECT 1) SELECT * FROM (SELECT * FROM x) s WHERE EXISTS (SELECT 1 FROM x)",
        set(),
    ),
    # the WITH binds only inside the parenthesised branch: the second x is a real table
    ("(WITH x AS (SELECT 1) SELECT * FROM x) UNION ALL SELECT * FROM x", {"x"}),
    # a plain WITH item only sees the items before it
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", {"b"}),
    ("WITH b AS (SELECT 1), a AS (SELECT * FROM b) SELECT * FROM a", set()),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", set()),
    ("WITH x AS (SELECT 1) SELECT * FROM y", {"y"}),
    ("SELECT * FROM (WITH x AS (SELECT * FROM t) SELECT * FROM x) s, x", {"t", "x"}),
    ('WITH "X" AS (SELECT 1) SELECT * FROM x', {"x"}),
]


@pytest.mark.parametrize(("sql", "read"), CTE_TABLES)
def test_cte_names_are_not_tables(sql: str, read: set[str]) -> None:
    statement = one(sql)
    assert statement.tables_read == read
    assert statement.kind is K.SELECT
    assert statement.writes_in_cte is False
    assert statement.read_only is True


def test_cte_name_never_hides_a_written_table() -> None:
    statement = one("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t")
    assert statement.tables_written == {"t"}
    assert statement.tables_read == set()


# --- data-modifying CTEs ------------------------------------------------------------------------


def test_delete_in_cte_makes_a_select_a_delete() -> None:
    statement = one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    assert statement.kind is K.DELETE
    assert statement.tag == "SELECT"
    assert statement.writes_in_cte is True
    assert statement.has_where is False
    assert statement.tables_written == {"t"}
    assert statement.tables_read == set()
    assert statement.read_only is False


@pytest.mark.parametrize(
    ("sql", "kind", "has_where"),
    [
        ("WITH i AS (INSERT INTO a VALUES (1) RETURNING *) SELECT * FROM i", K.INSERT, None),
        (
            "WITH i AS (INSERT INTO a VALUES (1) RETURNING *), "
            "u AS (UPDATE b SET x = 1 WHERE id = 1 RETURNING *) SELECT * FROM i, u",
            K.UPDATE,
            True,
        ),
        (
            "WITH m AS (MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN DELETE RETURNING *)"
            " INSERT INTO log SELECT 1 FROM m",
            K.MERGE,
            None,
        ),
        (
            "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) "
            "INSERT INTO archive SELECT * FROM d",
            K.DELETE,
            True,
        ),
        (
            "WITH u AS (UPDATE t SET a = 1 RETURNING id) "
            "DELETE FROM log WHERE id IN (SELECT id FROM u)",
            K.DELETE,
            False,
        ),
        (
            "WITH d AS (DELETE FROM a RETURNING id) "
            "UPDATE b SET x = 1 WHERE id IN (SELECT id FROM d)",
            K.DELETE,
            False,
        ),
        (
            "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) s",
            K.DELETE,
            False,
        ),
        (
            "WITH outer_cte AS (WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d) "
            "SELECT * FROM outer_cte",
            K.UPDATE,
            False,
        ),
    ],
)
def test_write_priority_with_data_modifying_ctes(
    sql: str, kind: CommandKind, has_where: bool | None
) -> None:
    statement = one(sql)
    assert statement.kind is kind
    assert statement.writes_in_cte is True
    assert statement.has_where is has_where
    assert statement.read_only is False


@pytest.mark.parametrize(
    ("sql", "tag", "has_where", "trivial"),
    [
        (
            "CREATE TABLE x AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "CREATE TABLE AS",
            False,
            False,
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * INTO x FROM d",
            "SELECT INTO",
            False,
            False,
        ),
        (
            "CREATE TABLE x AS WITH u AS (UPDATE t SET a = 1 WHERE 1 = 1 RETURNING *) "
            "SELECT * FROM u",
            "CREATE TABLE AS",
            True,
            True,
        ),
        (
            "EXPLAIN ANALYZE CREATE TABLE x AS WITH d AS (DELETE FROM t RETURNING *) "
            "SELECT * FROM d",
            "EXPLAIN",
            False,
            False,
        ),
    ],
)
def test_ddl_that_runs_its_query_has_the_where_of_its_ctes(
    sql: str, tag: str, has_where: bool, trivial: bool
) -> None:
    """CREATE TABLE AS and SELECT INTO run their query now, data-modifying CTEs and all."""
    statement = one(sql)
    assert (statement.kind, statement.tag, statement.writes_in_cte) == (K.DDL, tag, True)
    assert (statement.has_where, statement.trivial_where) == (has_where, trivial)
    assert statement.tables_written == {"x", "t"}


def test_written_tables_of_all_ctes() -> None:
    statement = one(
        "WITH d AS (DELETE FROM old WHERE x < 1 RETURNING *) "
        "INSERT INTO s.archive SELECT * FROM d JOIN src ON true"
    )
    assert statement.tables_written == {"old", "s.archive"}
    assert statement.tables_read == {"src"}


# --- WHERE checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    ["UPDATE t SET a = 1", "DELETE FROM t", "DELETE FROM ONLY s.t RETURNING *"],
)
def test_update_and_delete_without_where(sql: str) -> None:
    statement = one(sql)
    assert statement.has_where is False
    assert statement.trivial_where is False


TRIVIAL_WHERES = [
    "true",
    "TRUE",
    "1 = 1",
    "1=1",
    "'a' = 'a'",
    "'1' = 1",
    "2 > 1",
    "1.5 >= 1",
    "1 <> 2",
    "1 != 2",
    "'a' <> 'b'",
    "'t'::boolean",
    "CAST('yes' AS bool)",
    "1::bool",
    "NOT false",
    "NOT NOT true",
    "true IS TRUE",
    "false IS NOT TRUE",
    "NULL IS NULL",
    "1 IS NOT NULL",
    "1 IN (1, 2)",
    "3 NOT IN (1, 2)",
    "1 IS NOT DISTINCT FROM 1",
    "NULL IS NOT DISTINCT FROM NULL",
    "1 IS DISTINCT FROM 2",
    "1 = 1 AND 2 = 2",
    "id = 5 OR 1 = 1",
    "id = 5 OR true",
    "id = id",
    "t.id = t.id",
    "lower(name) = lower(name)",
    "id >= id",
    "id IS NOT DISTINCT FROM id",
    "(id = 1 OR 1 = 1) AND (x = x)",
]


@pytest.mark.parametrize("where", TRIVIAL_WHERES)
def test_trivial_where(where: str) -> None:
    for sql in (f"DELETE FROM t WHERE {where}", f"UPDATE t SET a = 1 WHERE {where}"):
        statement = one(sql)
        assert statement.has_where is True
        assert statement.trivial_where is True, sql


NON_TRIVIAL_WHERES = [
    "id = 5",
    "false",
    "1 = 2",
    "1 > 2",
    "'a' = 'b'",
    "'a' < 'b'",  # depends on the collation: not judged
    "NULL",
    "NULL = NULL",
    "NOT true",
    "1 IN (2, 3)",
    "1 NOT IN (1, 2)",
    "1 IS DISTINCT FROM 1",
    "id = 5 AND 1 = 1",
    "1 = 1 AND id = 5",
    "id = 5 OR 1 = 2",
    "id = other_id",
    "id = id + 1",
    "id <> id",
    "lower(a) = lower(b)",
    "f(1) = f(2)",
    "id IS NOT NULL",
    "'x'::text = 'y'",
    "CURRENT OF c",
    "EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
    "'maybe'::bool",
]


@pytest.mark.parametrize("where", NON_TRIVIAL_WHERES)
def test_non_trivial_where(where: str) -> None:
    statement = one(f"DELETE FROM t WHERE {where}")
    assert statement.has_where is True
    assert statement.trivial_where is False


def test_trivial_where_in_a_cte_counts() -> None:
    statement = one("WITH d AS (DELETE FROM t WHERE 1 = 1 RETURNING *) SELECT * FROM d")
    assert (statement.kind, statement.has_where, statement.trivial_where) == (K.DELETE, True, True)


def test_very_deep_constant_where_is_judged_trivial_rather_than_ignored() -> None:
    deep = " + ".join(["1"] * 120)
    statement = one(f"DELETE FROM t WHERE {deep} = {deep}")
    assert statement.trivial_where is True
    assert one(f"DELETE FROM t WHERE id = {deep}").trivial_where is False


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE true",
        "INSERT INTO t SELECT * FROM u WHERE 1 = 1",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM log",
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        "EXPLAIN DELETE FROM t",
        "TRUNCATE t",
    ],
)
def test_has_where_is_none_when_no_update_or_delete_runs(sql: str) -> None:
    statement = one(sql)
    assert statement.has_where is None
    assert statement.trivial_where is False


# --- functions and dangers ----------------------------------------------------------------------

READ_FILE = "calls pg_read_file (server file access)"

HIDDEN_READ_FILE = [
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_catalog.pg_read_file('/etc/passwd')",
    "SELECT PG_READ_FILE('/etc/passwd')",
    "SELECT \"pg_read_file\"('/etc/passwd')",
    "SELECT upper(pg_read_file('x'))",
    "SELECT length(upper(lower(pg_read_file('x'))))",
    "SELECT * FROM t WHERE a = (SELECT pg_read_file('x'))",
    "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = pg_read_file('x'))",
    "SELECT * FROM t ORDER BY pg_read_file('x')",
    "SELECT a FROM t GROUP BY a HAVING max(a) = pg_read_file('x')",
    "SELECT row_number() OVER (ORDER BY pg_read_file('x')) FROM t",
    "SELECT count(*) FILTER (WHERE a = pg_read_file('x')) FROM t",
    "SELECT CASE WHEN true THEN pg_read_file('x') END",
    "SELECT pg_read_file('x')::text",
    "SELECT ARRAY[pg_read_file('x')]",
    "SELECT 1 WHERE 'x' IN (pg_read_file('x'))",
    "SELECT * FROM pg_read_file('x')",
    "SELECT * FROM ROWS FROM (pg_read_file('x'))",
    "SELECT * FROM t, LATERAL (SELECT pg_read_file(t.path)) f",
    "SELECT * FROM t JOIN u ON u.a = pg_read_file('x')",
    "WITH x AS (SELECT pg_read_file('x')) SELECT * FROM x",
    "WITH RECURSIVE x AS (SELECT 1 UNION SELECT length(pg_read_file('x')) FROM x) SELECT 1",
    "(SELECT 1) UNION (SELECT pg_read_file('x'))",
    "VALUES (pg_read_file('x'))",
    "INSERT INTO t VALUES (pg_read_file('x'))",
    "INSERT INTO t SELECT pg_read_file('x')",
    "INSERT INTO t VALUES (1) RETURNING pg_read_file('x')",
    "UPDATE t SET a = pg_read_file('x') WHERE id = 1",
    "DELETE FROM t WHERE a = pg_read_file('x')",
    "CALL p(pg_read_file('x'))",
    "EXECUTE p(pg_read_file('x'))",
    "DECLARE c CURSOR FOR SELECT pg_read_file('x')",
    "COPY (SELECT pg_read_file('x')) TO STDOUT",
    "EXPLAIN SELECT pg_read_file('x')",
    "EXPLAIN ANALYZE SELECT pg_read_file('x')",
    "PREPARE p AS SELECT pg_read_file('x')",
    "CREATE TABLE t AS SELECT pg_read_file('x')",
    "CREATE TABLE t (a text DEFAULT pg_read_file('x'))",
    "CREATE VIEW v AS SELECT pg_read_file('x')",
]


@pytest.mark.parametrize("sql", HIDDEN_READ_FILE)
def test_dangerous_function_found_wherever_it_hides(sql: str) -> None:
    statement = one(sql)
    assert READ_FILE in statement.dangerous
    assert "pg_read_file" in statement.functions
    assert statement.read_only is False


def test_functions_list_qualified_and_bare_names() -> None:
    statement = one("SELECT pg_catalog.pg_read_file('x'), public.my_fn(1), now()")
    assert statement.functions == {
        "pg_catalog.pg_read_file",
        "pg_read_file",
        "public.my_fn",
        "my_fn",
        "now",
    }
    assert statement.dangerous == (READ_FILE,)


def test_dangerous_reason_listed_once() -> None:
    statement = one("SELECT pg_read_file('a'), pg_read_file('b')")
    assert statement.dangerous == (READ_FILE,)


@pytest.mark.parametrize("name", sorted(DANGEROUS_FUNCTIONS))
def test_every_listed_function_is_dangerous(name: str) -> None:
    bare = name.replace("*", "_exec")
    for sql in (f"SELECT {bare}()", f"SELECT * FROM t WHERE a = (SELECT any_schema.{bare}(1))"):
        statement = one(sql)
        reason = DANGEROUS_FUNCTIONS[name]
        assert statement.dangerous == (f"calls {bare} ({reason})",), sql
        assert statement.read_only is False


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT dblink('conn', 'delete from t')", "calls dblink (connects to another database)"),
        ("SELECT ext.dblink_exec('conn', 'x')", "calls dblink_exec (connects to another database)"),
        (
            "SELECT set_config('role', 'admin', false)",
            "calls set_config (can change role-related settings)",
        ),
        (
            "SELECT query_to_xml('delete from t', true, false, '')",
            "calls query_to_xml (runs dynamic SQL)",
        ),
        (
            "SELECT table_to_xml('secret', true, false, '')",
            "calls table_to_xml (reads a table named in a string)",
        ),
        ("SELECT lo_import('/etc/passwd')", "calls lo_import (server file access)"),
        ("SELECT pg_terminate_backend(123)", "calls pg_terminate_backend (ends another session)"),
    ],
)
def test_dangerous_function_reasons(sql: str, reason: str) -> None:
    assert one(sql).dangerous == (reason,)


def test_dangerous_functions_can_be_extended() -> None:
    extended = PostgresClassifier(dangerous_functions={**DANGEROUS_FUNCTIONS, "wipe_all": "custom"})
    assert extended.classify("SELECT wipe_all()").statements[0].dangerous == (
        "calls wipe_all (custom)",
    )
    assert extended.classify("SELECT pg_read_file('x')").statements[0].dangerous == (READ_FILE,)
    assert one("SELECT wipe_all()").dangerous == ()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'pg_read_file(''/etc/passwd'')'",
        "SELECT 1 -- pg_read_file('x')",
        "SELECT 1 /* pg_read_file('x') */",
        'SELECT pg_read_file FROM "pg_read_file"',
        "SELECT $$pg_read_file('x')$$",
    ],
)
def test_names_in_strings_comments_and_columns_are_not_calls(sql: str) -> None:
    statement = one(sql)
    assert statement.dangerous == ()
    assert "pg_read_file" not in statement.functions


def test_plain_select_is_read_only() -> None:
    statement = one("SELECT upper(name), count(*) FROM t GROUP BY 1")
    assert statement.read_only is True
    assert statement.functions == {"upper", "count"}
    assert statement.dangerous == ()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT nextval('seq')",
        "SELECT setval('seq', 1)",
        "SELECT pg_notify('ch', 'x')",
        "SELECT pg_advisory_lock(1)",
        "SELECT lo_unlink(1)",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE SKIP LOCKED",
    ],
)
def test_select_with_side_effects_is_not_read_only(sql: str) -> None:
    statement = one(sql)
    assert statement.kind is K.SELECT
    assert statement.dangerous == ()
    assert statement.read_only is False


def test_pg_notify_is_just_a_function() -> None:
    statement = one("SELECT pg_notify('ch', 'payload')")
    assert statement.kind is K.SELECT
    assert statement.functions == {"pg_notify"}


def test_call_lists_the_procedure() -> None:
    statement = one("CALL s.do_work(1, now())")
    assert statement.kind is K.CALL
    assert statement.functions == {"s.do_work", "do_work", "now"}
    assert statement.read_only is False


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DO $$ BEGIN PERFORM 1; END $$", "DO block (procedural code)"),
        ("DO LANGUAGE plpgsql 'BEGIN END'", "DO block (procedural code)"),
        ("LOAD 'plugin'", "LOAD (loads a shared library)"),
        ("ALTER SYSTEM SET wal_level = minimal", "ALTER SYSTEM"),
        ("ALTER SYSTEM RESET ALL", "ALTER SYSTEM"),
        ("SET ROLE admin", "SET ROLE / SESSION AUTHORIZATION (privilege change)"),
        ("SET LOCAL ROLE admin", "SET ROLE / SESSION AUTHORIZATION (privilege change)"),
        ("SET role TO 'admin'", "SET ROLE / SESSION AUTHORIZATION (privilege change)"),
        ("SET SESSION AUTHORIZATION bob", "SET ROLE / SESSION AUTHORIZATION (privilege change)"),
        (
            "SET SESSION AUTHORIZATION DEFAULT",
            "SET ROLE / SESSION AUTHORIZATION (privilege change)",
        ),
        ("COPY t FROM PROGRAM 'curl http://x'", "COPY ... PROGRAM (runs a program on the server)"),
        ("COPY t TO '/tmp/t.csv'", "COPY to/from a server file"),
    ],
)
def test_dangerous_statements(sql: str, reason: str) -> None:
    statement = one(sql)
    assert statement.dangerous == (reason,)
    assert statement.read_only is False


@pytest.mark.parametrize(
    "sql",
    [
        "SET work_mem = '1MB'",
        "RESET ALL",
        "DISCARD PLANS",
        "SHOW role",
        "SET search_path = s",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
        "DISCARD ALL",
    ],
)
def test_ordinary_session_statements_are_not_dangerous(sql: str) -> None:
    assert one(sql).dangerous == ()


# --- COPY -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "direction", "target", "read", "written", "dangerous"),
    [
        ("COPY t FROM STDIN", "from", "stdin", set(), {"t"}, False),
        (
            "COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER)",
            "from",
            "stdin",
            set(),
            {"t"},
            False,
        ),
        ("COPY s.t TO STDOUT", "to", "stdout", {"s.t"}, set(), False),
        ("COPY t TO STDOUT (FORMAT binary)", "to", "stdout", {"t"}, set(), False),
        ("COPY t TO '/tmp/t.csv'", "to", "file", {"t"}, set(), True),
        ("COPY t FROM '/tmp/t.csv' WHERE a > 1", "from", "file", set(), {"t"}, True),
        ("COPY t FROM PROGRAM 'curl http://x'", "from", "program", set(), {"t"}, True),
        ("COPY (SELECT * FROM a WHERE x = 1) TO STDOUT", "to", "stdout", {"a"}, set(), False),
        (
            "COPY (SELECT * FROM a) TO PROGRAM 'gzip > /tmp/a.gz'",
            "to",
            "program",
            {"a"},
            set(),
            True,
        ),
        ("COPY (SELECT * FROM a) TO '/tmp/a'", "to", "file", {"a"}, set(), True),
    ],
)
def test_copy(
    sql: str,
    direction: str,
    target: str,
    read: set[str],
    written: set[str],
    dangerous: bool,
) -> None:
    statement = one(sql)
    assert statement.kind is K.COPY
    assert (statement.copy_direction, statement.copy_target) == (direction, target)
    assert statement.tables_read == read
    assert statement.tables_written == written
    assert bool(statement.dangerous) is dangerous
    assert statement.read_only is False


def test_copy_of_a_delete_returning_deletes() -> None:
    statement = one("COPY (DELETE FROM t RETURNING *) TO STDOUT")
    assert statement.kind is K.COPY
    assert statement.tables_written == {"t"}
    assert statement.has_where is False


def test_copy_fields_are_none_elsewhere() -> None:
    statement = one("SELECT 1")
    assert (statement.copy_direction, statement.copy_target, statement.prepared_name) == (
        None,
        None,
        None,
    )


# --- EXPLAIN ----------------------------------------------------------------------------------


def test_plain_explain_only_reads() -> None:
    statement = one("EXPLAIN DELETE FROM t WHERE id = 1")
    assert statement.kind is K.EXPLAIN
    assert statement.tag == "EXPLAIN"
    assert statement.inner_kind is K.DELETE
    assert statement.tables_read == {"t"}
    assert statement.tables_written == set()
    assert statement.has_where is None
    assert statement.read_only is True


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN ANALYSE DELETE FROM t",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM t",
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM t",
        "EXPLAIN (ANALYZE on) DELETE FROM t",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
        "EXPLAIN (FORMAT json, ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t",
        "EXPLAIN (ANALYZE true, ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, VERBOSE, ANALYZE) DELETE FROM t",
    ],
)
def test_explain_analyze_runs_the_statement(sql: str) -> None:
    statement = one(sql)
    assert statement.kind is K.DELETE
    assert statement.tag == "EXPLAIN"
    assert statement.tables_written == {"t"}
    assert statement.has_where is False
    assert statement.read_only is False


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off) DELETE FROM t",
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "EXPLAIN (VERBOSE, COSTS off) DELETE FROM t",
    ],
)
def test_explain_with_analyze_off_does_not_run(sql: str) -> None:
    statement = one(sql)
    assert (statement.kind, statement.inner_kind) == (K.EXPLAIN, K.DELETE)
    assert statement.tables_written == set()


def test_explain_analyze_select_is_read_only() -> None:
    statement = one("EXPLAIN ANALYZE SELECT * FROM t")
    assert (statement.kind, statement.tag, statement.read_only) == (K.SELECT, "EXPLAIN", True)
    assert statement.tables_read == {"t"}


def test_explain_analyze_of_a_cte_delete() -> None:
    statement = one("EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    assert (statement.kind, statement.writes_in_cte, statement.has_where) == (K.DELETE, True, False)


def test_explain_analyze_execute_keeps_the_prepared_name() -> None:
    statement = one("EXPLAIN ANALYZE EXECUTE p(1)")
    assert (statement.kind, statement.tag, statement.prepared_name) == (K.EXECUTE, "EXPLAIN", "p")


@pytest.mark.parametrize(
    ("sql", "tag", "name", "written"),
    [
        ("CREATE TABLE leak AS EXECUTE p", "CREATE TABLE AS", "p", {"leak"}),
        (
            'CREATE TEMP TABLE IF NOT EXISTS s.leak AS EXECUTE "P" (1, now()) WITH NO DATA',
            "CREATE TABLE AS",
            "P",
            {"s.leak"},
        ),
        ("EXPLAIN ANALYZE CREATE TABLE leak AS EXECUTE p", "EXPLAIN", "p", {"leak"}),
        ("EXPLAIN (ANALYZE, VERBOSE) CREATE TABLE leak AS EXECUTE p", "EXPLAIN", "p", {"leak"}),
    ],
)
def test_create_table_as_execute_names_what_it_runs(
    sql: str, tag: str, name: str, written: set[str]
) -> None:
    """Its tree says nothing of what the prepared statement reads: the name is what the
    relay decides it by (see executed_as)."""
    statement = one(sql)
    assert (statement.kind, statement.tag, statement.prepared_name) == (K.DDL, tag, name)
    assert statement.tables_written == written
    assert statement.read_only is False


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE leak AS SELECT * FROM t",
        "SELECT * INTO leak FROM t",
        "CREATE MATERIALIZED VIEW leak AS SELECT * FROM t",
        "EXPLAIN CREATE TABLE leak AS EXECUTE p",  # plans it only
    ],
)
def test_other_create_table_as_runs_no_prepared_statement(sql: str) -> None:
    assert one(sql).prepared_name is None


def test_explain_analyze_create_table_as() -> None:
    statement = one("EXPLAIN ANALYZE CREATE TABLE n AS SELECT * FROM t")
    assert statement.kind is K.DDL
    assert statement.tables_written == {"n"}
    assert statement.tables_read == {"t"}


# --- PREPARE / EXECUTE / DEALLOCATE ------------------------------------------------------------


def test_prepare_carries_the_inner_statement() -> None:
    statement = one("PREPARE del (int) AS DELETE FROM s.t WHERE id = $1")
    assert (statement.kind, statement.tag) == (K.PREPARE, "PREPARE")
    assert statement.prepared_name == "del"
    assert statement.inner_kind is K.DELETE
    assert statement.tables_written == {"s.t"}
    assert statement.has_where is True
    assert statement.read_only is False


def test_prepare_of_a_delete_without_where() -> None:
    statement = one("PREPARE wipe AS DELETE FROM t")
    assert (statement.inner_kind, statement.has_where, statement.trivial_where) == (
        K.DELETE,
        False,
        False,
    )


def test_prepare_of_a_cte_delete() -> None:
    statement = one("PREPARE p AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    assert (statement.kind, statement.inner_kind, statement.writes_in_cte) == (
        K.PREPARE,
        K.DELETE,
        True,
    )


def test_prepare_select_reads() -> None:
    statement = one('PREPARE "MyPlan" AS SELECT * FROM t WHERE id = $1')
    assert (statement.prepared_name, statement.inner_kind) == ("MyPlan", K.SELECT)
    assert statement.tables_read == {"t"}
    assert statement.has_where is None


@pytest.mark.parametrize(
    ("sql", "kind", "name"),
    [
        ("EXECUTE del(5)", K.EXECUTE, "del"),
        ('EXECUTE "MyPlan"', K.EXECUTE, "MyPlan"),
        ("DEALLOCATE p", K.DEALLOCATE, "p"),
        ("DEALLOCATE PREPARE q", K.DEALLOCATE, "q"),
        ("DEALLOCATE ALL", K.DEALLOCATE, None),
    ],
)
def test_prepared_name(sql: str, kind: CommandKind, name: str | None) -> None:
    statement = one(sql)
    assert (statement.kind, statement.prepared_name) == (kind, name)


# --- executed_as: a statement that runs a prepared one ----------------------------------------


def prepared(sql: str) -> Statement:
    """What the relay keeps for ``PREPARE name AS sql``: the classified ``sql``."""
    return one(sql)


def test_execute_is_the_prepared_statement_run() -> None:
    outer = one("EXECUTE d")
    run = executed_as(outer, prepared("DELETE FROM t"))
    assert (run.kind, run.tag, run.text, run.has_where) == (
        K.DELETE,
        "DELETE",
        "DELETE FROM t",
        False,
    )
    assert (run.start, run.end, run.tables_written) == (outer.start, outer.end, {"t"})
    assert run.prepared_name is None


def test_explain_analyze_execute_is_the_prepared_statement_run() -> None:
    run = executed_as(one("EXPLAIN ANALYZE EXECUTE d"), prepared("DELETE FROM t"))
    assert (run.kind, run.tag, run.has_where) == (K.DELETE, "DELETE", False)


def test_execute_parameters_count_too() -> None:
    """PostgreSQL refuses subqueries in EXECUTE parameters, but takes function calls."""
    run = executed_as(one("EXECUTE q(pg_read_file('x'))"), prepared("SELECT $1"))
    assert run.dangerous == (READ_FILE,)
    assert "pg_read_file" in run.functions
    assert run.read_only is False
    assert executed_as(one("EXECUTE q(1)"), prepared("SELECT $1")).read_only is True
    assert executed_as(one("EXECUTE q(nextval('s'))"), prepared("SELECT $1")).read_only is False


def test_create_table_as_execute_reads_what_the_prepared_statement_reads() -> None:
    outer = one("CREATE TABLE leak AS EXECUTE p")
    run = executed_as(outer, prepared("SELECT * FROM secrets WHERE id = $1"))
    assert (run.kind, run.tag, run.inner_kind) == (K.DDL, "CREATE TABLE AS", K.SELECT)
    assert (run.tables_read, run.tables_written) == ({"secrets"}, {"leak"})
    assert (run.text, run.fingerprint, run.start, run.end) == (
        outer.text,
        outer.fingerprint,
        outer.start,
        outer.end,
    )
    assert run.has_where is None and run.read_only is False


def test_create_table_as_execute_runs_the_prepared_ctes() -> None:
    run = executed_as(
        one("EXPLAIN ANALYZE CREATE TABLE leak AS EXECUTE p"),
        prepared("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
    )
    assert (run.kind, run.tag, run.inner_kind) == (K.DDL, "EXPLAIN", K.DELETE)
    assert (run.has_where, run.writes_in_cte, run.tables_written) == (False, True, {"leak", "t"})


def test_executing_a_statement_not_understood_is_unknown() -> None:
    mystery = Statement(K.UNKNOWN, "", "?", 0, 1, error="the prepared statement could not be read")
    for sql in ("EXECUTE p", "CREATE TABLE leak AS EXECUTE p"):
        run = executed_as(one(sql), mystery)
        assert (run.kind, run.error) == (K.UNKNOWN, mystery.error)


# --- read_only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "read_only"),
    [
        ("SELECT * FROM t", True),
        ("SHOW work_mem", True),
        ("EXPLAIN SELECT * FROM t", True),
        ("EXPLAIN UPDATE t SET a = 1", True),
        ("INSERT INTO t VALUES (1)", False),
        ("BEGIN", False),
        ("SET work_mem = '1MB'", False),
        ("CREATE TABLE t (a int)", False),
        ("DECLARE c CURSOR FOR SELECT 1", False),
        ("SELECT * INTO n FROM t", False),
    ],
)
def test_read_only(sql: str, read_only: bool) -> None:
    assert one(sql).read_only is read_only


# --- several statements, spans ------------------------------------------------------------------


def assert_spans(sql: str, result: Classification, texts: list[str]) -> None:
    assert [s.text for s in result.statements] == texts
    for statement in result.statements:
        assert sql[statement.start : statement.end] == statement.text


def test_statements_in_order_with_offsets() -> None:
    sql = "SELECT 1; DELETE FROM t WHERE id = 2;\nUPDATE u SET a = 1"
    result = classify(sql)
    assert result.kinds == (K.SELECT, K.DELETE, K.UPDATE)
    assert_spans(sql, result, ["SELECT 1", "DELETE FROM t WHERE id = 2", "UPDATE u SET a = 1"])
    assert [s.start for s in result.statements] == [0, 10, 38]


def test_offsets_are_character_offsets_after_non_ascii_text() -> None:
    sql = "SELECT 'héllo wörld 🎉 日本語'; DELETE FROM t WHERE name = 'ü'"
    result = classify(sql)
    second = result.statements[1]
    assert second.start == sql.index("DELETE")
    assert second.end == len(sql)
    assert_spans(sql, result, ["SELECT 'héllo wörld 🎉 日本語'", "DELETE FROM t WHERE name = 'ü'"])


def test_comments_between_statements_are_not_statement_text() -> None:
    sql = "SELECT 1; /* note; with ; semicolons */ -- another; comment\n  DELETE FROM t;  -- end"
    result = classify(sql)
    assert_spans(sql, result, ["SELECT 1", "DELETE FROM t"])
    assert result.kinds == (K.SELECT, K.DELETE)


def test_semicolons_inside_strings_and_bodies() -> None:
    sql = (
        "INSERT INTO t VALUES ('a;b', E'c\\';d'); SELECT ';' AS \"x;y\"; "
        "DO $$ BEGIN PERFORM 1; END $$; "
        "CREATE RULE r AS ON INSERT TO t DO ALSO "
        "(INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); "
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2"
    )
    result = classify(sql)
    assert result.kinds == (K.INSERT, K.SELECT, K.DO, K.DDL, K.DDL, K.SELECT)
    assert result.statements[0].text == "INSERT INTO t VALUES ('a;b', E'c\\';d')"
    assert result.statements[3].tables_written == {"t", "a", "b"}
    for statement in result.statements:
        assert sql[statement.start : statement.end] == statement.text


def test_empty_statements_between_are_skipped() -> None:
    sql = ";;SELECT 1;;; ;SELECT 2;"
    result = classify(sql)
    assert_spans(sql, result, ["SELECT 1", "SELECT 2"])


@pytest.mark.parametrize(
    ("sql", "texts"),
    [
        ("SELECT 1 \u3000; SELECT 2", ["SELECT 1 \u3000", "SELECT 2"]),
        ("SELECT 1 AS \u00a0x\u00a0", ["SELECT 1 AS \u00a0x\u00a0"]),
        ("SELECT 2 -- note\u2003\x1f", ["SELECT 2 -- note\u2003\x1f"]),
        ("SELECT 3 \u3000 \n", ["SELECT 3 \u3000"]),
    ],
)
def test_unicode_spaces_are_not_postgresql_whitespace(sql: str, texts: list[str]) -> None:
    assert_spans(sql, classify(sql), texts)


def test_splice_a_statement_using_its_offsets() -> None:
    sql = "SELECT 'ä'; DELETE FROM t; SELECT 3"
    target = classify(sql).statements[1]
    spliced = sql[: target.start] + "SELECT 0" + sql[target.end :]
    assert spliced == "SELECT 'ä'; SELECT 0; SELECT 3"


def test_classification_summary_properties() -> None:
    result = classify("SELECT * FROM a; DELETE FROM b; SELECT pg_read_file('x'); SHOW x")
    assert result.kinds == (K.SELECT, K.DELETE, K.SELECT, K.SHOW)
    assert result.tags == ("SELECT", "DELETE", "SELECT", "SHOW")
    assert result.tables_read == {"a"}
    assert result.tables_written == {"b"}
    assert result.dangerous == (READ_FILE,)
    assert result.has_where is False
    assert result.read_only is False
    assert result.unknown is False


def test_each_statement_has_its_own_fingerprint() -> None:
    result = classify("SELECT 1; SELECT 2; DELETE FROM t")
    first, second, third = result.statements
    assert first.fingerprint == second.fingerprint == pglast.parser.fingerprint("SELECT 1")
    assert third.fingerprint == pglast.parser.fingerprint("DELETE FROM t")
    assert first.fingerprint != third.fingerprint


# --- errors and empty queries -------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELEC 1",
        "SELECT FROM WHERE",
        "SELECT 'unterminated",
        'SELECT "unterminated',
        "SELECT 1; SELEC 2",
        "DELETE FROM",
        "/* unterminated comment",
        "SELECT $$ unterminated",
    ],
)
def test_parse_error_is_unknown(sql: str) -> None:
    result = classify(sql)
    assert result.unknown is True
    assert result.error
    assert result.read_only is False
    (statement,) = result.statements
    assert statement.kind is K.UNKNOWN
    assert statement.error == result.error
    assert statement.text == sql.strip()
    assert sql[statement.start : statement.end] == statement.text


def test_parse_error_message_points_at_the_problem() -> None:
    result = classify("SELECT 1; SELEC 2")
    assert result.error is not None
    assert 'syntax error at or near "SELEC"' in result.error


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1\x00; DROP TABLE t", "NUL"),
        ("SELECT '\ud800'", "Unicode"),
    ],
)
def test_text_the_parser_would_misread_is_unknown(sql: str, message: str) -> None:
    result = classify(sql)
    assert result.unknown is True
    assert result.error is not None and message in result.error


def test_too_deeply_nested_statement_is_unknown() -> None:
    depth = 600
    result = classify("SELECT " + "NOT (" * depth + "true" + ")" * depth)
    assert result.unknown is True
    assert result.statements[0].kind is K.UNKNOWN


def test_parser_limit_is_unknown() -> None:
    depth = 20000
    result = classify("SELECT " + "NOT (" * depth + "true" + ")" * depth)
    assert result.unknown is True


@pytest.mark.parametrize(
    "sql", ["", "   ", "\n\t", ";", " ; ;; ", "-- only a comment", "/* c */ ;"]
)
def test_empty_query(sql: str) -> None:
    result = classify(sql)
    assert result.unknown is False
    (statement,) = result.statements
    assert (statement.kind, statement.tag, statement.text) == (K.EMPTY, "", "")
    assert (statement.start, statement.end) == (0, 0)
    assert statement.read_only is True
    assert result.kinds == (K.EMPTY,)


@pytest.mark.parametrize(
    ("sql", "copied"),
    [
        ("CREATE TABLE x AS SELECT ssn FROM customers", {"customers"}),
        ("SELECT ssn INTO x FROM customers", {"customers"}),
        ("CREATE MATERIALIZED VIEW m AS SELECT ssn FROM s.customers", {"s.customers"}),
        ("INSERT INTO notes (body) SELECT ssn FROM customers", {"customers"}),
        ("UPDATE notes SET body = c.ssn FROM customers c WHERE c.id = 1", {"notes", "customers"}),
        ("UPDATE notes SET body = (SELECT ssn FROM customers)", {"notes", "customers"}),
        ("MERGE INTO notes n USING customers c ON n.id = c.id "
         "WHEN MATCHED THEN UPDATE SET body = c.ssn", {"notes", "customers"}),
        ("WITH w AS (INSERT INTO notes SELECT * FROM customers RETURNING 1) SELECT * FROM w",
         {"customers"}),
        ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = t.b", {"t"}),
        ("COPY (SELECT ssn FROM customers) TO '/tmp/x'", {"customers"}),
        ("EXPLAIN ANALYZE INSERT INTO notes SELECT * FROM customers", {"customers"}),
        ("PREPARE p AS INSERT INTO notes SELECT * FROM customers", {"customers"}),
        # writes no values computed from tables, or writes nothing
        ("INSERT INTO t VALUES (1, 'x')", set()),
        ("DELETE FROM customers WHERE id = 1", set()),
        ("SELECT ssn FROM customers", set()),
        ("COPY (SELECT ssn FROM customers) TO STDOUT", set()),
        ("COPY notes FROM STDIN", set()),
        ("EXPLAIN INSERT INTO notes SELECT * FROM customers", set()),
        ("CREATE VIEW v AS SELECT ssn FROM customers", set()),
    ],
)  # fmt: skip
def test_tables_copied(sql: str, copied: set[str]) -> None:
    assert classify(sql).statements[0].tables_copied == copied


def test_tables_copied_of_create_table_as_execute_are_what_the_prepared_statement_reads() -> None:
    outer = classify("CREATE TABLE x AS EXECUTE p").statements[0]
    prepared = classify("SELECT ssn FROM customers").statements[0]
    assert outer.tables_copied == frozenset()
    assert executed_as(outer, prepared).tables_copied == {"customers"}
    run = classify("EXECUTE p").statements[0]
    inserts = classify("INSERT INTO notes SELECT ssn FROM customers").statements[0]
    assert executed_as(run, prepared).tables_copied == frozenset()
    assert executed_as(run, inserts).tables_copied == {"customers"}


def test_tables_copied_survive_the_shape_cache() -> None:
    classifier = PostgresClassifier()
    classifier.classify("INSERT INTO notes SELECT ssn FROM customers WHERE id = 1")
    again = classifier.classify("INSERT INTO notes SELECT ssn FROM customers WHERE id = 2")
    assert classifier.stats.fingerprint_hits == 1
    assert again.statements[0].tables_copied == {"customers"}
    other = classifier.classify("INSERT INTO notes SELECT ssn FROM payroll WHERE id = 3")
    assert other.statements[0].tables_copied == {"payroll"}
