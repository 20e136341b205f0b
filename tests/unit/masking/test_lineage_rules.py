"""Column rules follow a result column's lineage, not its name; opaque columns fail closed;
the null strategy in text that cannot hold NULL writes the marker."""

from __future__ import annotations

from jitgate.masking import ColumnInfo, Masker, TypeClass, load_profile


def masker(*rules: dict[str, object]) -> Masker:
    return Masker(load_profile({"name": "t", "rules": list(rules)}))


SSN_COLUMN = {"columns": ["customers.ssn"], "label": "ssn"}


def test_a_column_derived_from_a_masked_column_is_masked_whatever_its_name() -> None:
    m = masker(SSN_COLUMN)
    derived = ColumnInfo("s", sources=(("public.customers", "ssn"),))
    result = m.mask_text("n/a", info=derived)
    assert result.value == "[REDACTED:ssn]" and result.changed
    # The same name from another table, or from nothing at all, is left alone.
    other = ColumnInfo("ssn", sources=(("public.orders", "ssn"),))
    assert not m.mask_text("n/a", info=other).changed
    constant = ColumnInfo("ssn", sources=())
    assert not m.mask_text("n/a", info=constant).changed
    # Without lineage the name decides, as before (the table unknown: fail closed).
    assert m.mask_text("n/a", column="ssn").changed


def test_whole_rows_and_globs() -> None:
    m = masker(SSN_COLUMN)
    row = ColumnInfo("row_to_json", sources=(("public.customers", "*"),))
    assert m.mask_text('{"id": 1}', info=row).value == "[REDACTED:ssn]"
    elsewhere = ColumnInfo("row_to_json", sources=(("public.orders", "*"),))
    assert not m.mask_text('{"id": 1}', info=elsewhere).changed
    glob = masker({"columns": ["*password*"], "label": "secret"})
    assert glob.mask_text("x", info=ColumnInfo("p", sources=(("users", "password_hash"),))).changed
    assert glob.mask_text("x", info=ColumnInfo("password", sources=())).changed  # its own name
    assert not glob.mask_text("x", info=ColumnInfo("p", sources=(("users", "name"),))).changed


def test_opaque_columns_get_every_column_rule() -> None:
    m = masker(SSN_COLUMN, {"types": ["email"]})
    opaque = ColumnInfo("get_ssn", opaque=True)
    assert m.mask_text("n/a", info=opaque).value == "[REDACTED:ssn]"
    scoped = masker({"types": ["ssn"], "columns": ["*ssn*"], "bare_ssn": True})
    assert scoped.mask_text("123456789", info=opaque).changed
    assert not scoped.mask_text("123456789", info=ColumnInfo("x", sources=())).changed


def test_plan_uses_lineage() -> None:
    m = masker(SSN_COLUMN)
    plan = m.plan(
        [
            ColumnInfo("id", sources=(("public.customers", "id"),)),
            ColumnInfo("s", sources=(("public.customers", "ssn"),)),
            ColumnInfo("f", opaque=True),
        ]
    )
    assert plan.indexes == (1, 2)
    assert m.needs_lineage


def test_needs_lineage_only_with_column_rules() -> None:
    assert masker(SSN_COLUMN).needs_lineage
    assert not masker({"types": ["email"]}).needs_lineage


def test_null_strategy_writes_the_marker_where_null_cannot_be() -> None:
    m = masker({"types": ["email"], "strategy": "null"})
    assert m.mask_text("mail jo@example.com now").value is None
    text = m.mask_text("mail jo@example.com now", nullable=False)
    assert text.value == "mail [REDACTED:email] now" and text.changed
    whole = masker({"columns": ["email"], "strategy": "null", "label": "email"})
    assert whole.mask_text("jo", column="email").value is None
    assert whole.mask_text("jo", column="email", nullable=False).value == "[REDACTED:email]"


def test_info_carries_the_type_class() -> None:
    m = masker({"types": ["card"]})
    info = ColumnInfo("n", sources=(), type_class=TypeClass.NUMERIC)
    assert m.mask_text("4111111111111111", info=info).value is None
