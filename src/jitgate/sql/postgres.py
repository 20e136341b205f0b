"""PostgreSQL statement classifier: SQL text in, :class:`Classification` out.

The gateway calls :meth:`PostgresClassifier.classify` for every simple-protocol ``Query``
and every extended-protocol ``Parse``. It is pure (no I/O, no asyncio) and never raises
for bad input: what libpg_query cannot parse is a statement of kind ``unknown``.

Theory of operation
-------------------
Parsing is done by pglast (libpg_query, the PostgreSQL 18 grammar). The syntax tree comes
back as JSON (``parse_sql_json`` + ``json.loads`` is about five times faster than building
``pglast.ast`` objects). In that JSON a node is ``{"TypeName": {fields}}``, except fields
typed with a concrete struct (``InsertStmt.relation``, ``SelectStmt.larg``,
``CallStmt.funccall``...), which are bare ``{fields}``; :func:`_node` resolves both.

For each statement a *head* (:meth:`_Classifier._head`) names kind and command tag from
the root node (tags follow PostgreSQL's ``CreateCommandTag``) and says whether relations
directly under the root are written (DDL, TRUNCATE, COPY FROM...) or read. Then
:class:`_Walker` visits the whole tree with an explicit stack (no recursion limit) and
collects:

* ``RangeVar`` nodes as tables. Query nodes (``SelectStmt``) make their subtree *read*;
  ``InsertStmt``/``UpdateStmt``/``DeleteStmt``/``MergeStmt`` write their ``relation`` and
  read the rest. Names bound by an enclosing ``WITH`` are CTE references, not tables
  (non-recursive ``WITH`` items only see the items before them, as in PostgreSQL).
* ``FuncCall`` nodes as functions, checked against :data:`DANGEROUS_FUNCTIONS` and
  :data:`SIDE_EFFECT_FUNCTIONS` by bare name, whatever the schema.
* data-modifying statements inside CTEs, and the WHERE clause of every UPDATE/DELETE.
* whether the statement writes rows computed by SQL (INSERT/UPDATE/MERGE anywhere,
  ``SELECT INTO``): then ``tables_copied`` is what it reads (and the tables its
  UPDATE/MERGE/upsert write), the tables whose data may end up in those rows.

Caches
------
``classify`` first looks the exact string up in an LRU (one dict look-up on a hit). On a
miss it computes a *shape key*: ``(pglast.fingerprint, pglast.normalize)``. Strings that
differ only in constants (``WHERE aid = 123`` vs ``= 456``) share it, and reuse the
cached classification with only ``text``/``start``/``end`` rebuilt from the new string
(``pglast.parser.split``, which is also what the cold path uses, so both agree).

The fingerprint alone is NOT a safe key: libpg_query deliberately gives one fingerprint to
``SELECT * FROM users u`` and ``SELECT * FROM payroll u`` (aliased relations), to
``s1.t`` and ``s2.t`` (schemas), ``orders_2024`` and ``orders_2025``, to reordered or
duplicated target lists, and ignores nodes deeper than 100 levels; it is also a 64-bit
non-cryptographic hash. The normalized text keeps every identifier, keyword and comment
and only replaces constants with ``$n``, so the pair is exact except for constant values.
The fingerprint part separates texts that normalize alike but parse differently:
``WHERE bool't'`` becomes ``WHERE bool$1``, which is also a column named ``bool$1``.
Neither tells a ``$1`` parameter from a constant, so rules treat parameters as constants.

The only rules that look at constant values are ``trivial_where`` (``1 = 1``) and EXPLAIN
option values; a statement whose result depended on a constant (or parameter) is marked
``literal_sensitive`` and is never stored in the shape cache (only in the exact one).
Parse errors and unknown statements are not stored in the shape cache either.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from pglast import parser as libpg_query
from pglast.parser import ParseError

from jitgate.sql.types import Classification, CommandKind, Statement

__all__ = [
    "DANGEROUS_FUNCTIONS",
    "SIDE_EFFECT_FUNCTIONS",
    "CacheStats",
    "PostgresClassifier",
    "classify_postgres",
    "executed_as",
]

Fields = dict[str, Any]

DANGEROUS_FUNCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # server file system (pg_read_server_files / adminpack)
        "pg_read_file": "server file access",
        "pg_read_binary_file": "server file access",
        "pg_stat_file": "server file access",
        "pg_ls_dir": "server file access",
        "pg_ls_logdir": "server file access",
        "pg_ls_waldir": "server file access",
        "pg_ls_tmpdir": "server file access",
        "pg_ls_archive_statusdir": "server file access",
        "pg_ls_logicalsnapdir": "server file access",
        "pg_ls_logicalmapdir": "server file access",
        "pg_ls_replslotdir": "server file access",
        "pg_ls_summariesdir": "server file access",
        "pg_logdir_ls": "server file access",
        "pg_file_read": "server file access",
        "pg_file_write": "server file write",
        "pg_file_rename": "server file write",
        "pg_file_unlink": "server file write",
        "pg_file_sync": "server file write",
        "lo_import": "server file access",
        "lo_export": "server file write",
        # other databases
        "dblink*": "connects to another database",
        # other sessions and the server itself
        "pg_terminate_backend": "ends another session",
        "pg_cancel_backend": "cancels another session's query",
        "pg_reload_conf": "reloads the server configuration",
        "pg_rotate_logfile": "server administration",
        "pg_promote": "promotes a standby server",
        "pg_switch_wal": "server administration",
        "pg_create_restore_point": "server administration",
        "pg_backup_start": "server administration",
        "pg_backup_stop": "server administration",
        "pg_wal_replay_pause": "server administration",
        "pg_wal_replay_resume": "server administration",
        "pg_log_backend_memory_contexts": "server administration",
        # replication slots stream every change in the database
        "pg_create_physical_replication_slot": "replication slot",
        "pg_create_logical_replication_slot": "replication slot",
        "pg_copy_physical_replication_slot": "replication slot",
        "pg_copy_logical_replication_slot": "replication slot",
        "pg_drop_replication_slot": "replication slot",
        "pg_replication_slot_advance": "replication slot",
        "pg_logical_slot_get_changes": "reads every change through a replication slot",
        "pg_logical_slot_peek_changes": "reads every change through a replication slot",
        "pg_logical_slot_get_binary_changes": "reads every change through a replication slot",
        "pg_logical_slot_peek_binary_changes": "reads every change through a replication slot",
        # session settings, including role-related ones
        "set_config": "can change role-related settings",
        # SQL given as a string, or tables given by name, escape table-level policy
        "query_to_xml": "runs dynamic SQL",
        "query_to_xmlschema": "runs dynamic SQL",
        "query_to_xml_and_xmlschema": "runs dynamic SQL",
        "cursor_to_xml": "reads an open cursor",
        "cursor_to_xmlschema": "reads an open cursor",
        "table_to_xml": "reads a table named in a string",
        "table_to_xmlschema": "reads a table named in a string",
        "table_to_xml_and_xmlschema": "reads a table named in a string",
        "schema_to_xml": "reads every table of a schema",
        "schema_to_xmlschema": "reads every table of a schema",
        "schema_to_xml_and_xmlschema": "reads every table of a schema",
        "database_to_xml": "reads every table of the database",
        "database_to_xmlschema": "reads every table of the database",
        "database_to_xml_and_xmlschema": "reads every table of the database",
        "ts_stat": "runs dynamic SQL",
    }
)
"""Functions whose call makes a statement dangerous: bare name → reason.

Matched case-insensitively on the bare name whatever schema is written (extensions such
as dblink or adminpack live in any schema). A trailing ``*`` matches a prefix. Extend by
passing ``dangerous_functions={**DANGEROUS_FUNCTIONS, "name": "reason"}`` to
:class:`PostgresClassifier`. The reason appears as ``"calls NAME (REASON)"``.
"""

SIDE_EFFECT_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        "nextval",
        "setval",
        "pg_notify",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lowrite",
        "lo_truncate",
        "lo_truncate64",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "pg_advisory_unlock_all",
    }
)
"""Built-in functions that change state without being dangerous: a SELECT calling one is
not ``read_only``. This is a short deny-list, not an allow-list of pure functions: any
user-defined function may write too, and no classifier can see that in the text."""

_READ_ONLY_KINDS: Final = frozenset(
    {CommandKind.SELECT, CommandKind.SHOW, CommandKind.EXPLAIN, CommandKind.EMPTY}
)
_WRITE_PRIORITY: Final[Mapping[CommandKind, int]] = {
    CommandKind.SELECT: 0,
    CommandKind.INSERT: 1,
    CommandKind.MERGE: 2,
    CommandKind.UPDATE: 3,
    CommandKind.DELETE: 4,
}
_NO_WHERE_KINDS: Final = frozenset({CommandKind.DDL, CommandKind.DCL, CommandKind.EXPLAIN})
# DDL roots that run their query now (CREATE TABLE AS, SELECT INTO): an UPDATE or DELETE
# in its WITH runs too, so its WHERE counts (a view's or a rule's runs later, if ever).
_QUERY_RUNNING_ROOTS: Final = frozenset({"CreateTableAsStmt", "SelectStmt"})
# COPY … TO these writes rows into a server file (TO STDOUT sends a result, masked as one).
_SERVER_SIDE: Final = frozenset({"file", "program"})
_ROLE_SETTINGS: Final = frozenset({"role", "session_authorization"})
_LEAVES: Final = frozenset(
    {
        "A_Const",
        "A_Star",
        "BitString",
        "Boolean",
        "ColumnRef",
        "Float",
        "Integer",
        "ParamRef",
        "SQLValueFunction",
        "String",
    }
)
_NO_CTES: Final[frozenset[str]] = frozenset()

# --- danger reasons that are not function calls -------------------------------------------

_COPY_PROGRAM: Final = "COPY ... PROGRAM (runs a program on the server)"
_COPY_FILE: Final = "COPY to/from a server file"
_DO_BLOCK: Final = "DO block (procedural code)"
_LOAD: Final = "LOAD (loads a shared library)"
_ALTER_SYSTEM: Final = "ALTER SYSTEM"
_ROLE_CHANGE: Final = "SET ROLE / SESSION AUTHORIZATION (privilege change)"


# --- JSON tree helpers --------------------------------------------------------------------


def _node(value: Fields, parent: str, key: str) -> tuple[str, Fields]:
    """Return ``(node type, fields)`` of a JSON value; ``""`` for an anonymous struct."""
    if len(value) == 1:
        for name, inner in value.items():
            if "A" <= name[:1] <= "Z" and type(inner) is dict:
                return name, inner
    if "relname" in value:
        return "RangeVar", value
    if key in ("larg", "rarg") and parent == "SelectStmt":
        return "SelectStmt", value
    if key == "funccall":
        return "FuncCall", value
    return "", value


def _string(value: Any) -> str:
    if isinstance(value, dict):
        inner = value.get("String")
        if isinstance(inner, dict):
            return str(inner.get("sval", ""))
    return ""


def _list_items(value: Any) -> list[Any]:
    """Items of a ``{"List": {"items": [...]}}`` node (or of a plain JSON list)."""
    if isinstance(value, dict):
        inner = value.get("List")
        if isinstance(inner, dict):
            items = inner.get("items", [])
            return items if isinstance(items, list) else []
    return value if isinstance(value, list) else []


def _relation_name(fields: Fields) -> str:
    parts = (fields.get("catalogname"), fields.get("schemaname"), fields.get("relname"))
    return ".".join(str(part) for part in parts if part)


def _object_name(object_type: Any) -> str:
    """``OBJECT_FOREIGN_TABLE`` → ``FOREIGN TABLE``, as in PostgreSQL's command tags."""
    name = str(object_type)
    override = _OBJECT_NAMES.get(name)
    if override is not None:
        return override
    return name.removeprefix("OBJECT_").replace("_", " ")


_OBJECT_NAMES: Final[Mapping[str, str]] = {
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
    "OBJECT_STATISTIC_EXT": "STATISTICS",
    "OBJECT_LARGEOBJECT": "LARGE OBJECT",
    "OBJECT_ATTRIBUTE": "TYPE",
    "OBJECT_COLUMN": "TABLE",
    "OBJECT_TABCONSTRAINT": "TABLE",
    "OBJECT_DOMCONSTRAINT": "DOMAIN",
}
_RELATION_OBJECTS: Final = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
        "OBJECT_INDEX",
    }
)


# --- always-true WHERE detection ----------------------------------------------------------


class _Opaque:
    """The value of an expression that is not a constant."""


_OPAQUE: Final = _Opaque()
_Value = bool | int | float | str | None | _Opaque  # None is SQL NULL
_MAX_EXPRESSION_DEPTH: Final = 64
_TRUE_WORDS: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_WORDS: Final = frozenset({"f", "false", "n", "no", "off", "0"})
_BOOL_TYPES: Final = frozenset({"bool", "boolean"})
_NUMBER_TYPES: Final = frozenset(
    {"int2", "int4", "int8", "smallint", "integer", "bigint", "numeric", "decimal"}
    | {"float4", "float8", "real"}
)
_TEXT_TYPES: Final = frozenset({"text", "varchar", "bpchar", "char", "name"})
_SELF_TRUE_OPERATORS: Final = frozenset({"=", "<=", ">="})
_LITERALS: Final = frozenset({"A_Const", "ParamRef"})  # one shape key covers both
_CONSTANT_OPERATIONS: Final = frozenset(
    {"AEXPR_OP", "AEXPR_IN", "AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"}
)


class _WhereJudge:
    """Decides whether a WHERE clause is true for every row (best effort, fails closed).

    ``literal_sensitive`` is set as soon as the answer depended on a constant's value.
    """

    __slots__ = ("literal_sensitive",)

    def __init__(self) -> None:
        self.literal_sensitive = False

    def always_true(self, typ: str, fields: Fields, depth: int = 0) -> bool:
        if depth > _MAX_EXPRESSION_DEPTH:
            return True
        constant = _is_constant(typ, fields, 0)
        if constant is None:
            return True
        if constant:
            self.literal_sensitive = True
            return _value(typ, fields, 0) is True
        if typ == "BoolExpr":
            args = [_node(arg, typ, "args") for arg in fields.get("args", ())]
            if fields.get("boolop") == "OR_EXPR":
                return any(self.always_true(t, f, depth + 1) for t, f in args)
            if fields.get("boolop") == "AND_EXPR":
                return bool(args) and all(self.always_true(t, f, depth + 1) for t, f in args)
            return False
        if typ == "A_Expr":
            return self._compares_with_itself(fields)
        return False

    def _compares_with_itself(self, fields: Fields) -> bool:
        """``x = x``, ``x <= x``, ``x IS NOT DISTINCT FROM x``: true for (non-null) rows."""
        kind = fields.get("kind")
        operator = _string((fields.get("name") or [None])[-1])
        if not (
            kind == "AEXPR_NOT_DISTINCT"
            or (kind == "AEXPR_OP" and operator in _SELF_TRUE_OPERATORS)
        ):
            return False
        left, right = fields.get("lexpr"), fields.get("rexpr")
        if not (isinstance(left, dict) and isinstance(right, dict)):
            return False
        if not _same_tree(left, right, ignore_constants=True, depth=0):
            return False
        if _contains_constant(left, 0):
            self.literal_sensitive = True
            return _same_tree(left, right, ignore_constants=False, depth=0)
        return True


def _is_constant(typ: str, fields: Fields, depth: int) -> bool | None:
    """Whether an expression is built only from constants and parameters (``None``: too deep
    to tell). Parameters count because the shape key cannot tell ``$1`` from ``1``."""
    if depth > _MAX_EXPRESSION_DEPTH:
        return None
    if typ in _LITERALS:
        return True
    if typ in ("TypeCast", "NullTest", "BooleanTest"):
        arg = fields.get("arg")
        return isinstance(arg, dict) and _is_constant(*_node(arg, typ, "arg"), depth + 1)
    if typ == "BoolExpr":
        operands = fields.get("args", [])
    elif typ == "A_Expr" and fields.get("kind") in _CONSTANT_OPERATIONS:
        right = fields.get("rexpr")
        operands = [fields.get("lexpr"), *(_list_items(right) or [right])]
    else:
        return False
    verdict: bool | None = True
    for operand in operands:
        if not isinstance(operand, dict):
            return False
        answer = _is_constant(*_node(operand, typ, "args"), depth + 1)
        if answer is False:
            return False
        if answer is None:
            verdict = None
    return verdict


def _value(typ: str, fields: Fields, depth: int) -> _Value:
    """Evaluate a constant expression as PostgreSQL would (a useful subset)."""
    if depth > _MAX_EXPRESSION_DEPTH:
        return _OPAQUE
    if typ == "A_Const":
        return _constant(fields)
    if typ == "TypeCast":
        type_names = fields.get("typeName", {}).get("names", [])
        type_name = _string(type_names[-1]) if type_names else ""
        return _cast(_operand(fields.get("arg"), typ, depth), type_name)
    if typ == "BoolExpr":
        return _bool_expr(fields, depth)
    if typ == "A_Expr":
        return _a_expr(fields, depth)
    if typ == "NullTest":
        tested = _operand(fields.get("arg"), typ, depth)
        if isinstance(tested, _Opaque):
            return _OPAQUE
        return (tested is None) == (fields.get("nulltesttype") == "IS_NULL")
    if typ == "BooleanTest":
        return _boolean_test(_operand(fields.get("arg"), typ, depth), fields.get("booltesttype"))
    return _OPAQUE


def _operand(value: Any, parent: str, depth: int) -> _Value:
    if not isinstance(value, dict):
        return _OPAQUE
    return _value(*_node(value, parent, "arg"), depth + 1)


def _constant(fields: Fields) -> _Value:
    if fields.get("isnull"):
        return None
    if "boolval" in fields:
        return bool(fields["boolval"].get("boolval", False))
    if "ival" in fields:
        return int(fields["ival"].get("ival", 0))
    if "fval" in fields:
        return float(fields["fval"].get("fval", "0"))
    if "sval" in fields:
        return str(fields["sval"].get("sval", ""))
    return _OPAQUE


def _cast(value: _Value, type_name: str) -> _Value:
    if value is None or isinstance(value, _Opaque):
        return value
    if type_name in _BOOL_TYPES:
        return _to_bool(value)
    if type_name in _NUMBER_TYPES:
        return _to_number(value)
    if type_name in _TEXT_TYPES:
        return value if isinstance(value, str) else _OPAQUE
    return _OPAQUE


def _to_bool(value: bool | int | float | str) -> _Value:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return _OPAQUE


def _to_number(value: bool | int | float | str) -> _Value:
    if isinstance(value, bool):
        return _OPAQUE
    if isinstance(value, int | float):
        return value
    try:
        return int(value.strip())
    except ValueError:
        pass
    try:
        return float(value.strip())
    except ValueError:
        return _OPAQUE


def _bool_expr(fields: Fields, depth: int) -> _Value:
    values = [_operand(arg, "BoolExpr", depth) for arg in fields.get("args", ())]
    if any(isinstance(v, _Opaque) or not (v is None or isinstance(v, bool)) for v in values):
        return _OPAQUE
    operator = fields.get("boolop")
    if operator == "NOT_EXPR":
        return None if not values or values[0] is None else not values[0]
    if operator == "AND_EXPR":
        if False in values:
            return False
        return None if None in values else True
    if True in values:
        return True
    return None if None in values else False


def _a_expr(fields: Fields, depth: int) -> _Value:
    kind = fields.get("kind")
    operator = _string((fields.get("name") or [None])[-1])
    left = _operand(fields.get("lexpr"), "A_Expr", depth)
    if kind == "AEXPR_IN":
        candidates = [_operand(item, "A_Expr", depth) for item in _list_items(fields.get("rexpr"))]
        return _in_list(left, candidates, negated=operator == "<>")
    right = _operand(fields.get("rexpr"), "A_Expr", depth)
    if kind == "AEXPR_OP":
        return _compare(operator, left, right)
    if kind in ("AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"):
        if left is None or right is None:
            same: _Value = left is None and right is None
        else:
            same = _compare("=", left, right)
        if isinstance(same, bool):
            return same if kind == "AEXPR_NOT_DISTINCT" else not same
    return _OPAQUE


def _in_list(left: _Value, candidates: list[_Value], *, negated: bool) -> _Value:
    answers = [_compare("=", left, candidate) for candidate in candidates]
    if any(isinstance(answer, _Opaque) for answer in answers):
        return _OPAQUE
    found: _Value = True if True in answers else (None if None in answers else False)
    if negated and isinstance(found, bool):
        return not found
    return found


def _compare(operator: str, left: _Value, right: _Value) -> _Value:
    if isinstance(left, _Opaque) or isinstance(right, _Opaque):
        return _OPAQUE
    if left is None or right is None:
        return None
    left, right = _coerce(left, right)
    if isinstance(left, _Opaque) or isinstance(right, _Opaque):
        return _OPAQUE
    if operator == "=":
        return left == right
    if operator in ("<>", "!="):
        return left != right
    if isinstance(left, bool | str) or isinstance(right, bool | str):
        return _OPAQUE  # ordering of text depends on the collation
    return _ORDERINGS[operator](left, right) if operator in _ORDERINGS else _OPAQUE


def _coerce(left: _Value, right: _Value) -> tuple[_Value, _Value]:
    """Resolve an untyped string literal against the other side's type, like PostgreSQL."""
    if isinstance(left, str) and not isinstance(right, str):
        return _coerce(right, left)[::-1]
    if isinstance(right, str) and not isinstance(left, str):
        if isinstance(left, bool):
            return left, _to_bool(right)
        return left, _to_number(right)
    if isinstance(left, bool) != isinstance(right, bool):
        return _OPAQUE, _OPAQUE
    return left, right


_ORDERINGS: Final = {
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _boolean_test(value: _Value, test: Any) -> _Value:
    if isinstance(value, _Opaque) or not (value is None or isinstance(value, bool)):
        return _OPAQUE
    outcomes = {
        "IS_TRUE": value is True,
        "IS_NOT_TRUE": value is not True,
        "IS_FALSE": value is False,
        "IS_NOT_FALSE": value is not False,
        "IS_UNKNOWN": value is None,
        "IS_NOT_UNKNOWN": value is not None,
    }
    return outcomes.get(str(test), _OPAQUE)


def _same_tree(left: Any, right: Any, *, ignore_constants: bool, depth: int) -> bool:
    """Structural equality of two JSON subtrees, ignoring locations (too deep: equal).

    With ``ignore_constants``, any constant or parameter equals any other."""
    if depth > _MAX_EXPRESSION_DEPTH:
        return True
    if isinstance(left, dict) and isinstance(right, dict):
        if ignore_constants and _is_literal(left) and _is_literal(right):
            return True
        keys = left.keys() - {"location"}
        if keys != right.keys() - {"location"}:
            return False
        return all(
            _same_tree(left[k], right[k], ignore_constants=ignore_constants, depth=depth + 1)
            for k in keys
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _same_tree(a, b, ignore_constants=ignore_constants, depth=depth + 1)
            for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


def _is_literal(tree: Fields) -> bool:
    return len(tree) == 1 and not _LITERALS.isdisjoint(tree)


def _contains_constant(tree: Any, depth: int) -> bool:
    """Whether a subtree holds a constant or a parameter (too deep: assume it does)."""
    if depth > _MAX_EXPRESSION_DEPTH:
        return True
    if isinstance(tree, dict):
        return _is_literal(tree) or any(_contains_constant(v, depth + 1) for v in tree.values())
    if isinstance(tree, list):
        return any(_contains_constant(item, depth + 1) for item in tree)
    return False


# --- the tree walk ------------------------------------------------------------------------


class _FunctionRules:
    """Matches bare function names against the dangerous and side-effect lists."""

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, dangerous: Mapping[str, str]) -> None:
        self._exact = {k.lower(): v for k, v in dangerous.items() if not k.endswith("*")}
        self._prefixes = tuple((k[:-1].lower(), v) for k, v in dangerous.items() if k.endswith("*"))

    def danger(self, bare_name: str) -> str | None:
        lowered = bare_name.lower()
        reason = self._exact.get(lowered)
        if reason is None:
            for prefix, prefix_reason in self._prefixes:
                if lowered.startswith(prefix):
                    return prefix_reason
        return reason


class _Facts:
    """What a walk over one statement found."""

    __slots__ = (
        "copies",
        "cte_writes",
        "dangerous",
        "fed",
        "functions",
        "locking",
        "read",
        "side_effects",
        "where_judge",
        "wheres",
        "written",
    )

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.functions: set[str] = set()
        self.dangerous: list[str] = []
        self.cte_writes: set[CommandKind] = set()
        self.wheres: list[bool] = []
        self.where_judge = _WhereJudge()
        self.side_effects = False
        self.locking = False
        self.copies = False  # writes rows computed by SQL (INSERT, UPDATE, MERGE, SELECT INTO)
        self.fed: set[str] = set()  # written tables whose own columns may feed new values


# A stack item: node type, fields, relations written?, CTE names in scope, inside a CTE?
_Item = tuple[str, Fields, bool, frozenset[str], bool]

_MODIFYING: Final[Mapping[str, CommandKind]] = {
    "InsertStmt": CommandKind.INSERT,
    "UpdateStmt": CommandKind.UPDATE,
    "DeleteStmt": CommandKind.DELETE,
    "MergeStmt": CommandKind.MERGE,
}


class _Walker:
    """Visits every node of one statement with an explicit stack, filling a :class:`_Facts`."""

    __slots__ = ("_facts", "_rules", "_stack", "_trivial")

    def __init__(self, rules: _FunctionRules, facts: _Facts) -> None:
        self._rules = rules
        self._facts = facts
        self._stack: list[_Item] = []
        self._trivial = False

    def run(self, typ: str, fields: Fields, write: bool) -> bool:
        """Walk from the root; return whether some UPDATE/DELETE has an always-true WHERE."""
        stack = self._stack
        stack.append((typ, fields, write, _NO_CTES, False))
        while stack:
            typ, fields, write, ctes, in_cte = stack.pop()
            if typ == "RangeVar":
                self._range_var(fields, write, ctes)
            elif typ == "FuncCall":
                self._func_call(fields, write, ctes, in_cte)
            elif typ == "SelectStmt":
                self._select(fields, ctes, in_cte)
            elif typ in _MODIFYING:
                self._modify(typ, fields, ctes, in_cte)
            elif typ in ("TableLikeClause", "Constraint"):
                self._push(typ, fields, False, ctes, in_cte)
            else:
                self._push(typ, fields, write, ctes, in_cte)
        return self._trivial

    def _push(
        self,
        typ: str,
        fields: Fields,
        write: bool,
        ctes: frozenset[str],
        in_cte: bool,
        skip: tuple[str, ...] = (),
    ) -> None:
        """Push the child nodes of a node (the walk's inner loop, hence written flat)."""
        append = self._stack.append
        for key, value in fields.items():
            if type(value) is dict:
                if key not in skip:
                    child, child_fields = _node(value, typ, key)
                    if child not in _LEAVES:
                        append((child, child_fields, write, ctes, in_cte))
            elif type(value) is list and key not in skip:
                for item in value:
                    if type(item) is dict:
                        child, child_fields = _node(item, typ, key)
                        if child not in _LEAVES:
                            append((child, child_fields, write, ctes, in_cte))

    def _range_var(self, fields: Fields, write: bool, ctes: frozenset[str]) -> None:
        name = _relation_name(fields)
        if not name:
            return
        if write:
            self._facts.written.add(name)
        elif name not in ctes or "schemaname" in fields or "catalogname" in fields:
            self._facts.read.add(name)

    def _func_call(self, fields: Fields, write: bool, ctes: frozenset[str], in_cte: bool) -> None:
        parts = [_string(part) for part in fields.get("funcname", ())]
        if parts and parts[-1]:
            facts = self._facts
            bare = parts[-1]
            facts.functions.add(".".join(parts))
            facts.functions.add(bare)
            reason = self._rules.danger(bare)
            if reason is not None:
                facts.dangerous.append(f"calls {bare} ({reason})")
            if bare.lower() in SIDE_EFFECT_FUNCTIONS:
                facts.side_effects = True
        self._push("FuncCall", fields, write, ctes, in_cte, skip=("funcname",))

    def _select(self, fields: Fields, ctes: frozenset[str], in_cte: bool) -> None:
        if fields.get("lockingClause"):
            self._facts.locking = True
        scope = self._with(fields.get("withClause"), ctes)
        into = fields.get("intoClause")
        if isinstance(into, dict) and isinstance(into.get("rel"), dict):
            self._facts.copies = True
            self._stack.append(("RangeVar", into["rel"], True, scope, in_cte))
        self._push("SelectStmt", fields, False, scope, in_cte, skip=("withClause", "intoClause"))

    def _modify(self, typ: str, fields: Fields, ctes: frozenset[str], in_cte: bool) -> None:
        kind = _MODIFYING[typ]
        if in_cte:
            self._facts.cte_writes.add(kind)
        if kind in (CommandKind.UPDATE, CommandKind.DELETE):
            self._where(fields.get("whereClause"))
        scope = self._with(fields.get("withClause"), ctes)
        relation = fields.get("relation")
        if isinstance(relation, dict):
            self._stack.append(("RangeVar", relation, True, scope, in_cte))
        if kind is not CommandKind.DELETE:
            self._facts.copies = True
            if isinstance(relation, dict) and (
                kind is not CommandKind.INSERT or fields.get("onConflictClause")
            ):
                self._facts.fed.add(_relation_name(relation))
        self._push(typ, fields, False, scope, in_cte, skip=("withClause", "relation"))

    def _where(self, where: Any) -> None:
        self._facts.wheres.append(isinstance(where, dict))
        if isinstance(where, dict) and self._facts.where_judge.always_true(*_node(where, "", "")):
            self._trivial = True

    def _with(self, with_clause: Any, ctes: frozenset[str]) -> frozenset[str]:
        """Push the CTE queries with their scope; return the scope of the statement body."""
        if not isinstance(with_clause, dict):
            return ctes
        items = [_node(cte, "WithClause", "ctes") for cte in with_clause.get("ctes", ())]
        names = [str(cte.get("ctename", "")) for _, cte in items]
        body_scope = ctes.union(names)
        recursive = bool(with_clause.get("recursive"))
        for position, (_, cte) in enumerate(items):
            query = cte.get("ctequery")
            if isinstance(query, dict):
                scope = body_scope if recursive else ctes.union(names[:position])
                child, child_fields = _node(query, "CommonTableExpr", "ctequery")
                self._stack.append((child, child_fields, False, scope, True))
        return body_scope


# --- per statement --------------------------------------------------------------------------


@dataclass(slots=True)
class _Head:
    """What the root node alone says about a statement."""

    kind: CommandKind
    tag: str
    write: bool = False
    dangerous: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    prepared_name: str | None = None
    copy_direction: str | None = None
    copy_target: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _Draft:
    """A classified statement before its text span and fingerprint are known."""

    kind: CommandKind
    tag: str
    tables_read: frozenset[str] = frozenset()
    tables_written: frozenset[str] = frozenset()
    has_where: bool | None = None
    trivial_where: bool = False
    functions: frozenset[str] = frozenset()
    dangerous: tuple[str, ...] = ()
    writes_in_cte: bool = False
    read_only: bool = False
    prepared_name: str | None = None
    copy_direction: str | None = None
    copy_target: str | None = None
    error: str | None = None
    inner_kind: CommandKind | None = None
    side_effects: bool = False
    literal_sensitive: bool = False
    tables_copied: frozenset[str] = frozenset()

    def statement(self, text: str, start: int, end: int, fingerprint: str) -> Statement:
        return Statement(
            kind=self.kind,
            tag=self.tag,
            text=text,
            start=start,
            end=end,
            tables_read=self.tables_read,
            tables_written=self.tables_written,
            has_where=self.has_where,
            trivial_where=self.trivial_where,
            functions=self.functions,
            dangerous=self.dangerous,
            writes_in_cte=self.writes_in_cte,
            read_only=self.read_only,
            fingerprint=fingerprint,
            prepared_name=self.prepared_name,
            copy_direction=self.copy_direction,
            copy_target=self.copy_target,
            error=self.error,
            inner_kind=self.inner_kind,
            tables_copied=self.tables_copied,
        )


_K = CommandKind
# Root node types with a fixed kind and tag; the flag says relations under the root are written.
_FIXED_HEADS: Final[Mapping[str, tuple[CommandKind, str, bool]]] = {
    "InsertStmt": (_K.INSERT, "INSERT", False),
    "UpdateStmt": (_K.UPDATE, "UPDATE", False),
    "DeleteStmt": (_K.DELETE, "DELETE", False),
    "MergeStmt": (_K.MERGE, "MERGE", False),
    "TruncateStmt": (_K.TRUNCATE, "TRUNCATE TABLE", True),
    "CallStmt": (_K.CALL, "CALL", False),
    "ConstraintsSetStmt": (_K.SET, "SET CONSTRAINTS", False),
    "VariableShowStmt": (_K.SHOW, "SHOW", False),
    "DeclareCursorStmt": (_K.CURSOR, "DECLARE CURSOR", False),
    "ListenStmt": (_K.LISTEN, "LISTEN", False),
    "UnlistenStmt": (_K.LISTEN, "UNLISTEN", False),
    "NotifyStmt": (_K.NOTIFY, "NOTIFY", False),
    "ClusterStmt": (_K.MAINTENANCE, "CLUSTER", True),
    "ReindexStmt": (_K.MAINTENANCE, "REINDEX", True),
    "CheckPointStmt": (_K.MAINTENANCE, "CHECKPOINT", True),
    "RefreshMatViewStmt": (_K.MAINTENANCE, "REFRESH MATERIALIZED VIEW", True),
    "CreateRoleStmt": (_K.DCL, "CREATE ROLE", True),
    "AlterRoleStmt": (_K.DCL, "ALTER ROLE", True),
    "AlterRoleSetStmt": (_K.DCL, "ALTER ROLE", True),
    "DropRoleStmt": (_K.DCL, "DROP ROLE", True),
    "AlterDefaultPrivilegesStmt": (_K.DCL, "ALTER DEFAULT PRIVILEGES", True),
    "ReassignOwnedStmt": (_K.DCL, "REASSIGN OWNED", True),
    "DropOwnedStmt": (_K.DCL, "DROP OWNED", True),
    "CreateDomainStmt": (_K.DDL, "CREATE DOMAIN", True),
    "CreateSchemaStmt": (_K.DDL, "CREATE SCHEMA", True),
    "CreateStmt": (_K.DDL, "CREATE TABLE", True),
    "CreateTableSpaceStmt": (_K.DDL, "CREATE TABLESPACE", True),
    "DropTableSpaceStmt": (_K.DDL, "DROP TABLESPACE", True),
    "AlterTableSpaceOptionsStmt": (_K.DDL, "ALTER TABLESPACE", True),
    "CreateExtensionStmt": (_K.DDL, "CREATE EXTENSION", True),
    "AlterExtensionStmt": (_K.DDL, "ALTER EXTENSION", True),
    "AlterExtensionContentsStmt": (_K.DDL, "ALTER EXTENSION", True),
    "CreateFdwStmt": (_K.DDL, "CREATE FOREIGN DATA WRAPPER", True),
    "AlterFdwStmt": (_K.DDL, "ALTER FOREIGN DATA WRAPPER", True),
    "CreateForeignServerStmt": (_K.DDL, "CREATE SERVER", True),
    "AlterForeignServerStmt": (_K.DDL, "ALTER SERVER", True),
    "CreateUserMappingStmt": (_K.DDL, "CREATE USER MAPPING", True),
    "AlterUserMappingStmt": (_K.DDL, "ALTER USER MAPPING", True),
    "DropUserMappingStmt": (_K.DDL, "DROP USER MAPPING", True),
    "CreateForeignTableStmt": (_K.DDL, "CREATE FOREIGN TABLE", True),
    "ImportForeignSchemaStmt": (_K.DDL, "IMPORT FOREIGN SCHEMA", True),
    "CommentStmt": (_K.DDL, "COMMENT", True),
    "SecLabelStmt": (_K.DDL, "SECURITY LABEL", True),
    "AlterDomainStmt": (_K.DDL, "ALTER DOMAIN", True),
    "CompositeTypeStmt": (_K.DDL, "CREATE TYPE", True),
    "CreateEnumStmt": (_K.DDL, "CREATE TYPE", True),
    "CreateRangeStmt": (_K.DDL, "CREATE TYPE", True),
    "AlterEnumStmt": (_K.DDL, "ALTER TYPE", True),
    "ViewStmt": (_K.DDL, "CREATE VIEW", True),
    "IndexStmt": (_K.DDL, "CREATE INDEX", True),
    "RuleStmt": (_K.DDL, "CREATE RULE", True),
    "CreateSeqStmt": (_K.DDL, "CREATE SEQUENCE", True),
    "AlterSeqStmt": (_K.DDL, "ALTER SEQUENCE", True),
    "CreatedbStmt": (_K.DDL, "CREATE DATABASE", True),
    "AlterDatabaseStmt": (_K.DDL, "ALTER DATABASE", True),
    "AlterDatabaseRefreshCollStmt": (_K.DDL, "ALTER DATABASE", True),
    "AlterDatabaseSetStmt": (_K.DDL, "ALTER DATABASE", True),
    "DropdbStmt": (_K.DDL, "DROP DATABASE", True),
    "CreateTransformStmt": (_K.DDL, "CREATE TRANSFORM", True),
    "CreateTrigStmt": (_K.DDL, "CREATE TRIGGER", True),
    "CreateEventTrigStmt": (_K.DDL, "CREATE EVENT TRIGGER", True),
    "AlterEventTrigStmt": (_K.DDL, "ALTER EVENT TRIGGER", True),
    "CreatePLangStmt": (_K.DDL, "CREATE LANGUAGE", True),
    "CreateConversionStmt": (_K.DDL, "CREATE CONVERSION", True),
    "CreateCastStmt": (_K.DDL, "CREATE CAST", True),
    "CreateOpClassStmt": (_K.DDL, "CREATE OPERATOR CLASS", True),
    "CreateOpFamilyStmt": (_K.DDL, "CREATE OPERATOR FAMILY", True),
    "AlterOpFamilyStmt": (_K.DDL, "ALTER OPERATOR FAMILY", True),
    "AlterOperatorStmt": (_K.DDL, "ALTER OPERATOR", True),
    "AlterTypeStmt": (_K.DDL, "ALTER TYPE", True),
    "AlterTSDictionaryStmt": (_K.DDL, "ALTER TEXT SEARCH DICTIONARY", True),
    "AlterTSConfigurationStmt": (_K.DDL, "ALTER TEXT SEARCH CONFIGURATION", True),
    "CreatePolicyStmt": (_K.DDL, "CREATE POLICY", True),
    "AlterPolicyStmt": (_K.DDL, "ALTER POLICY", True),
    "CreateAmStmt": (_K.DDL, "CREATE ACCESS METHOD", True),
    "CreatePublicationStmt": (_K.DDL, "CREATE PUBLICATION", True),
    "AlterPublicationStmt": (_K.DDL, "ALTER PUBLICATION", True),
    "CreateSubscriptionStmt": (_K.DDL, "CREATE SUBSCRIPTION", True),
    "AlterSubscriptionStmt": (_K.DDL, "ALTER SUBSCRIPTION", True),
    "DropSubscriptionStmt": (_K.DDL, "DROP SUBSCRIPTION", True),
    "AlterCollationStmt": (_K.DDL, "ALTER COLLATION", True),
    "CreateStatsStmt": (_K.DDL, "CREATE STATISTICS", True),
    "AlterStatsStmt": (_K.DDL, "ALTER STATISTICS", True),
}
# Root node types whose ALTER tag comes from an ObjectType field.
_ALTER_HEADS: Final[Mapping[str, str]] = {
    "AlterTableStmt": "objtype",
    "AlterTableMoveAllStmt": "objtype",
    "AlterFunctionStmt": "objtype",
    "AlterObjectDependsStmt": "objectType",
    "AlterObjectSchemaStmt": "objectType",
    "AlterOwnerStmt": "objectType",
}
_TRANSACTION_TAGS: Final[Mapping[str, str]] = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


def _variable_head(typ: str, fields: Fields) -> _Head | None:
    """Heads whose tag or dangers depend on the root node's fields."""
    if typ == "SelectStmt":
        if fields.get("intoClause"):
            return _Head(_K.DDL, "SELECT INTO", write=True)
        return _Head(_K.SELECT, "SELECT")
    if typ == "VariableSetStmt":
        resets = fields.get("kind") in ("VAR_RESET", "VAR_RESET_ALL")
        # Resetting goes back to the gateway's own login role: never an escalation.
        danger = (_ROLE_CHANGE,) if fields.get("name") in _ROLE_SETTINGS and not resets else ()
        return _Head(_K.SET, "RESET" if resets else "SET", dangerous=danger)
    if typ == "TransactionStmt":
        tag = _TRANSACTION_TAGS.get(str(fields.get("kind")))
        return None if tag is None else _Head(_K.TRANSACTION, tag)
    if typ == "CopyStmt":
        return _copy_head(fields)
    if typ == "DeallocateStmt":
        name = fields.get("name")
        return _Head(_K.DEALLOCATE, "DEALLOCATE" if name else "DEALLOCATE ALL", prepared_name=name)
    if typ == "ExecuteStmt":
        return _Head(_K.EXECUTE, "EXECUTE", prepared_name=fields.get("name"))
    if typ == "FetchStmt":
        return _Head(_K.CURSOR, "MOVE" if fields.get("ismove") else "FETCH")
    if typ == "ClosePortalStmt":
        return _Head(_K.CURSOR, "CLOSE CURSOR" if fields.get("portalname") else "CLOSE CURSOR ALL")
    if typ == "LockStmt":
        return _Head(_K.LOCK, "LOCK TABLE", write=fields.get("mode") != 1)  # 1: ACCESS SHARE
    if typ == "VacuumStmt":
        return _Head(
            _K.MAINTENANCE, "VACUUM" if fields.get("is_vacuumcmd") else "ANALYZE", write=True
        )
    if typ == "DiscardStmt":
        # DISCARD ALL resets to the login role (what connection poolers send): not dangerous.
        target = str(fields.get("target", "DISCARD_ALL"))
        return _Head(_K.SESSION, target.replace("_", " "))
    if typ == "LoadStmt":
        return _Head(_K.SESSION, "LOAD", dangerous=(_LOAD,))
    if typ == "DoStmt":
        return _Head(_K.DO, "DO", dangerous=(_DO_BLOCK,))
    if typ == "AlterSystemStmt":
        return _Head(_K.DDL, "ALTER SYSTEM", write=True, dangerous=(_ALTER_SYSTEM,))
    if typ in ("GrantStmt", "GrantRoleStmt"):
        verb = "GRANT" if fields.get("is_grant") else "REVOKE"
        return _Head(_K.DCL, verb if typ == "GrantStmt" else f"{verb} ROLE", write=True)
    return _ddl_head(typ, fields)


def _ddl_head(typ: str, fields: Fields) -> _Head | None:
    if typ in _ALTER_HEADS:
        return _Head(_K.DDL, f"ALTER {_object_name(fields.get(_ALTER_HEADS[typ]))}", write=True)
    if typ == "DropStmt":
        return _drop_head(fields)
    if typ == "RenameStmt":
        renamed = fields.get("renameType")
        if renamed == "OBJECT_COLUMN":
            renamed = fields.get("relationType")
        return _Head(_K.DDL, f"ALTER {_object_name(renamed)}", write=True)
    if typ == "DefineStmt":
        return _Head(_K.DDL, f"CREATE {_object_name(fields.get('kind'))}", write=True)
    if typ == "CreateFunctionStmt":
        routine = "PROCEDURE" if fields.get("is_procedure") else "FUNCTION"
        return _Head(_K.DDL, f"CREATE {routine}", write=True)
    if typ == "CreateTableAsStmt":
        if fields.get("objtype") == "OBJECT_MATVIEW":
            return _Head(_K.DDL, "CREATE MATERIALIZED VIEW", write=True)
        tag = "SELECT INTO" if fields.get("is_select_into") else "CREATE TABLE AS"
        return _Head(_K.DDL, tag, write=True, prepared_name=_executed_name(fields))
    return None


def _executed_name(fields: Fields) -> str | None:
    """The prepared statement ``CREATE TABLE t AS EXECUTE name`` runs (None for a query).

    The tree alone does not say what that statement reads or writes: the relay decides
    the whole as :func:`executed_as` of it and the statement prepared under the name."""
    query = fields.get("query")
    if not isinstance(query, dict):
        return None
    typ, inner = _node(query, "CreateTableAsStmt", "query")
    return str(inner.get("name", "")) if typ == "ExecuteStmt" else None


def _drop_head(fields: Fields) -> _Head:
    removed = fields.get("removeType")
    written: tuple[str, ...] = ()
    if removed in _RELATION_OBJECTS:
        names = (
            ".".join(_string(part) for part in _list_items(obj))
            for obj in fields.get("objects", ())
        )
        written = tuple(name for name in names if name)
    return _Head(_K.DDL, f"DROP {_object_name(removed)}", write=True, written=written)


def _copy_head(fields: Fields) -> _Head:
    reading_in = bool(fields.get("is_from"))
    direction = "from" if reading_in else "to"
    danger: tuple[str, ...]
    if fields.get("is_program"):
        target, danger = "program", (_COPY_PROGRAM,)
    elif fields.get("filename") is not None:
        target, danger = "file", (_COPY_FILE,)
    else:
        target, danger = ("stdin" if reading_in else "stdout"), ()
    return _Head(
        _K.COPY,
        "COPY",
        write=reading_in,
        dangerous=danger,
        copy_direction=direction,
        copy_target=target,
    )


def _explain_analyzes(options: Iterable[Any]) -> tuple[bool, bool]:
    """Return (ANALYZE requested, the answer depended on an option value).

    PostgreSQL lets a later option override an earlier one; any ANALYZE not clearly off
    counts (an unreadable value too: PostgreSQL would refuse it, nothing is lost)."""
    analyze = sensitive = False
    for option in options:
        _, element = _node(option, "ExplainStmt", "options")
        if element.get("defname") != "analyze":
            continue
        arg = element.get("arg")
        if not isinstance(arg, dict):
            analyze = True
            continue
        sensitive = True
        arg_type, arg_fields = _node(arg, "DefElem", "arg")
        value: _Value = _OPAQUE
        if arg_type == "String":
            value = _to_bool(str(arg_fields.get("sval", "")))
        elif arg_type == "Integer":
            value = _to_bool(int(arg_fields.get("ival", 0)))
        elif arg_type == "Boolean":
            value = bool(arg_fields.get("boolval", False))
        analyze = analyze or value is not False
    return analyze, sensitive


class _Classifier:
    """Classifies one parsed statement (a JSON root node) into a :class:`_Draft`."""

    __slots__ = ("_rules",)

    def __init__(self, rules: _FunctionRules) -> None:
        self._rules = rules

    def draft(self, typ: str, fields: Fields) -> _Draft:
        if typ == "ExplainStmt":
            return self._explain(fields)
        if typ == "PrepareStmt":
            return self._prepare(fields)
        head = self._head(typ, fields)
        facts = _Facts()
        trivial = _Walker(self._rules, facts).run(typ, fields, head.write)
        kind = head.kind
        if kind in _WRITE_PRIORITY and facts.cte_writes:
            kind = max((kind, *facts.cte_writes), key=_WRITE_PRIORITY.__getitem__)
        written = frozenset(facts.written.union(head.written))
        dangerous = tuple(dict.fromkeys((*head.dangerous, *facts.dangerous)))
        no_where = kind in _NO_WHERE_KINDS and typ not in _QUERY_RUNNING_ROOTS
        has_where = None if no_where or not facts.wheres else all(facts.wheres)
        copies = facts.copies or typ == "CreateTableAsStmt" or head.copy_target in _SERVER_SIDE
        read_only = (
            kind in _READ_ONLY_KINDS
            and not written
            and not dangerous
            and not facts.side_effects
            and not facts.locking
        )
        return _Draft(
            kind=kind,
            tag=head.tag,
            tables_read=frozenset(facts.read),
            tables_written=written,
            has_where=has_where,
            trivial_where=has_where is not None and trivial,
            functions=frozenset(facts.functions),
            dangerous=dangerous,
            writes_in_cte=bool(facts.cte_writes),
            read_only=read_only,
            prepared_name=head.prepared_name,
            copy_direction=head.copy_direction,
            copy_target=head.copy_target,
            error=head.error,
            side_effects=facts.side_effects,
            literal_sensitive=facts.where_judge.literal_sensitive,
            tables_copied=frozenset(facts.read | facts.fed) if copies else frozenset(),
        )

    @staticmethod
    def _head(typ: str, fields: Fields) -> _Head:
        fixed = _FIXED_HEADS.get(typ)
        if fixed is not None:
            kind, tag, write = fixed
            return _Head(kind, tag, write=write)
        head = _variable_head(typ, fields)
        if head is not None:
            return head
        return _Head(_K.UNKNOWN, "", write=True, error=f"unsupported statement type {typ or '?'}")

    def _inner(self, fields: Fields) -> _Draft:
        query = fields.get("query")
        if not isinstance(query, dict):
            return _Draft(_K.UNKNOWN, "", error="statement without its query")
        return self.draft(*_node(query, "", "query"))

    def _explain(self, fields: Fields) -> _Draft:
        inner = self._inner(fields)
        analyze, sensitive = _explain_analyzes(fields.get("options", ()))
        inner.literal_sensitive = inner.literal_sensitive or sensitive
        if analyze or inner.kind is _K.UNKNOWN:
            inner.tag = "EXPLAIN"
            return inner
        return _Draft(
            kind=_K.EXPLAIN,
            tag="EXPLAIN",
            tables_read=inner.tables_read | inner.tables_written,
            functions=inner.functions,
            dangerous=inner.dangerous,
            read_only=not inner.dangerous and not inner.side_effects,
            inner_kind=inner.kind,
            side_effects=inner.side_effects,
            literal_sensitive=inner.literal_sensitive,
        )

    def _prepare(self, fields: Fields) -> _Draft:
        inner = self._inner(fields)
        if inner.kind is _K.UNKNOWN:
            return inner
        inner.inner_kind = inner.kind
        inner.kind = _K.PREPARE
        inner.tag = "PREPARE"
        inner.prepared_name = fields.get("name")
        inner.read_only = False
        return inner


# --- caches -------------------------------------------------------------------------------

_Key = TypeVar("_Key")
_Cached = TypeVar("_Cached")


class _LRU(Generic[_Key, _Cached]):
    """A bounded least-recently-used map. Safe to share between threads: a race costs a
    miss, never an exception."""

    __slots__ = ("_data", "_size")

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[_Key, _Cached] = OrderedDict()
        self._size = size

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: _Key) -> _Cached | None:
        # Taken out and put back at the end: most recently used, without an exception to
        # suppress when another thread evicted it meanwhile (a context manager costs more
        # than the look-up on this hot path).
        value = self._data.pop(key, None)
        if value is not None:
            self._data[key] = value
        return value

    def put(self, key: _Key, value: _Cached) -> None:
        if self._size <= 0:
            return
        data = self._data
        data.pop(key, None)
        data[key] = value  # (at the end: most recently used)
        while len(data) > self._size:
            try:
                data.popitem(last=False)
            except KeyError:
                break

    def clear(self) -> None:
        self._data.clear()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a :class:`PostgresClassifier` (hits of each cache, cold parses)."""

    exact_hits: int
    fingerprint_hits: int
    misses: int
    exact_entries: int
    fingerprint_entries: int


_ShapeKey = tuple[str, str]
_PARSER_FAILURES: Final = (ParseError, ValueError, TypeError, RecursionError, IndexError)


@dataclass(slots=True)
class _Counters:
    exact_hits: int = 0
    fingerprint_hits: int = 0
    misses: int = 0


class PostgresClassifier:
    """Classifies PostgreSQL query strings, with an exact-text and a fingerprint LRU cache.

    Strings longer than ``max_cached_length`` characters are classified every time and
    kept in no cache (bounds memory). ``dangerous_functions`` replaces
    :data:`DANGEROUS_FUNCTIONS` (extend it, do not shrink it, unless you mean to).
    """

    __slots__ = ("_classifier", "_counters", "_exact", "_shapes", "max_cached_length")

    def __init__(
        self,
        *,
        exact_cache_size: int = 4096,
        fingerprint_cache_size: int = 16384,
        max_cached_length: int = 8192,
        dangerous_functions: Mapping[str, str] = DANGEROUS_FUNCTIONS,
    ) -> None:
        self.max_cached_length = max_cached_length
        self._exact: _LRU[str, Classification] = _LRU(exact_cache_size)
        self._shapes: _LRU[_ShapeKey, Classification] = _LRU(fingerprint_cache_size)
        self._classifier = _Classifier(_FunctionRules(dangerous_functions))
        self._counters = _Counters()

    def classify(self, sql: str) -> Classification:
        """Classify every statement of ``sql``. Never raises for any input text."""
        cached = self._exact.get(sql)
        if cached is not None:
            self._counters.exact_hits += 1
            return cached
        cacheable = len(sql) <= self.max_cached_length
        problem = _unparsable(sql)
        if problem is not None:
            self._counters.misses += 1
            result = _failure(sql, problem)
        elif cacheable:
            result = self._classify_by_shape(sql)
        else:
            self._counters.misses += 1
            result = self._parse(sql, None)[0]
        if cacheable:
            self._exact.put(sql, result)
        return result

    @property
    def stats(self) -> CacheStats:
        counters = self._counters
        return CacheStats(
            exact_hits=counters.exact_hits,
            fingerprint_hits=counters.fingerprint_hits,
            misses=counters.misses,
            exact_entries=len(self._exact),
            fingerprint_entries=len(self._shapes),
        )

    def clear_caches(self) -> None:
        self._exact.clear()
        self._shapes.clear()

    def _classify_by_shape(self, sql: str) -> Classification:
        try:
            fingerprint = libpg_query.fingerprint(sql)
            key = (fingerprint, libpg_query.normalize(sql))
        except _PARSER_FAILURES as exc:
            self._counters.misses += 1
            return _failure(sql, _message(exc))
        template = self._shapes.get(key)
        if template is not None:
            rebased = _rebase(template, sql)
            if rebased is not None:
                self._counters.fingerprint_hits += 1
                return rebased
        self._counters.misses += 1
        result, reusable = self._parse(sql, fingerprint)
        if reusable:
            self._shapes.put(key, result)
        return result

    def _parse(self, sql: str, fingerprint: str | None) -> tuple[Classification, bool]:
        """Parse and walk; also say whether the result may be reused for the same shape.

        ``fingerprint`` is the whole string's, if already known."""
        try:
            tree = json.loads(libpg_query.parse_sql_json(sql))
            spans = _spans(sql)
        except RecursionError:
            return _failure(sql, "statement is nested too deeply to classify"), False
        except _PARSER_FAILURES as exc:
            return _failure(sql, _message(exc)), False
        raw_statements = tree.get("stmts", [])
        if not raw_statements:
            return _empty(fingerprint or _fingerprint(sql)), True
        if len(spans) != len(raw_statements):
            return _failure(sql, "could not locate the statements in the text"), False
        if len(spans) > 1:
            fingerprint = None  # each statement gets its own
        statements: list[Statement] = []
        reusable = True
        for raw, span in zip(raw_statements, spans, strict=True):
            draft = self._classifier.draft(*_node(raw.get("stmt", {}), "RawStmt", "stmt"))
            text = sql[span]
            own_fingerprint = fingerprint or _fingerprint(text)
            statements.append(draft.statement(text, span.start, span.stop, own_fingerprint))
            reusable = reusable and not draft.literal_sensitive and draft.kind is not _K.UNKNOWN
        errors = [s.error for s in statements if s.error]
        unknown = any(s.kind is _K.UNKNOWN for s in statements)
        return Classification(tuple(statements), unknown, errors[0] if errors else None), reusable


_default_classifier = PostgresClassifier()


def classify_postgres(sql: str) -> Classification:
    """Classify ``sql`` with a process-wide default :class:`PostgresClassifier`."""
    return _default_classifier.classify(sql)


def prepared_query(prepare_text: str) -> str | None:
    """The statement a ``PREPARE name [(types)] AS statement`` prepares, as text.

    Found with the real scanner (the first ``AS`` outside parentheses), so comments and
    quoted names cannot mislead it; None if the text is not such a PREPARE.
    """
    try:
        raw = prepare_text.encode("utf-8")
        tokens = libpg_query.scan(prepare_text)
    except (ParseError, UnicodeEncodeError):
        return None
    if not tokens or tokens[0].name != "PREPARE":
        return None
    depth = 0
    for token in tokens[1:]:
        if token.name == "ASCII_40":
            depth += 1
        elif token.name == "ASCII_41":
            depth -= 1
        elif token.name == "AS" and depth == 0:
            # Token offsets are byte offsets into the UTF-8 text, ``end`` inclusive.
            return raw[token.end + 1 :].decode("utf-8").strip()
    return None


def executed_as(outer: Statement, prepared: Statement) -> Statement:
    """What a statement that runs a prepared statement by name really does.

    ``outer`` is ``EXECUTE name`` (also under EXPLAIN ANALYZE, which runs it) or
    ``CREATE TABLE t AS EXECUTE name``; ``prepared`` is the statement prepared under that
    name. Both parts count, as the parts of one statement do: tables, functions and
    dangers of both (an EXECUTE's parameters may call functions), the prepared
    statement's WHERE facts and data-modifying CTEs. An EXECUTE is the prepared statement
    run: its kind, tag and text (policy reasons name it). CREATE TABLE AS stays
    DDL writing its new table, with the prepared kind as ``inner_kind``. A prepared
    statement the classifier did not understand makes the whole unknown (fail closed).
    The result is located where ``outer`` is.
    """
    runs_itself = outer.kind is _K.EXECUTE
    kind = prepared.kind if runs_itself or prepared.kind is _K.UNKNOWN else outer.kind
    wheres = [flag for flag in (outer.has_where, prepared.has_where) if flag is not None]
    return Statement(
        kind=kind,
        tag=prepared.tag if runs_itself else outer.tag,
        text=prepared.text if runs_itself else outer.text,
        start=outer.start,
        end=outer.end,
        tables_read=outer.tables_read | prepared.tables_read,
        tables_written=outer.tables_written | prepared.tables_written,
        has_where=all(wheres) if wheres else None,
        trivial_where=outer.trivial_where or prepared.trivial_where,
        functions=outer.functions | prepared.functions,
        dangerous=tuple(dict.fromkeys((*outer.dangerous, *prepared.dangerous))),
        writes_in_cte=outer.writes_in_cte or prepared.writes_in_cte,
        read_only=runs_itself and prepared.read_only and not outer.functions,
        fingerprint=prepared.fingerprint if runs_itself else outer.fingerprint,
        copy_direction=prepared.copy_direction,
        copy_target=prepared.copy_target,
        error=outer.error or prepared.error,
        inner_kind=prepared.inner_kind if runs_itself else prepared.kind,
        # CREATE TABLE AS EXECUTE writes the prepared statement's result: all it reads.
        tables_copied=outer.tables_copied
        | prepared.tables_copied
        | (frozenset() if runs_itself else prepared.tables_read),
    )


# --- helpers for the classifier -----------------------------------------------------------


def _unparsable(sql: str) -> str | None:
    """Text that libpg_query would misread: it stops at NUL, and needs valid UTF-8."""
    if "\x00" in sql:
        return "query text contains a NUL character"
    if not sql.isascii():
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            return "query text is not valid Unicode"
    return None


_SQL_WHITESPACE: Final = frozenset(" \t\n\r\f\v")


def _spans(sql: str) -> tuple[slice, ...]:
    """Where each statement is in ``sql``: libpg_query's split, with its Python ``strip()``
    undone for characters PostgreSQL does not take for whitespace (``SELECT 1 \u3000``
    names a column ``\u3000``; a comment may end in ``\x1f``)."""
    spans = libpg_query.split(sql, only_slices=True)
    return tuple([_widened(sql, span) for span in spans])


def _widened(sql: str, span: slice) -> slice:
    """Take back the stripped tail up to its last character that is not SQL whitespace
    (the stripped run ends at the statement's ``;`` or at the end of the text)."""
    stop: int = span.stop
    end = position = stop
    while position < len(sql) and sql[position].isspace():
        position += 1
        if sql[position - 1] not in _SQL_WHITESPACE:
            end = position
    return span if end == stop else slice(span.start, end)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _fingerprint(text: str) -> str:
    try:
        return libpg_query.fingerprint(text)
    except _PARSER_FAILURES:
        return ""


def _failure(sql: str, message: str) -> Classification:
    stripped = sql.strip()
    start = sql.find(stripped) if stripped else 0
    statement = Statement(
        kind=_K.UNKNOWN,
        tag="",
        text=stripped,
        start=start,
        end=start + len(stripped),
        error=message,
    )
    return Classification((statement,), unknown=True, error=message)


def _empty(fingerprint: str) -> Classification:
    statement = Statement(
        kind=_K.EMPTY, tag="", text="", start=0, end=0, read_only=True, fingerprint=fingerprint
    )
    return Classification((statement,))


def _rebase(template: Classification, sql: str) -> Classification | None:
    """The cached classification of a same-shape string, with spans taken from ``sql``."""
    statements = template.statements
    if len(statements) == 1 and statements[0].kind is _K.EMPTY:
        return template
    try:
        spans = _spans(sql)
    except _PARSER_FAILURES:
        return None
    if len(spans) != len(statements):
        return None
    if len(spans) == 1:  # the hot path: one statement, no generator
        return Classification((_with_span(statements[0], sql, spans[0]),))
    return Classification(
        tuple([_with_span(s, sql, span) for s, span in zip(statements, spans, strict=True)])
    )


def _with_span(statement: Statement, sql: str, span: slice) -> Statement:
    """A copy of ``statement`` located at ``span`` of ``sql`` (positional: hot path)."""
    s = statement
    return Statement(
        s.kind,
        s.tag,
        sql[span],
        span.start,
        span.stop,
        s.tables_read,
        s.tables_written,
        s.has_where,
        s.trivial_where,
        s.functions,
        s.dangerous,
        s.writes_in_cte,
        s.read_only,
        s.fingerprint,
        s.prepared_name,
        s.copy_direction,
        s.copy_target,
        s.error,
        s.inner_kind,
        s.tables_copied,
    )
