"""Data types produced by the SQL statement classifiers.

A query string sent by a client (a PostgreSQL simple-protocol ``Query`` may hold several
statements) becomes one :class:`Classification`, made of one :class:`Statement` per
statement. Policy reads these; the session layer uses ``Statement.start``/``end`` to splice
statements and ``Statement.prepared_name`` to follow PREPARE/EXECUTE.

All types are immutable, so a classification can be cached and shared between sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CommandKind(StrEnum):
    """What a statement does, coarse enough for policy (actions are ``sql:<kind>``)."""

    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    TRUNCATE = "truncate"
    DDL = "ddl"
    DCL = "dcl"
    COPY = "copy"
    CALL = "call"
    DO = "do"
    SET = "set"
    SHOW = "show"
    TRANSACTION = "transaction"
    PREPARE = "prepare"
    EXECUTE = "execute"
    DEALLOCATE = "deallocate"
    EXPLAIN = "explain"
    CURSOR = "cursor"
    LISTEN = "listen"
    NOTIFY = "notify"
    LOCK = "lock"
    MAINTENANCE = "maintenance"
    SESSION = "session"
    EMPTY = "empty"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Statement:
    """One classified statement.

    ``text`` is the statement's own source, ``original[start:end]``, without surrounding
    whitespace, without comments before it and without its terminating ``;``.

    Names in ``tables_read``/``tables_written``/``functions`` follow PostgreSQL identifier
    rules (unquoted names are lower-cased, quoted ones keep their case) and are qualified as
    written (``schema.table``). ``functions`` holds both the qualified and the bare name.

    ``has_where`` is ``None`` unless the statement executes an UPDATE or DELETE (anywhere,
    data-modifying CTEs included; for PREPARE: when the prepared statement is executed); it
    is ``False`` as soon as one of them has no WHERE clause. ``trivial_where`` is a best
    effort: one of those WHERE clauses is always true (``true``, ``1=1``, ``id = id``).

    ``read_only`` is true only for SELECT, SHOW, plain EXPLAIN and empty statements that
    write no table and call no dangerous or known side-effecting function. A SELECT calling
    an arbitrary user-defined function may still write: that cannot be seen in the text.

    ``inner_kind`` is the kind of the statement inside PREPARE and plain EXPLAIN, and (once
    the gateway knows what the name means) of the statement ``CREATE TABLE ... AS EXECUTE``
    runs. Such a statement has the executed name in ``prepared_name``.

    ``tables_copied`` holds the tables whose data may feed the rows a statement writes:
    for a statement that writes rows computed by SQL (INSERT, UPDATE, MERGE — also in a
    CTE —, CREATE TABLE AS, SELECT INTO, CREATE MATERIALIZED VIEW, COPY … TO a server file
    or program), every table it reads, and the tables its UPDATE, MERGE or
    ``INSERT … ON CONFLICT`` write (their own columns may feed the new values). A superset:
    :func:`jitgate.sql.lineage.result_lineage` tells which columns do feed them.

    ``fingerprint`` is libpg_query's: it groups statements for audit and statistics, and is
    NOT a safe cache or approval key. It ignores constants, schema names, relation names
    behind an alias and digits in names: ``SELECT * FROM users u`` and
    ``SELECT * FROM payroll u`` share one.
    """

    kind: CommandKind
    tag: str
    text: str
    start: int
    end: int
    tables_read: frozenset[str] = frozenset()
    tables_written: frozenset[str] = frozenset()
    has_where: bool | None = None
    trivial_where: bool = False
    functions: frozenset[str] = frozenset()
    dangerous: tuple[str, ...] = ()
    writes_in_cte: bool = False
    read_only: bool = False
    fingerprint: str = ""
    prepared_name: str | None = None
    copy_direction: str | None = None
    copy_target: str | None = None
    error: str | None = None
    inner_kind: CommandKind | None = None
    tables_copied: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Classification:
    """All statements of one query string, in order.

    ``unknown`` is true when any statement could not be classified (parse error or a
    statement type the classifier does not know); policy must then fail closed.
    A string with no statement at all (empty, only comments or ``;``) is one statement of
    kind ``empty``.
    """

    statements: tuple[Statement, ...]
    unknown: bool = False
    error: str | None = None

    @property
    def kinds(self) -> tuple[CommandKind, ...]:
        return tuple(statement.kind for statement in self.statements)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(statement.tag for statement in self.statements)

    @property
    def tables_read(self) -> frozenset[str]:
        return frozenset().union(*(s.tables_read for s in self.statements))

    @property
    def tables_written(self) -> frozenset[str]:
        return frozenset().union(*(s.tables_written for s in self.statements))

    @property
    def functions(self) -> frozenset[str]:
        return frozenset().union(*(s.functions for s in self.statements))

    @property
    def dangerous(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for s in self.statements for r in s.dangerous))

    @property
    def read_only(self) -> bool:
        return not self.unknown and all(s.read_only for s in self.statements)

    @property
    def writes_in_cte(self) -> bool:
        return any(s.writes_in_cte for s in self.statements)

    @property
    def has_where(self) -> bool | None:
        """``None`` if no statement runs UPDATE/DELETE, else whether all have a WHERE."""
        flags = [s.has_where for s in self.statements if s.has_where is not None]
        return all(flags) if flags else None

    @property
    def trivial_where(self) -> bool:
        return any(s.trivial_where for s in self.statements)
