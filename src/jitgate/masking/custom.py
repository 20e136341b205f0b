"""Operator-defined detectors: a regex with an optional named validator, or a word list.

Custom detectors have no cheap gate (an arbitrary regex may match anything), so each
one adds a full regex pass to every cell its rules cover; keep them few and anchored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from jitgate.masking.detectors import Detector
from jitgate.masking.findings import Claims, Finding
from jitgate.masking.validators import VALIDATORS


class RegexDetector(Detector):
    """Matches of an operator's regex, kept when the named validator accepts them.

    With a ``value`` named group only that group is reported (``emp=(?P<value>E\\d{6})``).
    """

    def __init__(
        self,
        type: str,
        pattern: str,
        *,
        validator: str | None = None,
        ignore_case: bool = False,
    ) -> None:
        self.type = type
        self._pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        self._validator_name = validator
        self._validator: Callable[[str], bool] | None = None
        if validator is not None:
            if validator not in VALIDATORS:
                known = ", ".join(sorted(VALIDATORS))
                raise ValueError(f"unknown validator {validator!r} (known: {known})")
            self._validator = VALIDATORS[validator]
        self._group: str | int = "value" if "value" in self._pattern.groupindex else 0

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            value = match.group(self._group)
            if not value:
                continue
            if self._validator is not None and not self._validator(value):
                continue
            start, end = match.span(self._group)
            why = f"pattern {self.type}"
            if self._validator_name:
                why += f", {self._validator_name} ok"
            yield Finding(self.type, start, end, value, why)


class WordListDetector(Detector):
    """Whole words (or phrases) from a list, matched case-insensitively."""

    def __init__(self, type: str, words: Iterable[str]) -> None:
        self.type = type
        cleaned = sorted({word.strip().lower() for word in words if word.strip()}, key=len)
        if not cleaned:
            raise ValueError("a word list needs at least one word")
        alternation = "|".join(re.escape(word) for word in reversed(cleaned))
        self._lowered = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")
        self._folding = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)

    def find(self, text: str, claims: Claims) -> Iterator[Finding]:
        lowered = text.lower()
        # Case-insensitive alternations are slow; search a lower-cased copy when offsets agree.
        if len(lowered) == len(text):
            matches = self._lowered.finditer(lowered)
        else:
            matches = self._folding.finditer(text)
        for match in matches:
            start, end = match.span()
            yield Finding(self.type, start, end, text[start:end], f"word list {self.type}")
