"""The wire side of masking, bytes in and bytes out: RowDescription, DataRow, COPY rows,
error fields, the column catalog and its look-up messages."""

from __future__ import annotations

import struct

import pytest

from jitgate.masking import ColumnInfo, Masker, TypeClass, load_profile
from jitgate.protocols.postgres import masking as pg
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.sql.lineage import CopyOptions, result_lineage
from jitgate.sql.postgres import classify_postgres
from tests.unit.protocols.postgres.wire import messages

CARD = "4111 1111 1111 1111"
EMAIL = "jo@example.com"
TEXT, INT4, NUMERIC, JSONB, BYTEA = 25, 23, 1700, 3802, 17


def masker(*rules: dict[str, object]) -> Masker:
    return Masker(load_profile({"name": "t", "rules": list(rules) or [{"types": ["*"]}]}))


def row_description(*fields: tuple[str, int, int, int, int]) -> bytes:
    """(name, table oid, attnum, type oid, format) per field."""
    body = struct.pack("!h", len(fields))
    for name, table, attnum, type_oid, fmt in fields:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, fmt)
    return body


def data_row(*cells: bytes | None) -> bytes:
    body = struct.pack("!h", len(cells))
    for cell in cells:
        body += b"\xff\xff\xff\xff" if cell is None else struct.pack("!i", len(cell)) + cell
    return body


def cells(payload: bytes) -> list[bytes | None]:
    (count,) = struct.unpack_from("!h", payload)
    offset, out = 2, []
    for _ in range(count):
        (length,) = struct.unpack_from("!i", payload, offset)
        offset += 4
        out.append(None if length < 0 else payload[offset : offset + length])
        offset += max(length, 0)
    assert offset == len(payload)
    return out


# -- RowDescription and DataRow ----------------------------------------------------------------


def test_row_description_is_parsed_strictly() -> None:
    payload = row_description(("id", 16384, 1, INT4, 0), ("ssn", 16384, 2, TEXT, 1))
    fields = pg.parse_row_description(payload, "utf-8")
    assert [(f.name, f.table_oid, f.attnum, f.type_oid, f.format) for f in fields] == [
        ("id", 16384, 1, INT4, 0),
        ("ssn", 16384, 2, TEXT, 1),
    ]
    for bad in (b"", b"\x00", payload[:-1], payload + b"x", b"\xff\xff"):
        with pytest.raises(ProtocolViolation):
            pg.parse_row_description(bad, "utf-8")


def test_data_row_cells_are_rewritten_with_new_lengths() -> None:
    m = masker({"types": ["card", "email"]})
    fields = pg.parse_row_description(
        row_description(("id", 0, 0, INT4, 0), ("note", 0, 0, TEXT, 0), ("n", 0, 0, TEXT, 0)),
        "utf-8",
    )
    plan = pg.plan(m, fields)
    out = pg.rewrite_data_row(data_row(b"1", f"card {CARD}".encode(), None), plan, m, "utf-8")
    assert out is not None and cells(out) == [b"1", b"card [REDACTED:card]", None]
    assert pg.rewrite_data_row(data_row(b"1", b"nothing", b"x"), plan, m, "utf-8") is None


def test_every_cell_decodes_in_its_format() -> None:
    m = masker({"types": ["card", "email"]})
    fields = pg.parse_row_description(
        row_description(
            ("t", 0, 0, TEXT, 1),  # binary text: the bytes are the text
            ("j", 0, 0, JSONB, 1),  # binary jsonb: version byte 1, then the text
            ("i", 0, 0, INT4, 1),  # binary int: only NULL can replace it
            ("n", 0, 0, NUMERIC, 0),  # a text-format number: NULL (the numeric fallback)
            ("b", 0, 0, BYTEA, 0),
        ),
        "utf-8",
    )
    plan = pg.plan(m, fields)
    out = pg.rewrite_data_row(
        data_row(
            EMAIL.encode(),
            b'\x01{"mail": "' + EMAIL.encode() + b'"}',
            b"4111",  # not a card, but scanned as text and left alone
            b"4111111111111111",
            b"\\x" + CARD.encode().hex().encode(),
        ),
        plan,
        m,
        "utf-8",
    )
    assert out is not None
    t, j, i, n, b = cells(out)
    assert t == b"[REDACTED:email]" and j == b'\x01{"mail": "[REDACTED:email]"}'
    assert i == b"4111" and n is None and b == b"\\x" + CARD.encode().hex().encode()


def test_an_unknown_jsonb_version_is_replaced_by_null() -> None:
    m = masker({"types": ["email"]})
    fields = pg.parse_row_description(row_description(("j", 0, 0, JSONB, 1)), "utf-8")
    out = pg.rewrite_data_row(data_row(b"\x02" + EMAIL.encode()), pg.plan(m, fields), m, "utf-8")
    assert out is not None and cells(out) == [None]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        data_row(b"a")[:-1],  # a value cut short
        struct.pack("!hi", 2, 3) + b"abc",  # the second cell's length is missing
        struct.pack("!hi", 1, -2),  # a length below -1
        data_row(b"a") + b"x",  # bytes after the last cell
        data_row(b"a", b"b"),  # more cells than the RowDescription said
        struct.pack("!h", -1),
    ],
)
def test_a_malformed_data_row_is_a_protocol_violation(payload: bytes) -> None:
    m = masker()
    plan = pg.plan(m, pg.parse_row_description(row_description(("x", 0, 0, TEXT, 0)), "utf-8"))
    with pytest.raises(ProtocolViolation):
        pg.rewrite_data_row(payload, plan, m, "utf-8")
    if payload[:2] != struct.pack("!h", 2) or len(payload) < 8:
        with pytest.raises(ProtocolViolation):
            pg.mask_all_text_cells(payload, m, "utf-8")


def test_rows_of_unknown_shape_get_null_not_text() -> None:
    """No RowDescription: a cell may be binary or numeric, so a masked one becomes NULL."""
    m = masker({"types": ["card"]})
    row = data_row(b"1", CARD.encode(), struct.pack("!q", 4111111111111111), None)
    out = pg.mask_all_text_cells(row, m, "utf-8")
    assert out is not None and cells(out) == [b"1", None, struct.pack("!q", 4111111111111111), None]
    assert pg.mask_all_text_cells(data_row(b"1", b"x"), m, "utf-8") is None
    # every column rule applies to a cell whose column is unknown
    ruled = masker({"columns": ["customers.ssn"], "label": "ssn"})
    out = pg.mask_all_text_cells(data_row(b"n/a"), ruled, "utf-8")
    assert out is not None and cells(out) == [None]


def test_plan_carries_lineage_to_the_masker() -> None:
    m = masker({"columns": ["customers.ssn"], "label": "ssn"})
    fields = pg.parse_row_description(
        row_description(("a", 0, 0, TEXT, 0), ("b", 0, 0, TEXT, 0)), "utf-8"
    )
    columns = [
        ColumnInfo("a", sources=(("public.customers", "id"),)),
        ColumnInfo("b", sources=(("public.customers", "ssn"),)),
    ]
    plan = pg.plan(m, fields, columns)
    out = pg.rewrite_data_row(data_row(b"1", b"n/a"), plan, m, "utf-8")
    assert out is not None and cells(out) == [b"1", b"[REDACTED:ssn]"]


# -- COPY rows -------------------------------------------------------------------------------------


def copy_plan(
    options: CopyOptions, names: list[str], rules: list[dict[str, object]] | None = None
) -> tuple[pg.CopyPlan, Masker]:
    m = masker(*(rules or [{"types": ["email", "card"]}]))
    columns = [ColumnInfo(n, sources=(("public.t", n),)) for n in names]
    return pg.copy_plan(options, len(names), columns, "utf-8"), m


def test_copy_text_rows_are_masked_field_by_field() -> None:
    plan, m = copy_plan(CopyOptions(), ["id", "note", "n"])
    row = f"1\tmail {EMAIL}\\twith a tab\t\\N\n".encode()
    assert pg.mask_copy_data(row, plan, m) == b"1\tmail [REDACTED:email]\\twith a tab\t\\N\n"
    assert pg.mask_copy_data(b"2\tnothing\t\\N\n", plan, m) is None
    # several rows in one message, a value that keeps backslashes and newlines escaped
    rows = f"3\t{EMAIL}\\\\x\\nnext\tz\n4\tfine\tz\n".encode()
    assert pg.mask_copy_data(rows, plan, m) == b"3\t[REDACTED:email]\\\\x\\nnext\tz\n4\tfine\tz\n"


def test_copy_null_strategy_writes_the_copy_null() -> None:
    plan, m = copy_plan(CopyOptions(), ["id", "mail"], [{"types": ["email"], "strategy": "null"}])
    assert pg.mask_copy_data(f"1\t{EMAIL}\n".encode(), plan, m) == b"1\t\\N\n"
    custom, m = copy_plan(
        CopyOptions(null="NULL"), ["id", "mail"], [{"types": ["email"], "strategy": "null"}]
    )
    assert pg.mask_copy_data(f"1\t{EMAIL}\n".encode(), custom, m) == b"1\tNULL\n"


def test_copy_csv_quotes_and_header() -> None:
    options = CopyOptions(format="csv", delimiter=",", null="", header=True)
    plan, m = copy_plan(options, ["id", "note"])
    assert pg.mask_copy_data(b"id,note\n", plan, m) is None  # the header row is left alone
    row = f'1,"a, ""quoted"" {EMAIL}\nover two lines"\n'.encode()
    out = pg.mask_copy_data(row, plan, m)
    assert out == b'1,"a, ""quoted"" [REDACTED:email]\nover two lines"\n'
    nulled, m2 = copy_plan(
        CopyOptions(format="csv", delimiter=",", null=""),
        ["id", "mail"],
        [{"types": ["email"], "strategy": "null"}],
    )
    assert pg.mask_copy_data(f'1,{EMAIL}\r\n2,""\n'.encode(), nulled, m2) == b'1,\r\n2,""\n'


def test_copy_row_of_an_unexpected_shape_gets_every_rule() -> None:
    plan, m = copy_plan(CopyOptions(), ["a", "b"], [{"columns": ["t.ssn"], "label": "ssn"}])
    assert pg.mask_copy_data(b"1\tn/a\n", plan, m) is None  # neither is t.ssn
    assert pg.mask_copy_data(b"1\tn/a\textra\n", plan, m) == (
        b"[REDACTED:ssn]\t[REDACTED:ssn]\t[REDACTED:ssn]\n"
    )


def test_copy_in_another_encoding() -> None:
    plan, m = copy_plan(CopyOptions(encoding="LATIN1"), ["id", "note"])
    row = f"1\tcafé {EMAIL}\n".encode("latin-1")
    assert pg.mask_copy_data(row, plan, m) == "1\tcafé [REDACTED:email]\n".encode("latin-1")


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("COPY t TO STDOUT", False),
        ("COPY t TO STDOUT (FORMAT csv)", False),
        ("COPY t TO STDOUT (FORMAT binary)", True),
        ("COPY BINARY t TO STDOUT", True),
        ("COPY t FROM STDIN (FORMAT binary)", False),
        ("SELECT 1", False),
    ],
)
def test_binary_copy_is_refused(sql: str, refused: bool) -> None:
    statement = classify_postgres(sql).statements[0]
    reason = pg.copy_refusal(statement, result_lineage(sql))
    assert (reason is not None) == refused
    if refused:
        assert reason is not None and "cannot be masked" in reason


def test_copy_out_response() -> None:
    assert pg.parse_copy_out_response(b"\x00" + struct.pack("!hhh", 2, 0, 0)) == (0, 2)
    for bad in (b"", b"\x00\x00", b"\x00" + struct.pack("!hh", 2, 0)):
        with pytest.raises(ProtocolViolation):
            pg.parse_copy_out_response(bad)


# -- error fields ----------------------------------------------------------------------------------


def error(**fields: str) -> bytes:
    return b"".join(k.encode() + v.encode() + b"\0" for k, v in fields.items()) + b"\0"


def test_error_fields_null_strategy_writes_the_marker() -> None:
    m = masker({"types": ["email"], "strategy": "null"})
    payload = error(S="ERROR", C="23505", M="duplicate", D=f"Key (email)=({EMAIL}) exists.")
    fields = pg.mask_error_fields(payload, m, "utf-8")
    assert fields is not None and fields["D"] == "Key (email)=([REDACTED:email]) exists."


def test_error_detail_about_a_table_follows_its_column_rules() -> None:
    m = masker({"columns": ["customers.ssn"], "label": "ssn"})
    payload = error(S="ERROR", C="23514", M="check", D="Failing row contains (2, n/a).",
                    s="public", t="customers")  # fmt: skip
    fields = pg.mask_error_fields(payload, m, "utf-8", pg.table_scope(None))
    assert fields is not None and fields["D"] == "[REDACTED:ssn]" and fields["M"] == "check"
    catalog = catalog_with_customers()
    other = error(S="ERROR", C="23514", M="check", D="Failing row contains (2).", t="orders")
    assert pg.mask_error_fields(other, m, "utf-8", pg.table_scope(catalog)) is not None
    assert pg.mask_error_fields(payload, m, "utf-8", pg.table_scope(catalog)) is not None
    plain = masker({"types": ["email"]})
    assert pg.mask_error_fields(payload, plain, "utf-8", pg.table_scope(catalog)) is None


# -- the column catalog ------------------------------------------------------------------------


CUSTOMERS, VIEW, PARENT, PARTITION = 100, 200, 300, 301
VIEW_SQL = " SELECT customers.id,\n    upper(customers.ssn) AS s\n   FROM customers;"


def lookup_rows() -> list[list[str | None]]:
    return [
        ["r", '"customers"', str(CUSTOMERS), "public", "customers", "r", None],
        ["r", '"v"', str(VIEW), "public", "v", "v", VIEW_SQL],
        ["r", '"p1"', str(PARTITION), "public", "p1", "r", None],
        ["a", None, str(CUSTOMERS), "1", "id", "23", None],
        ["a", None, str(CUSTOMERS), "2", "name", "25", None],
        ["a", None, str(CUSTOMERS), "4", "ssn", "25", None],  # attnum 3 was dropped
        ["a", None, str(VIEW), "1", "id", "23", None],
        ["a", None, str(VIEW), "2", "s", "25", None],
        ["a", None, str(PARTITION), "1", "ssn", "25", None],
        ["d", None, str(VIEW), str(CUSTOMERS), None, None, None],
        ["p", None, str(PARTITION), "public", "p", None, None],
        ["n", '"missing"', None, None, None, None, None],
    ]  # fmt: skip


def catalog_with_customers(clock: list[float] | None = None) -> pg.ColumnCatalog:
    now = clock or [0.0]
    catalog = pg.ColumnCatalog(clock=lambda: now[0])
    names = [("customers",), ("v",), ("p1",), ("missing",)]
    lookup = catalog.start_lookup(catalog.wanted(names))
    for row in lookup_rows():
        catalog.add_row(
            lookup, data_row(*(None if c is None else c.encode() for c in row)), "utf-8"
        )
    catalog.finish(lookup)
    return catalog


def test_origins_resolve_tables_views_and_partitions() -> None:
    catalog = catalog_with_customers()
    assert catalog.origin(CUSTOMERS, 4) == pg.Resolved(
        frozenset({("public.customers", "ssn")}), False, 25
    )
    view = catalog.origin(VIEW, 2)
    assert view is not None and view.sources == {("public.customers", "ssn")} and not view.opaque
    assert catalog.origin(VIEW, 1) == pg.Resolved(
        frozenset({("public.customers", "id")}), False, 23
    )
    partition = catalog.origin(PARTITION, 1)
    assert partition is not None and partition.sources == {
        ("public.p1", "ssn"),
        ("public.p", "ssn"),
    }
    assert catalog.origin(999, 1) is None and catalog.origin(CUSTOMERS, 9) is None


def test_stars_expand_in_column_order_and_unknown_relations_are_opaque() -> None:
    catalog = catalog_with_customers()
    outputs = result_lineage("SELECT *, 1 AS one FROM customers").outputs
    assert outputs is not None
    columns = catalog.columns(outputs, 4)
    assert columns is not None
    assert [sorted(c.sources) for c in columns] == [
        [("public.customers", "id")],
        [("public.customers", "name")],
        [("public.customers", "ssn")],
        [],
    ]
    assert catalog.columns(outputs, 5) is None  # a shape that does not fit
    unknown = result_lineage("SELECT * FROM missing").outputs
    assert unknown is not None
    resolved = catalog.columns(unknown, 2)
    assert resolved is not None and all(c.opaque for c in resolved)
    never = result_lineage("SELECT a FROM never_looked_up").outputs
    assert never is not None
    (column,) = catalog.columns(never, 1) or []
    assert column.opaque


def test_describe_columns_combines_origins_and_lineage() -> None:
    catalog = catalog_with_customers()
    fields = pg.parse_row_description(
        row_description(
            ("id", CUSTOMERS, 1, INT4, 0),
            ("s", 0, 0, TEXT, 0),
            ("f", 0, 0, TEXT, 0),
            ("x", 555, 1, TEXT, 0),
        ),
        "utf-8",
    )
    lineage = result_lineage("SELECT id, upper(ssn) AS s, my_f(id) AS f, x FROM customers")
    info = pg.describe_columns(fields, lineage, catalog)
    assert info[0].sources == (("public.customers", "id"),) and not info[0].opaque
    assert info[1].sources == (("public.customers", "ssn"),) and not info[1].opaque
    assert info[2].opaque  # a function that is not a known built-in
    assert info[3].opaque  # a table OID the catalog does not know
    blind = pg.describe_columns(fields, lineage, None)
    assert blind[0].opaque and blind[1].opaque  # no catalog: every relation is unknown
    statement_unknown = pg.describe_columns(fields, result_lineage("FETCH 1 FROM c"), catalog)
    assert not statement_unknown[0].opaque and statement_unknown[1].opaque


def test_describe_copy_columns() -> None:
    catalog = catalog_with_customers()
    columns = pg.describe_copy_columns(result_lineage("COPY customers TO STDOUT"), 3, catalog)
    assert columns is not None
    assert [c.sources for c in columns][2] == (("public.customers", "ssn"),)
    assert [c.type_class for c in columns] == [TypeClass.NUMERIC, TypeClass.TEXT, TypeClass.TEXT]
    blind = pg.describe_copy_columns(result_lineage("COPY customers TO STDOUT"), 3, None)
    assert blind is not None and all(c.opaque for c in blind)  # column order unknown


def test_lookups_are_dropped_after_an_invalidation_and_refreshed_after_the_ttl() -> None:
    clock = [0.0]
    catalog = catalog_with_customers(clock)
    assert catalog.wanted([("customers",), ("other",)]) == [("other",)]
    clock[0] = catalog.ttl + 1
    assert catalog.wanted([("customers",)]) == [("customers",)]
    lookup = catalog.start_lookup([("customers",)])
    catalog.invalidate()
    catalog.finish(lookup)  # answered after the invalidation: stale, dropped
    assert catalog.find(("customers",)) is None
    assert catalog.wanted([("a", "b", "c"), ("",)]) == []  # never resolvable: opaque


def test_changes_catalog() -> None:
    def changes(sql: str) -> bool:
        return pg.changes_catalog(classify_postgres(sql).statements[0])

    assert not changes("SELECT 1") and not changes("BEGIN") and not changes("COMMIT")
    assert changes("ALTER TABLE t RENAME COLUMN a TO b") and changes("SET search_path = x")
    assert changes("ROLLBACK") and changes("SELECT set_config('search_path', 'x', false)")


def test_lookup_messages_are_one_self_contained_extended_query() -> None:
    catalog = pg.ColumnCatalog(nonce="abc")
    lookup = catalog.start_lookup([("public", 'Odd "Name"'), ("customers",)])
    wire = pg.lookup_messages(lookup, "utf-8")
    parsed = messages(wire)
    assert [code for code, _ in parsed] == [b"P", b"B", b"E", b"C", b"C", b"S"]
    name = lookup.statement
    assert parsed[0][1].startswith(name + b"\0") and name.startswith(b"jitgate_columns_abc_")
    assert parsed[3][1] == b"P" + name + b"\0" and parsed[4][1] == b"S" + name + b"\0"
    value = parsed[1][1].split(b"\0", 2)[2]
    assert b'{"\\"public\\".\\"Odd \\"\\"Name\\"\\"\\"","\\"customers\\""}' in value


# -- copies of masked columns --------------------------------------------------------------


def _write_refusal(
    sql: str, rules: list[dict[str, object]], catalog: pg.ColumnCatalog | None = None
) -> str | None:
    statement = classify_postgres(sql).statements[0]
    profile = load_profile({"name": "p", "rules": rules})
    return pg.write_refusal(statement, result_lineage(sql), profile, catalog)


SSN_COLUMN = [{"columns": ["customers.ssn"], "label": "ssn"}]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE x AS SELECT id, ssn FROM customers",
        "SELECT ssn INTO x FROM customers",
        "CREATE MATERIALIZED VIEW m AS SELECT upper(ssn) FROM customers",
        "INSERT INTO notes (body) SELECT ssn FROM public.customers",
        "UPDATE notes SET body = c.ssn FROM customers c WHERE c.id = notes.id",
        "UPDATE notes SET body = (SELECT ssn FROM customers WHERE id = 1)",
        "UPDATE customers SET name = ssn",
        "MERGE INTO notes n USING customers c ON n.id = c.id "
        "WHEN MATCHED THEN UPDATE SET body = c.ssn",
        "INSERT INTO notes (body) SELECT c::text FROM customers c",
        "INSERT INTO archive SELECT * FROM customers",
        "COPY (SELECT ssn FROM customers) TO '/tmp/out'",
    ],
)
def test_copies_of_masked_columns_are_refused(sql: str) -> None:
    reason = _write_refusal(sql, SSN_COLUMN)
    assert reason is not None and "masked for you (" in reason and "customers." in reason
    assert reason.endswith("masking applies to results, not to copies")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE customers SET name = 'x' WHERE id = 1",
        "UPDATE customers SET name = upper(name) WHERE ssn = '1'",  # a predicate is no copy
        "INSERT INTO t VALUES (1, 'x')",
        "UPDATE accounts SET balance = balance + 1 WHERE id = 5",
        "INSERT INTO archive SELECT * FROM orders",
        "INSERT INTO notes (id, body) SELECT id, name FROM customers",
        "INSERT INTO notes SELECT nextval('s'), total FROM orders",
        "CREATE TABLE x AS SELECT ssn FROM customers WITH NO DATA",
        "SELECT ssn FROM customers",
        "COPY (SELECT ssn FROM customers) TO STDOUT",
    ],
)
def test_ordinary_writes_are_not_copies_of_masked_columns(sql: str) -> None:
    assert _write_refusal(sql, SSN_COLUMN) is None


def test_untraceable_values_fail_closed_for_tables_with_column_rules() -> None:
    reason = _write_refusal("INSERT INTO notes (body) SELECT f(id) FROM customers", SSN_COLUMN)
    assert reason is not None and "tables with masked columns (customers)" in reason
    assert "cannot tell from which columns" in reason
    assert _write_refusal("INSERT INTO notes SELECT f(id) FROM orders", SSN_COLUMN) is None
    statement = classify_postgres("CREATE TABLE x AS SELECT ssn FROM customers").statements[0]
    profile = load_profile({"name": "p", "rules": SSN_COLUMN})
    unknown = pg.write_refusal(statement, result_lineage("not sql"), profile, None)
    assert unknown is not None and "(customers)" in unknown


def test_a_profile_without_column_rules_refuses_no_copy() -> None:
    rules: list[dict[str, object]] = [{"types": ["ssn", "email"]}]
    assert _write_refusal("CREATE TABLE x AS SELECT ssn FROM customers", rules) is None
    assert _write_refusal("INSERT INTO notes SELECT f(ssn) FROM customers", rules) is None


def test_globs_cover_every_table_until_the_catalog_tells_its_columns() -> None:
    rules: list[dict[str, object]] = [{"columns": ["*ssn*"], "label": "ssn"}]
    assert _write_refusal("INSERT INTO t SELECT * FROM orders", rules) is not None
    assert _write_refusal("INSERT INTO t SELECT id, total FROM orders", rules) is None
    catalog = catalog_with_customers()
    star = "INSERT INTO t SELECT * FROM customers"
    reason = _write_refusal(star, rules, catalog)
    assert reason is not None and "public.customers.ssn" in reason


def test_the_catalog_sees_through_views_and_partitions() -> None:
    catalog = catalog_with_customers()
    reason = _write_refusal("CREATE TABLE x AS SELECT s FROM v", SSN_COLUMN, catalog)
    assert reason is not None and "public.customers.ssn" in reason
    assert _write_refusal("CREATE TABLE x AS SELECT id FROM v", SSN_COLUMN, catalog) is None
    parent_rule: list[dict[str, object]] = [{"columns": ["p.ssn"]}]
    assert _write_refusal("INSERT INTO t SELECT ssn FROM p1", parent_rule, catalog) is not None
    assert _write_refusal("INSERT INTO t SELECT ssn FROM p1", parent_rule) is None  # unknown
