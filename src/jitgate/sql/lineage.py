"""Result-column lineage of PostgreSQL statements: which columns each output is derived from.

Masking needs to know, for every column of a result, which table columns its values come
from — ``SELECT upper(ssn) AS s FROM customers`` is derived from ``customers.ssn`` although
its name is ``s``. :func:`result_lineage` answers that from the statement's text (pglast),
without a catalog: it says what it can and marks what it cannot see.

Theory of operation
-------------------
A statement's result is a sequence of :class:`Output` stretches, in order:

* a single column (``width == 1``) with the set of :class:`Source` columns its value is
  computed from (every column reference inside the expression, through subqueries, CTEs,
  joins, ``CASE`` conditions, casts and operators);
* a star over a plain relation (``relation`` set, ``width`` unknown): one column per column
  of that relation, which only the catalog knows (a view, a table, its column order);
* a stretch of unknown width (``width`` ``None``, no ``relation``): a star over a join with
  ``USING``/``NATURAL`` or over a set-returning function. All its columns share its sources.

``opaque`` marks values the text does not explain: a function the classifier does not know
as a built-in (a user-defined function can read any table), a function in ``FROM`` that is
not a known built-in, a construct the analysis does not model. Callers fail closed on
opaque outputs. A :class:`Source` whose relation is ``()`` names a column whose table is not
known; ``column == "*"`` is a whole row (``row_to_json(c)``, ``SELECT c FROM customers c``).

Predicates are not lineage: ``WHERE``, ``JOIN … ON``, ``GROUP BY``, ``ORDER BY``, window
and ``FILTER`` clauses decide which rows come back, not what a value is. ``count(…)``
contributes no source (its value is a number of rows).

``written`` is the lineage of the values the statement writes into tables or a server
file, for all its writes together: the rows of ``INSERT … SELECT``/``VALUES`` (also in a
CTE), the ``SET`` values of ``UPDATE`` and ``ON CONFLICT DO UPDATE``, the ``UPDATE``/
``INSERT`` actions of ``MERGE``, the query of ``CREATE TABLE AS``/``SELECT INTO``/
``CREATE MATERIALIZED VIEW`` and the rows of ``COPY … TO`` a file or program. ``()`` when
it writes no computed values; ``None`` when the analysis cannot tell (fail closed).
A write whose query the analysis does not model is one opaque output.

``relations`` lists every relation name the statement reads, as written (name parts),
which the caller resolves through the catalog. ``copy`` holds the options of a
``COPY … TO``. ``outputs`` is ``None`` for statements whose rows this module does not
analyse (``FETCH``, ``EXECUTE``, ``CALL``, anything unknown): every column of such a result
is of unknown origin.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

from pglast import parser as libpg_query

__all__ = [
    "BUILTIN_FUNCTIONS",
    "CopyOptions",
    "Lineage",
    "Output",
    "Source",
    "result_lineage",
]

Fields = dict[str, Any]
Name = tuple[str, ...]

_MAX_DEPTH: Final = 120


@dataclass(frozen=True, slots=True)
class Source:
    """A table column a value is derived from; ``position`` (1-based) when only that is known."""

    relation: Name
    column: str
    position: int = 0


@dataclass(frozen=True, slots=True)
class Output:
    """A stretch of result columns (see the module docstring)."""

    name: str | None
    sources: frozenset[Source] = frozenset()
    opaque: bool = False
    relation: Name | None = None
    width: int | None = 1
    direct: bool = False  # a plain column reference: the value is the source column's


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How ``COPY … TO`` writes rows (PostgreSQL's defaults for text and CSV)."""

    format: str = "text"
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    header: bool = False
    encoding: str | None = None
    to_client: bool = True  # TO STDOUT (not a server file or program)


@dataclass(frozen=True, slots=True)
class Lineage:
    outputs: tuple[Output, ...] | None
    relations: frozenset[Name] = frozenset()
    copy: CopyOptions | None = None
    error: str | None = None
    written: tuple[Output, ...] | None = None

    @property
    def opaque(self) -> bool:
        return self.outputs is None or any(output.opaque for output in self.outputs)


UNKNOWN: Final = Lineage(None)
NO_ROWS: Final = Lineage((), written=())
#: A written stretch the analysis does not model: every column of it is of unknown origin.
_UNTRACED: Final = Output(None, opaque=True, width=None)

#: Built-in functions whose result depends only on their arguments (and constants, the
#: clock, the session). A call of any other function is opaque: it may read tables itself.
BUILTIN_FUNCTIONS: Final = frozenset(
    {
        "abs", "acos", "acosd", "acosh", "age", "any_value", "array_agg", "array_append",
        "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_position",
        "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_json",
        "array_to_string", "array_upper", "ascii", "asin", "asind", "asinh", "atan", "atan2",
        "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count", "bit_length", "bit_or",
        "bit_xor", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "ceil", "ceiling",
        "char_length", "character_length", "chr", "clock_timestamp", "concat", "concat_ws",
        "convert", "convert_from", "convert_to", "cos", "cosd", "cosh", "cot", "cotd", "count",
        "cume_dist", "current_database", "current_schema", "current_schemas", "current_setting",
        "date_add", "date_bin", "date_part", "date_subtract", "date_trunc", "decode", "degrees",
        "dense_rank", "div", "encode", "every", "exp", "extract", "factorial", "first_value",
        "floor", "format", "format_type", "gcd", "gen_random_uuid", "generate_series",
        "generate_subscripts", "get_bit", "get_byte", "greatest", "initcap", "isfinite", "json_agg",
        "json_array_elements", "json_array_elements_text", "json_array_length", "json_build_array",
        "json_build_object", "json_each", "json_each_text", "json_extract_path",
        "json_extract_path_text", "json_object", "json_object_agg", "json_object_keys",
        "json_populate_record", "json_populate_recordset", "json_strip_nulls", "json_to_record",
        "json_to_recordset", "json_typeof", "jsonb_agg", "jsonb_array_elements",
        "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
        "jsonb_build_object", "jsonb_each", "jsonb_each_text", "jsonb_extract_path",
        "jsonb_extract_path_text", "jsonb_insert", "jsonb_object", "jsonb_object_agg",
        "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query",
        "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_populate_record",
        "jsonb_populate_recordset", "jsonb_pretty", "jsonb_set", "jsonb_set_lax",
        "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset", "jsonb_typeof",
        "justify_days", "justify_hours", "justify_interval", "lag", "last_value", "lcm", "lead",
        "least", "left", "length", "ln", "log", "log10", "lower", "lpad", "ltrim", "make_date",
        "make_interval", "make_time", "make_timestamp", "make_timestamptz", "max", "md5", "min",
        "min_scale", "mod", "mode", "normalize", "now", "nth_value", "ntile", "num_nonnulls",
        "num_nulls", "octet_length", "overlay", "percent_rank", "percentile_cont",
        "percentile_disc", "pg_typeof", "pi", "plainto_tsquery", "position", "pow", "power",
        "quote_ident", "quote_literal", "quote_nullable", "radians", "random", "rank",
        "regexp_count", "regexp_instr", "regexp_like", "regexp_match", "regexp_matches",
        "regexp_replace", "regexp_split_to_array", "regexp_split_to_table", "regexp_substr",
        "repeat", "replace", "reverse", "right", "round", "row_number", "row_to_json", "rpad",
        "rtrim", "scale", "sha224", "sha256", "sha384", "sha512", "sign", "sin", "sind", "sinh",
        "split_part", "sqrt", "starts_with", "statement_timestamp", "stddev", "stddev_pop",
        "stddev_samp", "string_agg", "string_to_array", "string_to_table", "strpos", "substr",
        "substring", "sum", "tan", "tand", "tanh", "timeofday", "timezone", "to_char", "to_date",
        "to_hex", "to_json", "to_jsonb", "to_number", "to_timestamp", "to_tsquery", "to_tsvector",
        "transaction_timestamp", "translate", "trim_array", "trim_scale", "trunc", "ts_headline",
        "ts_rank", "ts_rank_cd", "unistr", "unnest", "upper", "var_pop", "var_samp", "variance",
        "version", "websearch_to_tsquery", "width_bucket",
    }
)  # fmt: skip

#: Aggregates whose value is a number of rows, not derived from their arguments' values.
_COUNTING: Final = frozenset({"count"})

_TEXT_COPY: Final = CopyOptions()
_CSV_COPY: Final = CopyOptions(format="csv", delimiter=",", null="")


class _Opaque(Exception):
    """The statement uses something the analysis does not model: its rows are unknown."""


# --- JSON helpers ---------------------------------------------------------------------------


def _node(value: Any) -> tuple[str, Fields]:
    if isinstance(value, dict) and len(value) == 1:
        for name, inner in value.items():
            if "A" <= name[:1] <= "Z" and isinstance(inner, dict):
                return name, inner
    return "", value if isinstance(value, dict) else {}


def _sval(value: Any) -> str:
    typ, fields = _node(value)
    if typ == "String":
        return str(fields.get("sval", ""))
    return ""


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(_sval(v) for v in values) if isinstance(values, list) else ()


def _relation(fields: Fields) -> Name:
    return tuple(
        str(fields[key]) for key in ("catalogname", "schemaname", "relname") if fields.get(key)
    )


def _defelem_text(arg: Any) -> str | None:
    typ, fields = _node(arg)
    if typ == "String":
        return str(fields.get("sval", ""))
    if typ == "Integer":
        return str(fields.get("ival", 0))
    if typ == "Boolean":
        return "true" if fields.get("boolval") else "false"
    return None


def _truthy(arg: Any) -> bool:
    if arg is None or arg == {}:
        return True
    text = _defelem_text(arg)
    return text is None or text.lower() not in ("false", "off", "0", "no")


# --- scopes ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """A FROM item: a relation, a subquery or CTE, a function, or a join of items."""

    name: str | None
    relation: Name | None = None
    outputs: tuple[Output, ...] | None = None
    colnames: tuple[str, ...] = ()
    sources: frozenset[Source] = frozenset()
    opaque: bool = False
    width: int | None = None
    children: tuple[_Item, ...] = ()
    merged: bool = False  # a join with USING / NATURAL (its star has a different shape)

    def names(self) -> Iterable[str]:
        if self.name is not None:
            yield self.name

    def whole_row(self) -> tuple[frozenset[Source], bool]:
        if self.relation is not None:
            return frozenset({Source(self.relation, "*")}), False
        if self.children:
            sources: set[Source] = set()
            opaque = False
            for child in self.children:
                more, hidden = child.whole_row()
                sources |= more
                opaque = opaque or hidden
            return frozenset(sources), opaque
        if self.outputs is not None:
            return _union(self.outputs)
        return self.sources, self.opaque

    def star(self) -> list[Output]:
        if self.relation is not None:
            return [Output(None, relation=self.relation, width=None)]
        if self.children:
            if self.merged:
                sources, opaque = self.whole_row()
                return [Output(None, sources, opaque, width=None)]
            return [output for child in self.children for output in child.star()]
        if self.outputs is not None:
            return [
                _renamed(output, self.colnames[i] if i < len(self.colnames) else None)
                for i, output in enumerate(self.outputs)
            ]
        return [Output(None, self.sources, self.opaque, width=self.width)]

    def column(self, name: str) -> tuple[frozenset[Source], bool, bool] | None:
        """Sources of column ``name`` of this item (with opaque, direct), or None: not here."""
        if self.relation is not None:
            if name in self.colnames:
                position = self.colnames.index(name) + 1
                return frozenset({Source(self.relation, "", position)}), False, True
            return frozenset({Source(self.relation, name)}), False, True
        if self.children:
            found = [c for c in (child.column(name) for child in self.children) if c]
            if not found:
                return None
            sources = frozenset().union(*(f[0] for f in found))
            return sources, any(f[1] for f in found), len(found) == 1 and found[0][2]
        if self.outputs is not None:
            return _output_column(self.outputs, self.colnames, name)
        if self.colnames and name not in self.colnames:
            return None
        return self.sources, self.opaque, False


def _renamed(output: Output, name: str | None) -> Output:
    if name is None or output.width != 1:
        return output
    return Output(name, output.sources, output.opaque, output.relation, 1, output.direct)


def _output_column(
    outputs: Sequence[Output], colnames: Sequence[str], name: str
) -> tuple[frozenset[Source], bool, bool] | None:
    fixed = all(output.width == 1 for output in outputs)
    if fixed:
        for index, output in enumerate(outputs):
            label = colnames[index] if index < len(colnames) else output.name
            if label == name:
                return output.sources, output.opaque, output.direct
        return None
    # Stars inside: the column may come from any of them (or be one of the named ones).
    sources: set[Source] = set()
    opaque = False
    matched = False
    for output in outputs:
        if output.width == 1 and output.name == name:
            sources |= output.sources
            opaque = opaque or output.opaque
            matched = True
        elif output.relation is not None:
            sources.add(Source(output.relation, name))
            matched = True
        elif output.width is None:
            sources |= output.sources
            opaque = opaque or output.opaque
            matched = True
    return (frozenset(sources), opaque, False) if matched else None


def _union(outputs: Iterable[Output]) -> tuple[frozenset[Source], bool]:
    sources: set[Source] = set()
    opaque = False
    for output in outputs:
        sources |= output.sources
        if output.relation is not None:
            sources.add(Source(output.relation, "*"))
        opaque = opaque or output.opaque
    return frozenset(sources), opaque


@dataclass(slots=True)
class _Scope:
    items: list[_Item] = field(default_factory=list)
    parent: _Scope | None = None
    ctes: dict[str, tuple[Output, ...]] = field(default_factory=dict)

    def cte(self, name: str) -> tuple[Output, ...] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None


# --- the analysis -----------------------------------------------------------------------------


class _Analysis:
    def __init__(self) -> None:
        self.relations: set[Name] = set()
        self.written: list[Output] = []

    # statements

    def statement(self, typ: str, fields: Fields) -> Lineage:
        if typ == "SelectStmt":
            if fields.get("intoClause"):
                self.written.extend(self.select(fields, None))
                return self._lineage(())
            return self._lineage(self.select(fields, None))
        if typ == "CreateTableAsStmt":
            try:
                self.create_table_as(fields)
            except _Opaque:
                self.written.append(_UNTRACED)
            return self._lineage(())
        if typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            return self._lineage(self.modify(typ, fields, None))
        if typ == "CopyStmt":
            return self.copy(fields)
        if typ in ("DeclareCursorStmt", "PrepareStmt", "ExplainStmt"):
            inner = fields.get("query")
            if isinstance(inner, dict):
                try:
                    self.statement(*_node(inner))
                except _Opaque:
                    self.written.append(_UNTRACED)
            if typ == "ExplainStmt":
                return self._lineage((Output("QUERY PLAN", width=None),))
            return self._lineage(())
        if typ in ("VariableShowStmt", "TransactionStmt", "VariableSetStmt"):
            return self._lineage((Output(None, width=None),))
        return UNKNOWN

    def _lineage(self, outputs: Sequence[Output]) -> Lineage:
        return Lineage(tuple(outputs), frozenset(self.relations), written=tuple(self.written))

    def create_table_as(self, fields: Fields) -> None:
        """CREATE TABLE AS, SELECT INTO (PL/pgSQL's spelling), CREATE MATERIALIZED VIEW."""
        into = fields.get("into")
        if isinstance(into, dict) and into.get("skipData"):
            return  # WITH NO DATA: the table is created empty
        typ, query = _node(fields.get("query"))
        if typ != "SelectStmt":  # AS EXECUTE name: what runs is not in this text
            raise _Opaque(f"CREATE TABLE AS of a {typ or 'statement'}")
        self.written.extend(self.select(query, None))

    def select(self, fields: Fields, parent: _Scope | None, depth: int = 0) -> list[Output]:
        if depth > _MAX_DEPTH:
            raise _Opaque("statement nested too deeply")
        scope = _Scope(parent=parent)
        self.with_clause(fields.get("withClause"), scope, depth)
        op = fields.get("op", "SETOP_NONE")
        if op not in (None, "SETOP_NONE"):
            left = self.select(_node(fields.get("larg"))[1] or {}, scope, depth + 1)
            right = self.select(_node(fields.get("rarg"))[1] or {}, scope, depth + 1)
            return _positional_union([left, right])
        values = fields.get("valuesLists")
        if values:
            rows = [
                [self.expression_output(f"column{i + 1}", item, scope, depth) for i, item in
                 enumerate(_node(row)[1].get("items", []))]
                for row in values
            ]  # fmt: skip
            return _positional_union(rows)
        for item in fields.get("fromClause") or ():
            scope.items.append(self.from_item(item, scope, depth + 1))
        return self.target_list(fields.get("targetList") or (), scope, depth)

    def modify(
        self, typ: str, fields: Fields, parent: _Scope | None, depth: int = 0
    ) -> list[Output]:
        scope = _Scope(parent=parent)
        self.with_clause(fields.get("withClause"), scope, depth)
        relation = fields.get("relation")
        if isinstance(relation, dict):
            _, rel_fields = _node(relation)
            scope.items.append(self.range_var(rel_fields, scope))
        for key in ("fromClause", "usingClause"):
            for item in fields.get(key) or ():
                scope.items.append(self.from_item(item, scope, depth + 1))
        source = fields.get("sourceRelation")
        if isinstance(source, dict):
            scope.items.append(self.from_item(source, scope, depth + 1))
        select = fields.get("selectStmt")
        if isinstance(select, dict):
            try:
                self.written.extend(self.select(_node(select)[1], scope, depth + 1))
            except _Opaque:
                self.written.append(_UNTRACED)
        self.written_values(typ, fields, scope, depth)
        returning = fields.get("returningList")
        clause = fields.get("returningClause")
        if isinstance(clause, dict):
            returning = clause.get("exprs")
        return self.target_list(returning or (), scope, depth)

    def written_values(self, typ: str, fields: Fields, scope: _Scope, depth: int) -> None:
        """The values an UPDATE's SET, an upsert's DO UPDATE SET or MERGE's actions write
        (a ``SET (a, b) = (SELECT …)`` counts as one value from all the subquery reads)."""
        targets: list[Any] = []
        if typ == "UpdateStmt":
            targets.extend(fields.get("targetList") or ())
        conflict = fields.get("onConflictClause")
        if isinstance(conflict, dict):
            targets.extend(_node(conflict)[1].get("targetList") or ())
        for raw in fields.get("mergeWhenClauses") or ():
            _, clause = _node(raw)
            targets.extend(clause.get("targetList") or ())
            targets.extend(clause.get("values") or ())
        for raw in targets:
            typ_, target = _node(raw)
            value = target.get("val") if typ_ == "ResTarget" else raw
            if value is not None:
                self.written.append(self.expression_output(None, value, scope, depth))

    def copy(self, fields: Fields) -> Lineage:
        if fields.get("is_from"):
            return NO_ROWS
        options = _copy_options(fields)
        try:
            outputs: tuple[Output, ...] | None = tuple(self.copy_outputs(fields))
        except (_Opaque, RecursionError):
            outputs = None
        if not options.to_client:  # into a server file or program: rows written, not sent
            self.written.extend(outputs if outputs is not None else (_UNTRACED,))
        return Lineage(outputs, frozenset(self.relations), options, written=tuple(self.written))

    def copy_outputs(self, fields: Fields) -> list[Output]:
        query = fields.get("query")
        if isinstance(query, dict):
            typ, query_fields = _node(query)
            if typ == "SelectStmt":
                return self.select(query_fields, None)
            if typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                return self.modify(typ, query_fields, None)
            raise _Opaque(f"COPY of a {typ or 'statement'}")
        relation = _relation(_node(fields.get("relation"))[1] or {})
        if not relation:
            raise _Opaque("COPY without a relation")
        self.relations.add(relation)
        columns = _strings(fields.get("attlist"))
        if columns:
            return [Output(c, frozenset({Source(relation, c)}), direct=True) for c in columns]
        return [Output(None, relation=relation, width=None)]

    def with_clause(self, clause: Any, scope: _Scope, depth: int) -> None:
        if not isinstance(clause, dict):
            return
        recursive = bool(clause.get("recursive"))
        for raw in clause.get("ctes") or ():
            _, cte = _node(raw)
            name = str(cte.get("ctename", ""))
            query = cte.get("ctequery")
            typ, query_fields = _node(query)
            if recursive:
                scope.ctes[name] = (Output(None, width=None),)  # self references: see below
            if typ == "SelectStmt":
                outputs = self.select(query_fields, scope, depth + 1)
            elif typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                outputs = self.modify(typ, query_fields, scope, depth + 1)
            else:
                raise _Opaque(f"WITH item of type {typ or '?'}")
            colnames = _strings(cte.get("aliascolnames"))
            outputs = [
                _renamed(output, colnames[i] if i < len(colnames) else None)
                for i, output in enumerate(outputs)
            ]
            if recursive:
                # Each round may move values between columns: every column gets them all.
                sources, opaque = _union(outputs)
                outputs = [
                    Output(o.name, sources, opaque, None, o.width) if o.width == 1
                    else Output(None, sources, opaque, width=None)
                    for o in outputs
                ]  # fmt: skip
            scope.ctes[name] = tuple(outputs)

    # FROM

    def from_item(self, raw: Any, scope: _Scope, depth: int) -> _Item:
        if depth > _MAX_DEPTH:
            raise _Opaque("statement nested too deeply")
        typ, fields = _node(raw)
        if typ == "RangeVar" or (not typ and "relname" in fields):
            return self.range_var(fields, scope)
        alias = fields.get("alias") if isinstance(fields.get("alias"), dict) else {}
        name = alias.get("aliasname") if alias else None
        colnames = _strings(alias.get("colnames")) if alias else ()
        if typ == "RangeSubselect":
            sub_typ, sub = _node(fields.get("subquery"))
            if sub_typ != "SelectStmt":
                raise _Opaque(f"subquery of type {sub_typ or '?'}")
            outputs = self.select(sub, scope, depth + 1)
            return _Item(name, outputs=tuple(outputs), colnames=colnames)
        if typ == "RangeFunction":
            sources: set[Source] = set()
            opaque = False
            for entry in fields.get("functions") or ():
                items = _node(entry)[1].get("items") or []
                if items:
                    more, hidden = self.expression(items[0], scope, depth + 1)
                    sources |= more
                    opaque = opaque or hidden
            width = len(fields.get("coldeflist") or ()) or None
            return _Item(name, colnames=colnames, sources=frozenset(sources), opaque=opaque,
                         width=width)  # fmt: skip
        if typ == "JoinExpr":
            left = self.from_item(fields.get("larg"), scope, depth + 1)
            right = self.from_item(fields.get("rarg"), scope, depth + 1)
            merged = bool(fields.get("usingClause") or fields.get("isNatural"))
            join_alias = fields.get("alias") or fields.get("join_using_alias")
            join_name = join_alias.get("aliasname") if isinstance(join_alias, dict) else None
            return _Item(join_name, children=(left, right), merged=merged)
        if typ == "RangeTableSample":
            return self.from_item(fields.get("relation"), scope, depth + 1)
        if typ in ("RangeTableFunc", "JsonTable"):
            sources_, opaque_ = self.expression(raw, scope, depth + 1)
            return _Item(name, colnames=colnames, sources=sources_, opaque=opaque_)
        return _Item(name, opaque=True)

    def range_var(self, fields: Fields, scope: _Scope) -> _Item:
        relation = _relation(fields)
        alias = fields.get("alias") if isinstance(fields.get("alias"), dict) else {}
        name = alias.get("aliasname") if alias else None
        colnames = _strings(alias.get("colnames")) if alias else ()
        if len(relation) == 1:
            cte = scope.cte(relation[0])
            if cte is not None:
                return _Item(name or relation[0], outputs=cte, colnames=colnames)
        self.relations.add(relation)
        return _Item(name or (relation[-1] if relation else None), relation=relation,
                     colnames=colnames)  # fmt: skip

    # targets and expressions

    def target_list(self, targets: Iterable[Any], scope: _Scope, depth: int) -> list[Output]:
        outputs: list[Output] = []
        for raw in targets:
            _, target = _node(raw)
            value = target.get("val")
            typ, ref = _node(value)
            if typ == "ColumnRef" and ref.get("fields") and _node(ref["fields"][-1])[0] == "A_Star":
                outputs.extend(self.star(_strings(ref["fields"][:-1]), scope))
                continue
            name = target.get("name") or _default_name(value)
            outputs.append(self.expression_output(name, value, scope, depth))
        return outputs

    def expression_output(self, name: str | None, value: Any, scope: _Scope, depth: int) -> Output:
        sources, opaque = self.expression(value, scope, depth + 1)
        typ, _ = _node(value)
        direct = typ == "ColumnRef" and len(sources) == 1 and not opaque
        return Output(name, sources, opaque, direct=direct)

    def star(self, qualifier: Name, scope: _Scope) -> list[Output]:
        if not qualifier:
            return [output for item in scope.items for output in item.star()]
        item = _find_item(scope, qualifier)
        if item is None:
            return [Output(None, frozenset({Source(qualifier, "*")}), True, width=None)]
        return item.star()

    def expression(self, value: Any, scope: _Scope, depth: int) -> tuple[frozenset[Source], bool]:
        sources: set[Source] = set()
        opaque = self._walk(value, scope, depth, sources)
        return frozenset(sources), opaque

    def _walk(self, value: Any, scope: _Scope, depth: int, sources: set[Source]) -> bool:
        if depth > _MAX_DEPTH:
            return True
        if isinstance(value, list):
            opaque = False
            for item in value:
                opaque = self._walk(item, scope, depth + 1, sources) or opaque
            return opaque
        if not isinstance(value, dict):
            return False
        typ, fields = _node(value)
        if typ == "ColumnRef":
            found, opaque = self.column_ref(fields, scope)
            sources |= found
            return opaque
        if typ == "FuncCall":
            parts = _strings(fields.get("funcname"))
            bare = parts[-1].lower() if parts else ""
            known = bare in BUILTIN_FUNCTIONS and (len(parts) == 1 or parts[0] == "pg_catalog")
            if bare in _COUNTING and known:
                return False
            opaque = not known
            return self._walk(fields.get("args"), scope, depth + 1, sources) or opaque
        if typ == "SubLink":
            kind = fields.get("subLinkType")
            opaque = self._walk(fields.get("testexpr"), scope, depth + 1, sources)
            if kind == "EXISTS_SUBLINK":
                return opaque
            sub_typ, sub = _node(fields.get("subselect"))
            if sub_typ != "SelectStmt":
                return True
            try:
                found, hidden = _union(self.select(sub, scope, depth + 1))
            except _Opaque:
                return True
            sources |= found
            return opaque or hidden
        if typ in ("SortBy", "WindowDef"):
            return False
        opaque = False
        for key, child in fields.items():
            if key in ("location", "over", "agg_filter", "agg_order"):
                continue
            if isinstance(child, dict | list):
                opaque = self._walk(child, scope, depth + 1, sources) or opaque
        return opaque

    def column_ref(self, fields: Fields, scope: _Scope) -> tuple[frozenset[Source], bool]:
        parts = fields.get("fields") or []
        names = _strings(parts)
        if parts and _node(parts[-1])[0] == "A_Star":
            qualifier = names[:-1]
            item = _find_item(scope, qualifier) if qualifier else None
            if item is not None:
                return item.whole_row()
            return _union(self.star(qualifier, scope))
        if not names or not all(names):
            return frozenset(), True
        if len(names) == 1:
            return _unqualified(scope, names[0])
        item = _find_item(scope, names[:-1])
        if item is None:
            # ``t.c`` with no item ``t``: a whole-row field of column ``t``, or an error.
            found, opaque = _unqualified(scope, names[0])
            return found, opaque
        column = item.column(names[-1])
        if column is None:
            return frozenset({Source(item.relation or (), names[-1])}), item.relation is None
        return column[0], column[1]


def _unqualified(scope: _Scope, name: str) -> tuple[frozenset[Source], bool]:
    """An unqualified column: every item of the nearest scope that may have it (and a whole
    row, if an item has that name)."""
    current: _Scope | None = scope
    while current is not None:
        sources: set[Source] = set()
        opaque = False
        matched = False
        for item in current.items:
            column = item.column(name)
            if column is not None:
                sources |= column[0]
                opaque = opaque or column[1]
                matched = True
            if name in item.names():
                more, hidden = item.whole_row()
                sources |= more
                opaque = opaque or hidden
                matched = True
        if matched:
            return frozenset(sources), opaque
        current = current.parent
    return frozenset({Source((), name)}), False


def _find_item(scope: _Scope, qualifier: Name) -> _Item | None:
    current: _Scope | None = scope
    while current is not None:
        for item in _flatten(current.items):
            if len(qualifier) == 1 and qualifier[0] in item.names():
                return item
            if (
                item.relation is not None
                and len(qualifier) > 1
                and item.relation[-len(qualifier) :] == qualifier
            ):
                return item
        current = current.parent
    return None


def _flatten(items: Iterable[_Item]) -> Iterable[_Item]:
    for item in items:
        yield item
        if item.children:
            yield from _flatten(item.children)


def _default_name(value: Any) -> str:
    """The column name PostgreSQL gives an unnamed target (``FigureColname``, simplified)."""
    typ, fields = _node(value)
    if typ == "ColumnRef":
        names = _strings(fields.get("fields"))
        return names[-1] if names and names[-1] else "?column?"
    if typ == "FuncCall":
        names = _strings(fields.get("funcname"))
        return names[-1] if names else "?column?"
    if typ == "TypeCast":
        inner = _default_name(fields.get("arg"))
        if inner != "?column?":
            return inner
        type_names = _strings((fields.get("typeName") or {}).get("names"))
        return type_names[-1] if type_names else "?column?"
    return "?column?"


def _positional_union(branches: Sequence[Sequence[Output]]) -> list[Output]:
    """Outputs of UNION/INTERSECT/EXCEPT or VALUES rows: column i is every branch's column i."""
    if not branches:
        return []
    first = branches[0]
    fixed = all(all(o.width == 1 for o in branch) for branch in branches)
    if fixed and all(len(branch) == len(first) for branch in branches):
        out = []
        for index, output in enumerate(first):
            sources: set[Source] = set()
            opaque = False
            for branch in branches:
                sources |= branch[index].sources
                opaque = opaque or branch[index].opaque
            out.append(Output(output.name, frozenset(sources), opaque))
        return out
    sources_all: set[Source] = set()
    opaque_all = False
    for branch in branches:
        more, hidden = _union(branch)
        sources_all |= more
        opaque_all = opaque_all or hidden
    return [Output(None, frozenset(sources_all), opaque_all, width=None)]


def _copy_options(fields: Fields) -> CopyOptions:
    values: dict[str, Any] = {}
    for raw in fields.get("options") or ():
        _, option = _node(raw)
        values[str(option.get("defname", "")).lower()] = option.get("arg")
    fmt = (_defelem_text(values.get("format")) or "text").lower() if "format" in values else "text"
    base = _CSV_COPY if fmt == "csv" else _TEXT_COPY
    quote = _defelem_text(values.get("quote")) if "quote" in values else None
    escape = _defelem_text(values.get("escape")) if "escape" in values else None
    return CopyOptions(
        format=fmt,
        delimiter=(_defelem_text(values["delimiter"]) or base.delimiter)
        if "delimiter" in values
        else base.delimiter,
        null=(_defelem_text(values["null"]) or "") if "null" in values else base.null,
        quote=quote or base.quote,
        escape=escape or quote or base.escape,
        header="header" in values and _truthy(values["header"]),
        encoding=_defelem_text(values["encoding"]) if "encoding" in values else None,
        to_client=not fields.get("is_program") and fields.get("filename") is None,
    )


# --- entry point --------------------------------------------------------------------------------

_CACHE: OrderedDict[str, Lineage] = OrderedDict()
_CACHE_SIZE: Final = 2048
_MAX_CACHED_LENGTH: Final = 8192


def result_lineage(sql: str) -> Lineage:
    """The lineage of the result of one statement (``Statement.text``); never raises.

    Text that does not parse, or holds several statements, has unknown lineage."""
    cached = _CACHE.get(sql)
    if cached is not None:
        return cached
    lineage = _analyse(sql)
    if len(sql) <= _MAX_CACHED_LENGTH:
        _CACHE[sql] = lineage
        if len(_CACHE) > _CACHE_SIZE:
            with suppress(KeyError):  # another thread evicted it first: a race costs a miss
                _CACHE.popitem(last=False)
    return lineage


def _analyse(sql: str) -> Lineage:
    try:
        tree = json.loads(libpg_query.parse_sql_json(sql))
    except Exception as exc:  # any parser failure means "unknown"
        return Lineage(None, error=str(exc) or type(exc).__name__)
    statements = tree.get("stmts") or []
    if len(statements) != 1:
        return NO_ROWS if not statements else UNKNOWN
    analysis = _Analysis()
    try:
        return analysis.statement(*_node(statements[0].get("stmt", {})))
    except _Opaque as exc:
        return Lineage(None, frozenset(analysis.relations), error=str(exc))
    except RecursionError:
        return Lineage(None, frozenset(analysis.relations), error="statement nested too deeply")
