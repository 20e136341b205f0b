"""Operator-defined detectors: a regex with a named validator, or a word list."""

from __future__ import annotations

import pytest

from jitgate.masking.custom import RegexDetector, WordListDetector
from jitgate.masking.findings import Claims


def texts(detector: RegexDetector | WordListDetector, text: str) -> list[str]:
    return [f.text for f in detector.find(text, Claims())]


def test_regex_with_validator() -> None:
    detector = RegexDetector("loyalty", r"\bL-\d{16}\b", validator="luhn")
    assert texts(detector, "ids L-4111111111111111 and L-4111111111111112") == [
        "L-4111111111111111"
    ]


def test_regex_value_group_reports_only_the_value() -> None:
    detector = RegexDetector("employee", r"emp=(?P<value>E\d{6})")
    findings = list(detector.find("x emp=E123456 y", Claims()))
    assert [(f.text, f.start, f.end, f.type) for f in findings] == [("E123456", 6, 13, "employee")]


def test_regex_ignore_case_and_unknown_validator() -> None:
    assert texts(RegexDetector("code", r"proj-\w+", ignore_case=True), "PROJ-Apollo") == [
        "PROJ-Apollo"
    ]
    with pytest.raises(ValueError, match="unknown validator"):
        RegexDetector("x", r"\d+", validator="nope")


def test_word_list_is_case_insensitive_whole_words() -> None:
    detector = WordListDetector("codename", ["Bluebird", "night jar"])
    assert texts(detector, "BLUEBIRD and Night Jar, not bluebirds or nightjar") == [
        "BLUEBIRD",
        "Night Jar",
    ]


def test_word_list_keeps_offsets_when_lowercasing_changes_length() -> None:
    detector = WordListDetector("codename", ["bluebird"])
    text = "İstanbul bluebird"  # "İ".lower() is two characters long
    [finding] = detector.find(text, Claims())
    assert text[finding.start : finding.end] == "bluebird"


def test_word_list_needs_words() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WordListDetector("empty", [" ", ""])
