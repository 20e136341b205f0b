"""Mask profiles and rules: loading from dicts, validation errors, column matching."""

from __future__ import annotations

import pytest

from jitgate.errors import InvalidInput
from jitgate.masking import (
    BUILTIN_PROFILES,
    MaskingConfigError,
    Strategy,
    get_profile,
    load_profile,
    load_profiles,
)
from jitgate.masking.rules import column_matches


def test_builtin_profiles_exist_and_validate() -> None:
    assert set(BUILTIN_PROFILES) == {"none", "pii", "pci", "secrets", "strict"}
    assert BUILTIN_PROFILES["none"].rules == ()
    pii = BUILTIN_PROFILES["pii"]
    card_rule = next(rule for rule in pii.rules if "card" in rule.types)
    assert card_rule.strategy is Strategy.PARTIAL
    assert get_profile("pci") is BUILTIN_PROFILES["pci"]


def test_load_profile_from_a_dict() -> None:
    profile = load_profile(
        {
            "name": "support",
            "marker": "####",
            "detectors": [
                {"name": "employee_id", "pattern": r"\bE\d{6}\b"},
                {"name": "codename", "words": ["bluebird"]},
            ],
            "rules": [
                {"columns": ["customers.ssn"], "label": "ssn", "strategy": "null"},
                {"types": ["email", "employee_id"], "strategy": "hash"},
                {"types": ["*"], "on_numeric": "zero"},
            ],
        }
    )
    assert profile.name == "support"
    assert profile.rules[0].whole_cell
    assert profile.rules[0].kind == "ssn"
    assert profile.uses(Strategy.HASH)
    assert "codename" in profile.expand(("*",))


def test_load_profiles_list_or_mapping() -> None:
    as_map = load_profiles({"profiles": {"a": {"rules": [{"types": ["card"]}]}}})
    assert list(as_map) == ["a"]
    as_list = load_profiles({"profiles": [{"name": "b", "rules": []}]})
    assert list(as_list) == ["b"]
    with pytest.raises(MaskingConfigError, match="defined twice"):
        load_profiles({"profiles": [{"name": "b"}, {"name": "b"}]})
    with pytest.raises(MaskingConfigError, match="'profiles'"):
        load_profiles({"rules": []})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "rules": [{"strategy": "redact"}]}, "needs 'types', 'columns'"),
        ({"name": "x", "rules": [{"types": ["passport"]}]}, "unknown type"),
        ({"name": "x", "rules": [{"types": ["card"], "strategy": "shred"}]}, "rules.0.strategy"),
        ({"name": "x", "rules": [{"types": ["card"], "colour": "red"}]}, "Extra inputs"),
        ({"name": "x", "rules": [{"types": ["ssn"], "bare_ssn": True}]}, "bare_ssn"),
        ({"name": "x", "rules": [{"types": ["ssn"], "label": "ssn"}]}, "label"),
        ({"name": "x", "rules": [{"columns": ["a..b"]}]}, "column pattern"),
        ({"name": "x", "marker": 'say "no"'}, "marker"),
        ({"name": "x", "marker": "[{kind}]"}, "placeholder"),
        ({"name": "x", "detectors": [{"name": "card", "pattern": "x"}]}, "built-in"),
        ({"name": "x", "detectors": [{"name": "a", "pattern": "("}]}, "does not compile"),
        ({"name": "x", "detectors": [{"name": "a", "pattern": "x", "words": ["y"]}]}, "exactly"),
        ({"name": "x", "detectors": [{"name": "a", "words": ["y"], "validator": "luhn"}]}, "only"),
        ({"name": "x", "detectors": [{"name": "a", "pattern": "x", "validator": "md5"}]}, "md5"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_invalid_profiles_have_clear_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(MaskingConfigError, match=message) as caught:
        load_profile(data)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "invalid_mask_profile"


def test_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(MaskingConfigError, match="pci"):
        get_profile("gdpr")


@pytest.mark.parametrize(
    ("pattern", "column", "table", "expected"),
    [
        ("*ssn*", "customer_ssn", None, True),
        ("*ssn*", "SSN", "customers", True),
        ("email*", "email_address", "users", True),
        ("email*", "work_email", "users", False),
        ("customers.ssn", "ssn", "customers", True),
        ("customers.ssn", "ssn", "public.customers", True),
        ("customers.ssn", "ssn", "employees", False),
        ("customers.ssn", "ssn", None, True),  # table unknown: fail closed
        ("customers.ssn", "tax_id", "customers", False),
        ("public.customers.ssn", "ssn", "public.customers", True),
        ("public.customers.ssn", "ssn", "archive.customers", False),
        ("Customers.SSN", "ssn", "CUSTOMERS", True),
        ("*.password", "password", "users", True),
    ],
)
def test_column_matching(pattern: str, column: str, table: str | None, expected: bool) -> None:
    assert column_matches(pattern, column, table) is expected


def test_pci_column_globs_do_not_catch_ordinary_words() -> None:
    pci = BUILTIN_PROFILES["pci"]
    rule = pci.rules[0]
    assert rule.matches("card_number", "payments")
    assert rule.matches("pan", None)
    for column in ("company", "discard", "cardinality", "span", "expand"):
        assert not rule.matches(column, None)
