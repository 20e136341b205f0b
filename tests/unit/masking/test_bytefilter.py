"""The byte pre-filter is a necessary condition: a cell it does not hit has no finding.

A protocol rewriter decodes only the cells a :class:`ByteFilter` hits, so a filter that is
too narrow would let a value through unmasked. Every built-in detector is held to that on
the labelled corpus and on generated text, in UTF-8 and Latin-1, with the cell's start
marked by a space as the rewriter writes it.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from bench.masking_corpus import generate
from jitgate.masking import BUILTIN_TYPES, build_scanner
from jitgate.masking.bytefilter import CLASSES, ByteFilter, byte_filter, byte_safe
from jitgate.masking.detectors import DIGITS, Detector, Trigger
from jitgate.masking.findings import Claims
from jitgate.masking.scanner import Scanner, builtin_detectors, row_filter, unescaped
from jitgate.protocols.postgres.masking import _ESCAPE_BYTES
from tests.unit.masking.test_properties import FUZZ, any_text, cells

DETECTORS = [
    detector for found in builtin_detectors(BUILTIN_TYPES).values() for detector in found
] + builtin_detectors(["ssn"], bare_ssn=True)["ssn"]
CORPUS = [cell.text for cell in generate(3000, seed=17)]


def filter_of(detector: Detector) -> ByteFilter:
    found = row_filter([Scanner([detector])])
    assert found is not None, type(detector).__name__
    return found


def hits(found: ByteFilter, raw: bytes) -> bool:
    """Whether the filter hits a cell ``raw`` (a space before it, as a rewriter writes)."""
    classes = b" " + raw.translate(CLASSES)
    if found.classes is not None and found.classes.search(classes):
        return True
    if found.literal is not None and found.literal in raw:
        return True
    return found.literals is not None and found.literals.search(raw) is not None


FOUND = [(detector, filter_of(detector)) for detector in DETECTORS]


def assert_filter_holds(text: str) -> None:
    for encoding in ("utf-8", "latin-1"):
        raw = text.encode(encoding, "replace")
        decoded = raw.decode(encoding, "replace")
        for detector, found in FOUND:
            if hits(found, raw):
                continue
            findings = list(detector.find(decoded, Claims()))
            assert not findings, f"{type(detector).__name__} found {findings}, not hit"


@pytest.mark.parametrize("chunk", range(3))
def test_the_filter_holds_on_the_labelled_corpus(chunk: int) -> None:
    for text in CORPUS[chunk::3]:
        assert_filter_holds(text)


@FUZZ
@given(cells)
def test_the_filter_holds_on_generated_cells(text: str) -> None:
    assert_filter_holds(text)


@FUZZ
@given(any_text)
def test_the_filter_holds_on_any_text(text: str) -> None:
    assert_filter_holds(text)


def test_every_builtin_scanner_has_a_filter_and_it_skips_words_and_hashes() -> None:
    found = row_filter([build_scanner(["email", "phone", "ssn", "iban", "card"])])
    assert found is not None and found.literal == b"@"
    for clean in (b"order 8f14e45fceea167a5a36dedd4bea2543 shipped", b"person 7", b"id 12345"):
        assert not hits(found, clean)
    for dirty in (b"call 415-555-2671", b"4111111111111111", b"jo@example.com",
                  b"DE89 3704 0044 0532 0130 00"):  # fmt: skip
        assert hits(found, dirty)
    assert row_filter([build_scanner(BUILTIN_TYPES)]) is not None


def test_triggers_that_do_not_hold_in_bytes_get_no_filter() -> None:
    assert byte_filter([Trigger(DIGITS, r"\d{4}")]) is None  # \d: other digits in text
    assert byte_filter([Trigger(DIGITS, "[^a]")]) is None
    assert byte_filter([Trigger(DIGITS, "(?=x)")]) is None
    assert byte_filter([Trigger("é")]) is None
    assert byte_safe(r"[0-9]{3}[ -]?(?:\.[0-9]|x)+") and not byte_safe(".")


def test_class_patterns_and_literals() -> None:
    found = byte_filter([Trigger(DIGITS, "[0-9]{3}[ -]?[0-9]{4}", (r"\w",))])
    assert found is not None and found.classes is not None
    assert found.classes.pattern == rb" 00{3}\ ?0{4}"
    needles = byte_filter([Trigger("e", "yJ"), Trigger("-", r"\-\-\-\-BEGIN")])
    assert needles is not None and needles.literals is not None and needles.classes is None
    assert needles.literals.search(b"x-----BEGIN") and not needles.literals.search(b"eyj")


def blanked_hits(found: ByteFilter, raw: bytes) -> bool:
    """:func:`hits`, or a hit once escapes are blanked in the class string, as the
    PostgreSQL rewriter searches a row that holds a backslash."""
    if hits(found, raw):
        return True
    view = bytearray(b" " + raw.translate(CLASSES))
    for escape in _ESCAPE_BYTES.finditer(raw):
        view[escape.start() + 1 : escape.end() + 1] = b" " * (escape.end() - escape.start())
    return found.classes is not None and found.classes.search(view) is not None


@pytest.mark.parametrize(
    "text",
    [
        *[cell for cell in CORPUS if "\\" in cell][:400],
        '{"a": "x\\n4111111111111111"}',
        "note\\tbob@example.com",
        "\\u00e9123-45-6789",
    ],
)
def test_the_filter_holds_after_escapes(text: str) -> None:
    """The scanner reads values after ``\\n``, ``\\t``… (escapes blanked): so does the filter."""
    raw = text.encode()
    for detector, found in FOUND:
        if blanked_hits(found, raw):
            continue
        findings = list(detector.find(unescaped(text), Claims()))
        assert not findings, f"{type(detector).__name__} found {findings}, not hit"
