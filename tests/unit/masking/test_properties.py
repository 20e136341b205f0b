"""Property tests: any text is masked without raising, masking is idempotent, no card leaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from unittest.mock import patch

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.masking import BUILTIN_TYPES, Masker, build_scanner, load_profile
from jitgate.masking.masker import _JSON_STRING
from jitgate.masking.phone import PhoneDetector
from jitgate.masking.scanner import Scanner
from jitgate.masking.strategies import hash_token, normalize

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = b"property-test-key"

VALUES = [
    "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011111111111117",
    "john.doe@example.com", "josé@exämple.de", "123-45-6789", "078-05-1120", "(415) 555-2671",
    "+44 20 7946 0958", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "10.1.2.3",
    "2001:db8::1", "AKIAIOSFODNN7EXAMPLE", "password=hunter2", "Authorization: Bearer abc123XYZ",
    "ghp_" + "a1B2" * 9, "ORD-2024-000123", "2024-01-15T12:30:45Z", "1.2.3.4.5",
    "4111111111111112", "550e8400-e29b-41d4-a716-446655440000", "v1.2.3", "icon@2x.png",
    "5d41402abc4b2a76b9719d911017c592", "1234567890",
]  # fmt: skip
SEPARATORS = [
    " ",
    ", ",
    "; ",
    "\n",
    " | ",
    '", "',
    "=",
    ":",
    "/",
    "-",
    "",
    "  ",
    "(",
    ".",
    "+",
    "@",
    "#",
]

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
fragments = st.one_of(
    st.sampled_from(VALUES),
    st.text(alphabet="0123456789 -.@:+()abcxyzAKIA_=", max_size=24),
    st.text(max_size=12),
)
assembled = st.lists(st.tuples(fragments, st.sampled_from(SEPARATORS)), max_size=8).map(
    lambda parts: "".join(fragment + separator for fragment, separator in parts)
)
cells = st.one_of(any_text, assembled, assembled.map(lambda text: json.dumps({"note": text})))


def masker(strategy: str) -> Masker:
    profile = {"name": strategy, "rules": [{"types": ["*"], "strategy": strategy}]}
    return Masker(load_profile(profile), key=KEY)


MASKERS = {strategy: masker(strategy) for strategy in ("redact", "partial", "hash")}
SCANNER = build_scanner(BUILTIN_TYPES)


@FUZZ
@given(any_text, st.sampled_from(["text", "numeric", "other"]))
def test_any_text_is_masked_without_raising(text: str, type_class: str) -> None:
    for current in (*MASKERS.values(), Masker("strict"), Masker("pii")):
        result = current.mask_text(text, column="note", table="t", type_class=type_class)
        assert result.value is None or isinstance(result.value, str)
        current.explain(text)


@FUZZ
@given(cells, st.sampled_from(sorted(MASKERS)))
def test_masking_is_idempotent(text: str, strategy: str) -> None:
    current = MASKERS[strategy]
    once = current.mask_text(text).value
    assert once is not None
    again = current.mask_text(once).value
    assert again == once
    assert len(again) <= max(len(once), len(text))


@FUZZ
@given(cells)
def test_masked_output_contains_no_card_number(text: str) -> None:
    found = [f for f in SCANNER.scan(text) if f.type == "card"]
    rest = text
    for finding in found:  # what is left of the text once the detected cards are cut out
        rest = rest[: finding.start] + "\0" * len(finding.text) + rest[finding.end :]
    for strategy, current in MASKERS.items():
        output = current.mask_text(text).value
        assert output is not None
        assert not [f for f in SCANNER.scan(output) if f.type == "card"], strategy
        for finding in found:
            if finding.text not in rest:  # e.g. "…1111 11110" holds one without being one
                assert finding.text not in output, strategy


# Cells that are, or nearly are, one e-mail address: the masker's fast path (Scanner.whole).
EMAILS = [
    "john.doe@example.com", "josé@exämple.de", "a@b.co", "icon@2x.png", "x@y.json", "A.B@C.DE",
    "a..b@example.com", "a@b.c", "a@-b.com", "_a@b.com", "a@b.com.", "a@b.co_", "a@b.xn--p1ai",
    "o'neil@ex.org", "+1@x.io", "a%b@x.io", "x" * 64 + "@e.com", "x" * 65 + "@e.com",
    "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com", "DE89370400440532013000@e.com",
    "4111111111111111@e.com", "AKIAIOSFODNN7EXAMPLE@e.com", "ghp_" + "a1B2" * 9 + "@e.com",
    "123-45-6789@e.com", "a@e.Png", "a@١٢.com", "user12345@example.com", "a@e.c0m",
]  # fmt: skip
email_like = st.one_of(
    st.sampled_from(EMAILS),
    st.builds(
        "{}@{}{}".format,
        st.text(alphabet="ab9_%+-.'é\\ @", max_size=70),
        st.text(alphabet="ab9_-.é١@", max_size=70),
        st.sampled_from([".com", ".de", ".png", ".xn--p1ai", ".c0m", ".a", "", "."]),
    ),
)
near_whole = st.one_of(
    email_like,
    st.tuples(email_like, st.sampled_from(SEPARATORS), fragments).map("".join),
    st.tuples(fragments, st.sampled_from(SEPARATORS), email_like).map("".join),
    cells,
)
WHOLE_MASKERS = {
    **MASKERS,
    "null": masker("null"),
    "pii": Masker("pii"),
    "strict": Masker("strict", key=KEY),
    "custom": Masker(
        load_profile(
            {
                "name": "custom",
                "detectors": [{"name": "employee", "pattern": "[0-9]{3}@e"}],
                "rules": [{"types": ["employee", "email", "secret"], "strategy": "hash"}],
            }
        ),
        key=KEY,
    ),
}


def assert_whole_cell_as_scanned(text: str, type_class: str, nullable: bool) -> None:
    """The fast path (Scanner.whole) claims only what a scan finds, and masks the same."""
    for name, current in WHOLE_MASKERS.items():
        scanner = current._unscoped.scanner
        kind = scanner.whole(text)
        if kind is not None:
            found = [f[:4] for f in scanner.scan_candidate(text)]
            assert found == [(kind, 0, len(text), text)], name
        fast = current.mask_text(text, type_class=type_class, nullable=nullable)
        with patch.object(Scanner, "whole", lambda self, text: None):
            scanned = current.mask_text(text, type_class=type_class, nullable=nullable)
        assert fast == scanned, name


@FUZZ
@given(near_whole, st.sampled_from(["text", "json", "numeric"]), st.booleans())
def test_the_whole_cell_fast_path_finds_and_masks_as_the_scan_does(
    text: str, type_class: str, nullable: bool
) -> None:
    assert_whole_cell_as_scanned(text, type_class, nullable)


@pytest.mark.parametrize("text", EMAILS)
def test_each_e_mail_like_cell_is_masked_as_the_scan_does(text: str) -> None:
    assert_whole_cell_as_scanned(text, "text", True)
    assert_whole_cell_as_scanned(text, "text", False)


def test_the_fast_path_takes_a_whole_e_mail_cell() -> None:
    scanner = Masker("pii")._unscoped.scanner
    assert scanner.whole("john.doe@example.com") == "email"
    assert scanner.whole("john.doe@example.com ") is None
    assert scanner.whole("icon@2x.png") is None


@FUZZ
@given(st.binary(min_size=1, max_size=80), st.sampled_from(["email", "card", "secret"]), any_text)
def test_a_hash_token_is_the_base32_of_the_keyed_hmac(key: bytes, kind: str, text: str) -> None:
    value = normalize(kind, text).encode("utf-8", "surrogatepass")
    digest = hmac.new(key, value, hashlib.sha256).digest()[:10]
    assert hash_token(key, kind, text) == "tok_" + base64.b32encode(digest).decode().lower()


# Phone numbers of many countries as people write them, and digit runs around them.
PHONE_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
PHONE_FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
]


@st.composite
def phone_like(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(PHONE_REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        return draw(st.text(alphabet="0123456789 -.+", min_size=7, max_size=20))
    national = str(example.national_number)
    tail = draw(st.text(alphabet="0123456789", min_size=0, max_size=min(4, len(national))))
    national = national[: len(national) - len(tail)] + tail
    number = phonenumbers.parse(f"+{example.country_code}{national}")
    text = phonenumbers.format_number(number, draw(st.sampled_from(PHONE_FORMATS)))
    return text.replace(" ", draw(st.sampled_from([" ", "-", ".", "", "  "])))


phone_glue = st.sampled_from(["", " ", "-", ".", "978-", "INV-", "x", "#", "1-", "(", "+", ". "])
phone_cells = st.lists(
    st.one_of(
        st.tuples(phone_glue, phone_like(), phone_glue).map("".join),
        st.text(alphabet="0123456789 -.+()x", max_size=24),
        st.sampled_from(VALUES),
        # Country code and digit pattern fine, yet not valid numbers.
        st.sampled_from(["+4949788396936", "+49 4940 6594025", "+49-4949-303736"]),
    ),
    min_size=1,
    max_size=4,
).map(" ".join)


@FUZZ
@given(phone_cells, st.sampled_from(["US", "GB", "DE", "IN", "BR", "JP"]))
def test_phone_shortcuts_find_what_the_library_matcher_finds(text: str, region: str) -> None:
    """Windows decided without the matcher (glued digit groups, a whole ``+`` number) give
    the findings the matcher gives; fresh scanners, so no cached window is shared."""
    for types in (["phone"], BUILTIN_TYPES):
        fast = build_scanner(types, region=region).scan(text)
        with (
            patch.object(PhoneDetector, "_all_glued", lambda *args: False),
            patch.object(PhoneDetector, "_whole_international", lambda self, window: None),
        ):
            general = build_scanner(types, region=region).scan(text)
        assert fast == general


@FUZZ
@given(st.one_of(cells, st.text(alphabet='"\\au \n\x01é{}:', max_size=40)))
def test_json_string_literals_are_found_as_the_plain_pattern_finds_them(text: str) -> None:
    """The unrolled pattern (runs of plain characters between escapes) is the plain one."""
    plain = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"')
    assert [m.span() for m in _JSON_STRING.finditer(text)] == [
        m.span() for m in plain.finditer(text)
    ]
