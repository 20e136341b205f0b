"""Detector triggers are necessary conditions: a cell a trigger rejects has no finding.

The scanner skips a cell (or one detector) when its trigger regex does not match, so a
trigger that is too narrow would let a value through unmasked. These tests hold every
built-in detector to that on the labelled benchmark corpus and on generated text, and
check that the scanner finds exactly what it found without triggers.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from bench.masking_corpus import generate
from jitgate.masking import BUILTIN_TYPES, build_scanner
from jitgate.masking.findings import Claims
from jitgate.masking.scanner import Scanner, builtin_detectors
from tests.unit.masking.test_properties import FUZZ, any_text, cells

DETECTORS = [
    detector for found in builtin_detectors(BUILTIN_TYPES).values() for detector in found
] + [d for d in builtin_detectors(["ssn"], bare_ssn=True)["ssn"]]
CORPUS = [cell.text for cell in generate(4000, seed=11)]


def untriggered(scanner: Scanner) -> Scanner:
    """The same scanner with its triggers off: the gates it had before them."""
    plain = Scanner(build_scanner(sorted(scanner.types))._detectors, use_triggers=False)
    assert plain._combined is None
    return plain


def assert_trigger_holds(text: str) -> None:
    for detector in DETECTORS:
        trigger = detector.trigger
        if trigger is None or trigger.search(text) is not None:
            continue
        found = list(detector.find(text, Claims()))
        assert not found, f"{type(detector).__name__} found {found} but its trigger missed"


@pytest.mark.parametrize("chunk", range(4))
def test_triggers_hold_on_the_labelled_corpus(chunk: int) -> None:
    for text in CORPUS[chunk::4]:
        assert_trigger_holds(text)


@FUZZ
@given(cells)
def test_triggers_hold_on_generated_cells(text: str) -> None:
    assert_trigger_holds(text)


SCANNER = build_scanner(BUILTIN_TYPES)
PLAIN = untriggered(SCANNER)


@FUZZ
@given(cells)
def test_scanner_finds_the_same_with_and_without_triggers(text: str) -> None:
    assert SCANNER.scan(text) == PLAIN.scan(text)


@FUZZ
@given(any_text)
def test_scanner_finds_the_same_on_any_text(text: str) -> None:
    assert SCANNER.scan(text) == PLAIN.scan(text)


def test_scanner_finds_the_same_on_the_corpus() -> None:
    for text in CORPUS:
        assert SCANNER.scan(text) == PLAIN.scan(text), text


def test_every_builtin_detector_has_a_trigger() -> None:
    """Without one, the scanner falls back to the slower per-detector gates."""
    for detector in DETECTORS:
        assert SCANNER._combined is not None
        assert detector.trigger is not None or detector.needles, type(detector).__name__
