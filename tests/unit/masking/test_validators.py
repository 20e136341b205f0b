"""Checksums and number-plan rules behind the detectors."""

from __future__ import annotations

import pytest

from jitgate.masking.validators import (
    VALIDATORS,
    card_brand,
    card_valid,
    iban_valid,
    luhn_valid,
    mod97_valid,
    ssn_valid,
)


@pytest.mark.parametrize(
    "number", ["4111111111111111", "79927398713", "378282246310005", "6011111111111117"]
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4111111111111112", "1234567812345678", "", "7", "41x1"])
def test_luhn_rejects_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4111111111111111", "Visa"),
        ("4222222222222", "Visa"),
        ("5555555555554444", "Mastercard"),
        ("2223003122003222", "Mastercard"),
        ("378282246310005", "American Express"),
        ("6011111111111117", "Discover"),
        ("6221260000000000", "Discover"),
        ("3530111333300000", "JCB"),
        ("30569309025904", "Diners Club"),
        ("6200000000000005", "UnionPay"),
        ("6759649826438453", "Maestro"),
    ],
)
def test_card_brand_by_iin_and_length(number: str, brand: str) -> None:
    assert card_brand(number) == brand


def test_card_brand_needs_an_issued_length() -> None:
    assert card_brand("41111111111111") is None  # Visa has no 14-digit numbers
    assert card_brand("37828224631000") is None  # Amex is 15 digits
    assert card_brand("9111111111111111") is None
    assert card_valid("4111111111111111")
    assert not card_valid("4111111111111112")


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "NO9386011117947",
    ],
)
def test_iban_valid(iban: str) -> None:
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013001",  # checksum
        "DE8937040044053201300",  # length
        "XX89370400440532013000",  # country
        "GB82WEST1234569876543",
    ],
)
def test_iban_invalid(iban: str) -> None:
    assert not iban_valid(iban)


def test_mod97_is_case_insensitive() -> None:
    assert mod97_valid("gb82west12345698765432")
    assert not mod97_valid("gb82")


@pytest.mark.parametrize("ssn", ["123456789", "001010001", "899999999", "665123456"])
def test_ssn_valid(ssn: str) -> None:
    assert ssn_valid(ssn)


@pytest.mark.parametrize(
    "ssn",
    ["000123456", "666123456", "900123456", "999123456", "123001234", "123450000",
     "078051120", "219099999", "12345678", "12345678a"],
)  # fmt: skip
def test_ssn_invalid(ssn: str) -> None:
    assert not ssn_valid(ssn)


def test_named_validators_take_the_matched_text() -> None:
    assert VALIDATORS["luhn"]("4111-1111-1111-1111")
    assert VALIDATORS["card"]("4111 1111 1111 1111")
    assert VALIDATORS["iban"]("DE89 3704 0044 0532 0130 00")
    assert VALIDATORS["mod97"]("GB82 WEST 1234 5698 7654 32")
    assert VALIDATORS["ssn"]("123-45-6789")
    assert not VALIDATORS["ssn"]("078-05-1120")
