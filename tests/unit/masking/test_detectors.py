"""Built-in detectors: positives inside free text, JSON and CSV, and hard negatives."""

from __future__ import annotations

import json

import pytest

from jitgate.masking import detect
from jitgate.masking.detectors import SsnDetector
from jitgate.masking.findings import Claims


def found(text: str, kind: str) -> list[str]:
    return [f.text for f in detect(text) if f.type == kind]


def in_json(value: str) -> str:
    # PostgreSQL's json output keeps non-ASCII characters as they are.
    note = f"customer said {value} yesterday"
    return json.dumps({"id": 17, "note": note, "ok": True}, ensure_ascii=False)


# -- cards ------------------------------------------------------------------------------------

CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555 5555 5555 4444",
    "2223-0031-2200-3222",
    "3782 822463 10005",
    "378282246310005",
    "6011 1111 1111 1117",
    "3530111333300000",
    "3056 930902 5904",
    "6200000000000005",
    "6759649826438453",
    "4222222222222",
]


@pytest.mark.parametrize("card", CARDS)
def test_card_in_free_text_and_json(card: str) -> None:
    assert found(f"paid with {card}, thanks", "card") == [card]
    assert found(in_json(card), "card") == [card]
    assert found(f"17,alice,{card},2024-01-15", "card") == [card]


def test_card_followed_by_a_cvv_group() -> None:
    assert found("card 5555 5555 5555 4444 123 exp", "card") == ["5555 5555 5555 4444"]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "ref 1234567812345678",
        "4111-1111 1111-1111",  # mixed separators
        "41111111111111111111",  # 20 digits
        "x4111111111111111",  # glued to a word
        "4111111111111111abc",
        "amount 4111111111111111.00",
        "+4915123458460",
        "ts 1705312245123",
        "20240115123045123",
        "order ORD-2024-000123456789",
        "3605 565704 6240",
    ],
)
def test_card_hard_negatives(text: str) -> None:
    assert found(text, "card") == []


# -- e-mail ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "john.doe@example.com",
        "j+news@mail.example.org",
        "o'brien@example.ie",
        "x_y-z@sub.example.co.uk",
        "josé.núñez@exämple.com",
        "user@xn--mnchen-3ya.de",
        "имя@пример.рф",
    ],
)
def test_email_in_free_text_and_json(email: str) -> None:
    assert found(f"write to {email}.", "email") == [email]
    assert found(in_json(email), "email") == [email]
    assert found(f"'{email}'", "email") == [email]
    assert found(f"mailto:{email}", "email") == [email]


@pytest.mark.parametrize(
    "text",
    ["a@b", "user@localhost", "icon@2x.png", "logo@3x.jpg", "@handle", "pkg@1.2.3", "a@b.c1"],
)
def test_email_hard_negatives(text: str) -> None:
    assert found(text, "email") == []


# -- SSN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ssn", ["123-45-6789", "123 45 6789", "001-01-0001", "899-99-9999"])
def test_ssn_positives(ssn: str) -> None:
    assert found(f"SSN: {ssn}", "ssn") == [ssn]
    assert found(in_json(ssn), "ssn") == [ssn]


@pytest.mark.parametrize(
    "text",
    ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000",
     "078-05-1120", "219-09-9999", "123-45-6789-01", "123456789", "123-456789",
     "2024-01-15", "x123-45-6789", "123.45.6789"],
)  # fmt: skip
def test_ssn_hard_negatives(text: str) -> None:
    assert found(text, "ssn") == []


def test_bare_ssn_only_when_asked() -> None:
    plain = SsnDetector()
    bare = SsnDetector(bare=True)
    assert [f.text for f in plain.find("123456789", Claims())] == []
    assert [f.text for f in bare.find("123456789", Claims())] == ["123456789"]
    assert [f.text for f in bare.find("000456789", Claims())] == []
    assert [f.text for f in bare.find("1234567890", Claims())] == []


# -- phone -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "(415) 555-2671",
        "415-555-2671",
        "+1 650 253 0000",
        "+1-212-736-5000",
        "+44 20 7946 0958",
        "+49 30 901820",
        "+33 1 42 68 53 00",
        "+4915123456789",
        "212.736.5000",
    ],
)
def test_phone_positives(phone: str) -> None:
    assert found(f"call {phone} now", "phone") == [phone]
    assert found(in_json(phone), "phone") == [phone]


def test_phone_with_extension_and_neighbours() -> None:
    assert found("call +1 (415) 555-2671 ext. 12 today", "phone") == ["+1 (415) 555-2671 ext. 12"]
    assert found("a 212-736-5000 415-555-2671 b", "phone") == ["212-736-5000", "415-555-2671"]
    assert found("$65,793.72. 415-555-2671 was", "phone") == ["415-555-2671"]


def test_phone_default_region_is_configurable() -> None:
    from jitgate.masking import build_scanner

    german = build_scanner(["phone"], region="DE")
    assert [f.text for f in german.scan("Tel. 030 901820")] == ["030 901820"]
    assert [f.text for f in build_scanner(["phone"]).scan("Tel. 030 901820")] == []
    with pytest.raises(ValueError, match="region"):
        build_scanner(["phone"], region="XX")


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15",
        "2024-01-15 12:30:45",
        "2024-01-15T12:30:45Z",
        "12/25/2023",
        "ip 192.168.100.200",
        "version 10.12.1234.5",
        "order ORD-2024-5551234",
        "INV-415-555-2671",
        "order #4155552671",
        "id 1234567890",
        "id 0465151023",
        "ts 1705312245",
        "amount 4155552671.00",
        "4111 1111 1111 1111",
        "3605 565704 6240",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "sha 5d41402abc4b2a76b9719d911017c592",
        "zip 94105-1234",
    ],
)
def test_phone_hard_negatives(text: str) -> None:
    assert found(text, "phone") == []


# -- IBAN --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "BE68539007547034",
        "NO93 8601 1117 947",
    ],
)
def test_iban_positives(iban: str) -> None:
    assert found(f"IBAN: {iban}, thanks", "iban") == [iban]
    assert found(in_json(iban), "iban") == [iban]


def test_printed_iban_followed_by_another_group() -> None:
    assert found("BE68 5390 0754 7034 1234 next", "iban") == ["BE68 5390 0754 7034"]


@pytest.mark.parametrize(
    "text",
    ["DE89370400440532013001", "XX89370400440532013000", "DE8937040044053201300",
     "ID DE89370400440532013000X", "de89370400440532013000"],
)  # fmt: skip
def test_iban_hard_negatives(text: str) -> None:
    assert found(text, "iban") == []


# -- IP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["192.168.1.10", "10.0.0.0/8", "0.0.0.0", "255.255.255.255", "2001:db8::1",
     "fe80::1%eth0", "::1", "2001:0db8:0000:0000:0000:ff00:0042:8329", "::ffff:192.0.2.1"],
)  # fmt: skip
def test_ip_positives(address: str) -> None:
    assert found(f"from {address}.", "ip") == [address]
    assert found(in_json(address), "ip") == [address]


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4.5", "v1.2.3.4", "version 1.2.3.4", "release: 2.4.1.10", "256.1.1.1",
     "01.02.03.04", "10.0.19041.1", "12:30:45", "00:1a:2b:3c:4d:5e", "std::vector",
     "dead::beef", "1.2.3", "192.168.1.1/40"],
)  # fmt: skip
def test_ip_hard_negatives(text: str) -> None:
    assert found(text, "ip") == []


# -- hard negatives across every detector -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ORD-2024-000123",
        "PO-88412-77",
        "2024-01-15T12:30:45.123456Z",
        "1705312245",
        "550e8400-e29b-41d4-a716-446655440000",
        "4111111111111112",
        "5d41402abc4b2a76b9719d911017c592",
        "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "v2.14.3",
        "1.2.3.4.5",
        "build 4.3.2.1",
        "1234567890",
        "$1,234.56",
        "94105",
        "Alice Johnson",
    ],
)
def test_hard_negatives_stay_unmasked(text: str) -> None:
    assert detect(text) == []


def test_cards_back_to_back() -> None:
    assert found("4111 1111 1111 1111 4111 1111 1111 1111", "card") == [
        "4111 1111 1111 1111",
        "4111 1111 1111 1111",
    ]
    assert found("1234 4111 1111 1111 1111", "card") == ["4111 1111 1111 1111"]


def test_email_country_tlds_that_look_like_file_suffixes() -> None:
    assert found("juan@empresa.com.py y ana@firma.rs", "email") == [
        "juan@empresa.com.py",
        "ana@firma.rs",
    ]
