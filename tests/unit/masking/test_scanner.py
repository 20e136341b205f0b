"""The scanner: pre-filter before any regex, priority between types, bounded time."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from jitgate.masking import BUILTIN_TYPES, build_scanner
from jitgate.masking.detectors import Detector, digit_count
from jitgate.masking.findings import Claims, Finding
from jitgate.masking.scanner import Scanner


class Spy(Detector):
    """A detector that records every cell it is asked to look at."""

    def __init__(self, min_digits: int = 0, needles: tuple[str, ...] = ()) -> None:
        self.type = "spy"
        self.min_digits = min_digits
        self.needles = needles
        self.seen: list[str] = []

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        self.seen.append(text)
        return iter(())


CLEAN = ["Alice Johnson", "pending", "Lorem ipsum dolor sit amet, consectetur adipiscing elit"]


def test_cells_without_candidate_characters_never_reach_a_detector() -> None:
    scanner = build_scanner(BUILTIN_TYPES)
    for text in CLEAN:
        assert scanner.scan(text) == []
    assert scanner.scanned == 0
    scanner.scan("call 415-555-2671")
    assert scanner.scanned == 1


def test_prefilter_runs_no_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    scanner = build_scanner(BUILTIN_TYPES)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a detector ran on a clean cell")

    for detector in scanner._detectors:
        monkeypatch.setattr(detector, "find", boom)
    for text in CLEAN:
        assert scanner.scan(text) == []


def test_detector_gates_digits_and_needles() -> None:
    digits = Spy(min_digits=3)
    needle = Spy(needles=("@",))
    scanner = Scanner([digits, needle])
    scanner.scan("ab 12 cd")
    scanner.scan("ab 123 cd")
    scanner.scan("x@y")
    assert digits.seen == ["ab 123 cd"]
    assert needle.seen == ["x@y"]


def test_a_detector_without_gates_always_runs() -> None:
    spy = Spy()
    scanner = Scanner([spy])
    scanner.scan("plain words")
    assert spy.seen == ["plain words"]
    assert scanner.scan("") == []


def test_digit_count_works_on_any_text() -> None:
    assert digit_count("a1b2 ٣") == 2  # ASCII digits only
    assert digit_count("\udcff 12") == 2  # lone surrogates from surrogateescape decoding


def test_stronger_types_claim_first() -> None:
    scanner = build_scanner(BUILTIN_TYPES)
    findings = scanner.scan("card 4111 1111 1111 1111 and jwt-less text")
    assert [(f.type, f.text) for f in findings] == [("card", "4111 1111 1111 1111")]
    iban = scanner.scan("IBAN DE89 3704 0044 0532 0130 00")
    assert [f.type for f in iban] == ["iban"]


def test_findings_are_sorted_and_do_not_overlap() -> None:
    text = "a@example.com 4111111111111111 123-45-6789 10.0.0.1 a@example.com"
    findings = build_scanner(BUILTIN_TYPES).scan(text)
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    for left, right in itertools.pairwise(findings):
        assert left.end <= right.start


def test_claims_reject_overlaps() -> None:
    claims = Claims()
    assert claims.add(Finding("a", 5, 10, "x" * 5, ""))
    assert not claims.add(Finding("b", 9, 12, "x" * 3, ""))
    assert not claims.add(Finding("b", 0, 6, "x" * 6, ""))
    assert claims.add(Finding("b", 10, 12, "xx", ""))
    assert claims.add(Finding("b", 0, 5, "x" * 5, ""))
    assert [f.start for f in claims.findings()] == [0, 5, 10]
    assert claims.between(4, 11) == [(0, 5), (5, 10), (10, 12)]


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown detector type"):
        build_scanner(["card", "passport"])


@pytest.mark.parametrize(
    "unit",
    [
        "Customer jane.doe@example.com paid 4111 1111 1111 1111 from 10.1.2.3, call "
        "(415) 555-2671; ref ORD-2024-000123 at 2024-01-15T12:30:45Z. ",
        "0123456789 " * 4,
        "@@@@ a@b " * 4,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "1.2.3.4.5.6.7.8.9." * 3,
        "password=x token: y " * 3,
    ],
)
def test_one_megabyte_cell_is_scanned_in_bounded_time(unit: str) -> None:
    text = unit * (1_000_000 // len(unit))
    started = time.perf_counter()
    build_scanner(BUILTIN_TYPES).scan(text)
    assert time.perf_counter() - started < 20


def test_phone_validation_budget_fails_closed() -> None:
    from jitgate.masking.phone import PhoneDetector

    numbers = [f"(415) 555-{n:04d}" for n in range(2000, 2300)]
    text = "; ".join(numbers)
    detector = PhoneDetector(max_windows=50)
    findings = list(detector.find(text, Claims()))
    assert [f.text for f in findings] == numbers
    assert "not validated" in findings[-1].why
    assert "country code +1" in findings[0].why


def test_one_megabyte_of_distinct_phone_numbers_is_bounded_and_fully_masked() -> None:
    from jitgate.masking import Masker

    numbers = [f"(212) {200 + n // 10000 % 700}-{n % 10000:04d}" for n in range(70_000)]
    text = "; ".join(numbers)
    started = time.perf_counter()
    result = Masker("strict").mask_text(text)
    assert time.perf_counter() - started < 30
    assert result.value is not None
    assert result.counts["phone"] == len(numbers)
    assert not any(char.isdigit() for char in result.value)
