"""What detection produces: typed spans of a cell, and the set of spans already claimed.

A :class:`Finding` is one sensitive value found inside a cell: its detector type
(``card``, ``email``, ``secret``, a custom name…), its ``[start, end)`` span in the cell's
text, the matched text and a short human reason (``"Luhn ok, IIN Visa"``) for operator
tooling. :class:`Claims` is the ordered set of non-overlapping findings accepted so far
while one cell is scanned, so that a lower-priority detector never re-reports a value a
stronger one already took.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple


class Span(NamedTuple):
    """A typed ``[start, end)`` range of a cell's text."""

    start: int
    end: int
    type: str


class Finding(NamedTuple):
    """One sensitive value inside a cell, with the reason it was judged sensitive.

    A named tuple rather than a frozen dataclass: detectors create one per value on the
    hot path, and tuples are several times cheaper to build.
    """

    type: str
    start: int
    end: int
    text: str
    why: str

    @property
    def span(self) -> Span:
        return Span(self.start, self.end, self.type)


class Claims:
    """Non-overlapping findings of one cell, kept sorted by start offset."""

    __slots__ = ("_ends", "_findings", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._findings: list[Finding] = []

    def overlaps(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` intersects a claimed span."""
        index = bisect_right(self._starts, start)
        if index and self._ends[index - 1] > start:
            return True
        return index < len(self._starts) and self._starts[index] < end

    def covers(self, start: int, end: int) -> bool:
        """Whether one claimed span holds all of ``[start, end)``."""
        index = bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end

    def add(self, finding: Finding) -> bool:
        """Claim ``finding`` unless it overlaps an earlier claim; tell whether it was taken."""
        if not self._findings:  # the first claim of a cell (the common case)
            self._starts.append(finding.start)
            self._ends.append(finding.end)
            self._findings.append(finding)
            return True
        if self.overlaps(finding.start, finding.end):
            return False
        index = bisect_right(self._starts, finding.start)
        self._starts.insert(index, finding.start)
        self._ends.insert(index, finding.end)
        self._findings.insert(index, finding)
        return True

    def between(self, start: int, end: int) -> list[tuple[int, int]]:
        """Claimed spans that intersect ``[start, end)``, in order."""
        index = bisect_right(self._starts, start)
        if index and self._ends[index - 1] > start:
            index -= 1
        spans = []
        while index < len(self._starts) and self._starts[index] < end:
            spans.append((self._starts[index], self._ends[index]))
            index += 1
        return spans

    def findings(self) -> list[Finding]:
        return list(self._findings)

    def __len__(self) -> int:
        return len(self._findings)
