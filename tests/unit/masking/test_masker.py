"""The cell masker: strategies, column rules, type classes, plans, counts and explain."""

from __future__ import annotations

import json
import re

import pytest

from jitgate.masking import (
    ColumnInfo,
    Masker,
    MaskingConfigError,
    TypeClass,
    load_profile,
)

CARD = "4111 1111 1111 1111"
KEY = b"k" * 32


def profile(strategy: str = "redact", **rule: object) -> Masker:
    data = {"name": "t", "rules": [{"types": ["*"], "strategy": strategy, **rule}]}
    return Masker(load_profile(data), key=KEY)


# -- strategies -------------------------------------------------------------------------------


def test_redact_replaces_each_value_in_place() -> None:
    masker = Masker("strict")
    result = masker.mask_text(f'{{"card": "{CARD}", "mail": "jo@example.com", "n": 3}}')
    assert result.value == '{"card": "[REDACTED:card]", "mail": "[REDACTED:email]", "n": 3}'
    assert result.changed
    assert dict(result.counts) == {"card": 1, "email": 1}


def test_marker_is_configurable() -> None:
    assert Masker("strict", marker="****").mask_text(CARD).value == "****"
    custom = load_profile({"name": "m", "marker": "<{type}>", "rules": [{"types": ["card"]}]})
    assert Masker(custom).mask_text(f"c {CARD}").value == "c <card>"
    with pytest.raises(MaskingConfigError, match="marker"):
        Masker("strict", marker='"')


def test_marker_that_would_be_detected_again_is_refused() -> None:
    words = load_profile(
        {
            "name": "w",
            "detectors": [{"name": "flag", "words": ["hidden"]}],
            "marker": "hidden",
            "rules": [{"types": ["flag"]}],
        }
    )
    with pytest.raises(MaskingConfigError, match="itself detected"):
        Masker(words)


def test_partial_keeps_last_four_and_separators() -> None:
    masker = profile("partial")
    assert masker.mask_text(f"card {CARD}").value == "card **** **** **** 1111"
    assert masker.mask_text("ssn 123-45-6789").value == "ssn ***-**-6789"
    assert masker.mask_text("mail john.doe@example.com").value == "mail j***@example.com"
    assert masker.mask_text("IBAN DE89370400440532013000").value == ("IBAN ******************3000")


def test_hash_is_deterministic_per_key() -> None:
    one = profile("hash")
    again = profile("hash")
    other = Masker(
        load_profile({"name": "t", "rules": [{"types": ["*"], "strategy": "hash"}]}), key=b"x" * 32
    )
    token = one.mask_text("jo@example.com").value
    assert token is not None and re.fullmatch(r"tok_[a-z2-7]{16}", token)
    assert again.mask_text("jo@example.com").value == token
    assert one.mask_text("JO@example.com").value == token  # e-mail compared case-insensitively
    assert other.mask_text("jo@example.com").value != token
    assert one.mask_text("4111-1111-1111-1111").value == one.mask_text(CARD).value
    assert one.mask_text("mary@example.com").value != token


def test_hash_without_a_key_is_a_configuration_error() -> None:
    hashing = load_profile({"name": "h", "rules": [{"types": ["email"], "strategy": "hash"}]})
    with pytest.raises(MaskingConfigError, match="key"):
        Masker(hashing)
    assert Masker(hashing, key="text key").mask_text("a@example.com").changed


def test_null_strategy_nulls_the_cell() -> None:
    result = profile("null").mask_text(f"note with {CARD}")
    assert result.value is None and result.is_null and result.changed


def test_null_and_empty_cells_pass_through() -> None:
    masker = Masker("strict")
    assert masker.mask_text(None) == (None, False, {})
    assert masker.mask_text("").value == ""
    assert not masker.mask_text("").changed
    assert masker.mask_text("nothing here").value == "nothing here"


# -- column rules -----------------------------------------------------------------------------

SSN_COLUMN = load_profile(
    {
        "name": "cols",
        "rules": [
            {"columns": ["customers.ssn"], "label": "ssn"},
            {"columns": ["*secret*"], "label": "secret", "strategy": "null"},
            {"types": ["ssn"], "columns": ["tax_*"], "bare_ssn": True},
            {"types": ["email"]},
        ],
    }
)


def test_table_column_rule_masks_whatever_the_content() -> None:
    masker = Masker(SSN_COLUMN)
    for content in ("123-45-6789", "not an ssn at all", "42"):
        result = masker.mask_text(content, column="ssn", table="customers")
        assert result.value == "[REDACTED:ssn]"
    assert masker.mask_text("123-45-6789", column="ssn", table="employees").value == ("123-45-6789")
    assert masker.counts["ssn"] == 3


def test_glob_column_rule() -> None:
    masker = Masker(SSN_COLUMN)
    assert masker.mask_text("x", column="client_secret").value is None
    assert masker.mask_text("x", column="CLIENT_SECRET", table="apps").value is None
    assert masker.mask_text("x", column="client").value == "x"


def test_bare_ssn_only_in_its_columns() -> None:
    masker = Masker(SSN_COLUMN)
    assert masker.mask_text("123456789", column="tax_id").value == "[REDACTED:ssn]"
    assert masker.mask_text("123456789", column="order_id").value == "123456789"
    assert masker.mask_text("123456789").value == "123456789"
    assert masker.mask_text("000456789", column="tax_id").value == "000456789"


def test_builtin_pii_masks_bare_ssn_columns_and_cards_partially() -> None:
    masker = Masker("pii")
    assert masker.mask_text("123456789", column="customer_ssn").value == "[REDACTED:ssn]"
    assert masker.mask_text(f"paid {CARD}").value == "paid **** **** **** 1111"
    assert masker.mask_text("ip 10.0.0.1").value == "ip 10.0.0.1"


# -- type classes -----------------------------------------------------------------------------


def test_numeric_columns_get_null_by_default() -> None:
    masker = Masker("strict")
    result = masker.mask_text("4111111111111111", type_class=TypeClass.NUMERIC)
    assert result.value is None and result.changed
    assert masker.mask_text("12.50", type_class="numeric").value == "12.50"


def test_numeric_zero_fallback_keeps_a_decodable_number() -> None:
    redact = profile("redact", on_numeric="zero")
    assert redact.mask_text("4111111111111111", type_class="numeric").value == "0" * 16
    partial = profile("partial", on_numeric="zero")
    assert partial.mask_text("4111111111111111", type_class="numeric").value == (
        "000000000000" + "1111"
    )
    hashing = profile("hash", on_numeric="zero")
    assert hashing.mask_text("4111111111111111", type_class="numeric").value is None


def test_other_type_class_always_gets_null() -> None:
    masker = profile("redact", on_numeric="zero")
    assert masker.mask_text("10.0.0.1", type_class="other").value is None
    whole = Masker(SSN_COLUMN)
    result = whole.mask_text("123456789", column="ssn", table="customers", type_class="numeric")
    assert result.value is None


# -- plans and rows ---------------------------------------------------------------------------


def test_plan_resolves_columns_once_and_skips_clean_columns() -> None:
    masker = Masker(SSN_COLUMN)
    columns = [
        ColumnInfo("id", "customers", TypeClass.NUMERIC),
        ColumnInfo("ssn", "customers"),
        ColumnInfo("email", "customers"),
    ]
    plan = masker.plan(columns)
    assert plan.indexes == (0, 1, 2)  # email rule has no columns: applies everywhere
    none = Masker("none").plan(columns)
    assert none.passthrough and none.indexes == ()


def test_mask_row_and_row_changes() -> None:
    masker = Masker(SSN_COLUMN)
    plan = masker.plan([ColumnInfo("id"), ColumnInfo("ssn", "customers"), ColumnInfo("note")])
    cells = ["7", "123-45-6789", "mail jo@example.com"]
    assert masker.mask_row(plan, cells) == ["7", "[REDACTED:ssn]", "mail [REDACTED:email]"]
    assert masker.row_changes(plan, cells) == {1: "[REDACTED:ssn]", 2: "mail [REDACTED:email]"}
    assert masker.row_changes(plan, ["8", None, "plain"]) == {}
    unchanged = ["9", None, "plain"]
    row = masker.mask_row(plan, unchanged)
    assert row == unchanged and row[2] is unchanged[2]


def test_counts_accumulate_per_masker() -> None:
    masker = Masker("strict")
    masker.mask_text(f"{CARD} and 5555 5555 5555 4444 to jo@example.com")
    masker.mask_text("ssn 123-45-6789")
    assert masker.counts == {"card": 2, "email": 1, "ssn": 1}


# -- explain ----------------------------------------------------------------------------------


def test_explain_says_what_and_why() -> None:
    masker = Masker("pii")
    findings = masker.explain(f"card {CARD}, mail jo@example.com")
    assert [(f.type, f.text) for f in findings] == [("card", CARD), ("email", "jo@example.com")]
    assert "Luhn ok" in findings[0].why and "Visa" in findings[0].why
    assert "partial" in findings[0].why
    whole = Masker(SSN_COLUMN).explain("anything", column="ssn", table="customers")
    assert whole[0].type == "ssn" and "column rule" in whole[0].why
    assert Masker("none").explain(CARD) == []


def test_masking_twice_changes_nothing_more() -> None:
    text = (
        f'{{"card": "{CARD}", "pw": "password=hunter2", "tok": "Bearer abc123DEF456", '
        '"ip": "10.1.2.3", "mail": "jo@example.com", "ssn": "123-45-6789"}'
    )
    for strategy in ("redact", "partial", "hash"):
        masker = profile(strategy)
        once = masker.mask_text(text).value
        assert once is not None
        twice = masker.mask_text(once)
        assert twice.value == once, strategy
        assert not twice.changed, strategy


def test_whole_cell_rule_masks_values_that_merely_look_masked() -> None:
    masker = Masker(SSN_COLUMN)
    assert masker.mask_text("*abc", column="ssn", table="customers").value == "[REDACTED:ssn]"
    marker = masker.mask_text("[REDACTED:ssn]", column="ssn", table="customers")
    assert not marker.changed


def test_type_class_accepts_strings_and_rejects_unknown_ones() -> None:
    masker = Masker("strict")
    plan = masker.plan([ColumnInfo("n", None, "numeric")])  # type: ignore[arg-type]
    assert plan.masked[0].column.type_class is TypeClass.NUMERIC
    assert masker.mask_row(plan, ["4111111111111111"]) == [None]
    with pytest.raises(ValueError, match="type class"):
        masker.mask_text("x", type_class="yaml")


def test_column_rule_masks_text_that_looks_already_masked() -> None:
    profile = load_profile({"name": "c", "rules": [{"columns": ["ssn"], "label": "ssn"}]})
    masker = Masker(profile, key=b"k" * 32)
    for value in ("****ÄÖÜßéèàΩΨΦ", "****1234", "tok_aaaaaaaaaaaaaaaa", "[REDACTED:card]"):
        assert masker.mask_text(value, column="ssn").value == "[REDACTED:ssn]"
    assert not masker.mask_text("[REDACTED:ssn]", column="ssn").changed


def test_json_documents_stay_valid_json() -> None:
    profile = load_profile(
        {
            "name": "j",
            "rules": [
                {"types": ["card"], "strategy": "partial"},
                {"types": ["email"]},
                {"columns": ["whole"], "label": "secret"},
            ],
        }
    )
    masker = Masker(profile, key=b"k" * 32)
    doc = '{"card": 4111111111111111, "list": [4111111111111111, 1.100], "e": "a@example.com"}'
    for type_class in ("json", "text"):
        out = masker.mask_text(doc, type_class=type_class).value
        assert out is not None
        assert json.loads(out) == {
            "card": "************1111",
            "list": ["************1111", 1.1],
            "e": "[REDACTED:email]",
        }
        assert "1.100" in out  # numbers that are not masked keep their text
    assert masker.mask_text("4111111111111111", type_class="json").value == '"************1111"'
    assert masker.mask_text("[1, 2]", column="whole", type_class="json").value == (
        '"[REDACTED:secret]"'
    )
    # Plain text that merely starts with a bracket is not quoted.
    assert masker.mask_text("[INFO] mail a@example.com").value == "[INFO] mail [REDACTED:email]"


def test_json_finding_across_structure_is_masked_value_by_value() -> None:
    profile = load_profile(
        {
            "name": "x",
            "detectors": [{"name": "pair", "pattern": r"x1\", \"y"}],
            "rules": [{"types": ["pair", "email"]}],
        }
    )
    masker = Masker(profile, key=b"k" * 32)
    out = masker.mask_text('["x1", "y2", "b@example.com", 12.50]', type_class="json").value
    assert out is not None
    assert json.loads(out) == ["x1", "y2", "[REDACTED:email]", 12.5] and "12.50" in out
