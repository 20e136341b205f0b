"""Runs a set of detectors over one cell: cheap pre-filter first, then priority order.

Theory of operation. Most cells of a result hold nothing sensitive (names, statuses,
amounts), so the first thing :meth:`Scanner.scan` does is decide whether *any* detector
could match, in two steps. First the gates: one ``bytes.translate`` pass counts digits and
trigger punctuation, and a few ``in`` tests look for needles (``eyJ``, ``Bearer``…); a
cell with none of them — most text — is answered in a few hundred nanoseconds. A cell that
passes meets the *triggers*: each built-in detector has a small regex that every cell with
one of its findings matches (four digits, an optional separator and four more for cards;
``@`` for e-mail; a needle for secrets…), and the scanner joins them into one alternation,
a single search in C that turns away the many cells that merely hold a number (ids,
amounts, hashes). ``re`` tries every alternative at every position, so cells longer than
:data:`_COMBINED_MAX` skip the joined search and go on to the detectors' own triggers.
A scanner with a detector that has no trigger (an operator-defined one, say) keeps the
gates only.

Then each detector whose gates and trigger pass runs, strongest type first (see
:data:`PRIORITY`); a finding that overlaps one already claimed is dropped, so a card
number is never also reported as a phone number and a JWT never yields digits for others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from jitgate.masking.detectors import (
    CardDetector,
    Detector,
    EmailDetector,
    IbanDetector,
    SsnDetector,
    digit_count,
)
from jitgate.masking.findings import Claims, Finding
from jitgate.masking.network import Ipv4Detector, Ipv6Detector
from jitgate.masking.phone import PhoneDetector
from jitgate.masking.secret_detectors import secret_detectors

BUILTIN_TYPES: tuple[str, ...] = ("card", "email", "ssn", "phone", "iban", "ip", "secret")
"""Detector types that exist without configuration."""

PRIORITY: tuple[str, ...] = ("secret", "iban", "card", "email", "ssn", "ip", "phone")
"""Built-in types, strongest first; custom detectors run right after ``secret``."""


_COMBINED_MAX = 512
"""Longest cell the joined trigger regex is tried on: ``re`` tries every alternative at
every position, so on long text the detectors' own triggers (each a single pattern that
``re`` scans for quickly) do better."""

_TRIGGER_PUNCTUATION = "@:=_-"
"""Needle characters checked in the same byte pass as digits."""
_DIGITS = b"0123456789"


class Scanner:
    """A fixed, ordered set of detectors applied to cells.

    ``scanned`` counts the cells that got past the pre-filter (for tests and metrics).
    """

    __slots__ = (
        "_always",
        "_combined",
        "_detector_triggers",
        "_detectors",
        "_literals",
        "_triggers",
        "scanned",
        "types",
    )

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = tuple(detectors)
        self._detector_triggers = tuple(_trigger_of(d) for d in self._detectors)
        # One regex for "could any detector match?" when every detector has a trigger:
        # a single pass in C instead of a gate per detector in Python.
        self._combined: re.Pattern[str] | None = None
        if self._detectors and all(t is not None for t in self._detector_triggers):
            self._combined = re.compile(
                "|".join(f"(?:{t.pattern})" for t in self._detector_triggers if t is not None)
            )
        self.types = frozenset(detector.type for detector in self._detectors)
        self.scanned = 0
        self._always = any(not d.min_digits and not d.needles for d in self._detectors)
        triggers: set[str] = set()
        literals: set[str] = set()
        if any(d.min_digits for d in self._detectors):
            triggers.update(_DIGITS.decode())
        for detector in self._detectors:
            if detector.min_digits:
                continue  # no digit, no run: covered by the digit triggers
            for needle in detector.needles:
                punctuation = [char for char in needle if char in _TRIGGER_PUNCTUATION]
                if punctuation:
                    triggers.add(punctuation[0])
                else:
                    literals.add(needle)
        self._triggers = "".join(sorted(triggers)).encode()
        # A literal containing a shorter one adds nothing to an "any present" test.
        self._literals = tuple(
            sorted(n for n in literals if not any(o != n and o in n for o in literals))
        )

    def could_match(self, text: str) -> bool:
        """The pre-filter: whether any detector's cheap gate may pass for ``text``.

        One byte pass counts digits and trigger punctuation (``@ : = _ -``); failing
        that, a few literal ``in`` tests (``eyJ``, ``Bearer``, ``AKIA``…).
        """
        if self._always:
            return True
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw.translate(None, self._triggers)) != len(raw):
            combined = self._combined
            return combined is None or len(text) > _COMBINED_MAX or bool(combined.search(text))
        for literal in self._literals:
            if literal in text:
                combined = self._combined
                return combined is None or len(text) > _COMBINED_MAX or bool(combined.search(text))
        return False

    def scan(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, sorted by start offset."""
        if not text or not self.could_match(text):
            return []
        return self.scan_candidate(text)

    def scan_candidate(self, text: str) -> list[Finding]:
        """:meth:`scan` for a cell that already passed :meth:`could_match`."""
        self.scanned += 1
        digits = digit_count(text)
        claims = Claims()
        for detector, trigger in zip(self._detectors, self._detector_triggers, strict=True):
            if digits < detector.min_digits:
                continue
            if trigger is not None:
                if trigger.search(text) is None:
                    continue
            elif detector.needles and not _any_in(detector.needles, text):
                continue
            for finding in detector.find(text, claims):
                claims.add(finding)
        return claims.findings()


def _trigger_of(detector: Detector) -> re.Pattern[str] | None:
    """The detector's necessary-condition regex: its own, or one of its needles."""
    if detector.trigger is not None:
        return detector.trigger
    if detector.needles:
        return re.compile("|".join(re.escape(needle) for needle in detector.needles))
    return None


def _any_in(needles: tuple[str, ...], text: str) -> bool:
    for needle in needles:  # noqa: SIM110 - a plain loop beats any() + generator
        if needle in text:
            return True
    return False


def builtin_detectors(
    types: Iterable[str], *, region: str = "US", bare_ssn: bool = False
) -> dict[str, list[Detector]]:
    """Fresh built-in detectors for ``types``, keyed by type."""
    wanted = set(types)
    unknown = wanted - set(BUILTIN_TYPES)
    if unknown:
        raise ValueError(f"unknown detector type(s): {', '.join(sorted(unknown))}")
    factories: dict[str, list[Detector]] = {
        "card": [CardDetector()] if "card" in wanted else [],
        "email": [EmailDetector()] if "email" in wanted else [],
        "ssn": [SsnDetector(bare=bare_ssn)] if "ssn" in wanted else [],
        "phone": [PhoneDetector(region)] if "phone" in wanted else [],
        "iban": [IbanDetector()] if "iban" in wanted else [],
        "ip": [Ipv6Detector(), Ipv4Detector()] if "ip" in wanted else [],
        "secret": list(secret_detectors()) if "secret" in wanted else [],
    }
    return {kind: found for kind, found in factories.items() if found}


def build_scanner(
    types: Iterable[str],
    *,
    region: str = "US",
    bare_ssn: bool = False,
    custom: Mapping[str, Detector] | None = None,
) -> Scanner:
    """A scanner for ``types`` (built-in names or keys of ``custom``), in priority order."""
    custom = custom or {}
    wanted = list(dict.fromkeys(types))
    builtin = builtin_detectors(
        [t for t in wanted if t not in custom], region=region, bare_ssn=bare_ssn
    )
    ordered: list[Detector] = list(builtin.get("secret", []))
    ordered += [custom[t] for t in wanted if t in custom]
    for kind in PRIORITY[1:]:
        ordered += builtin.get(kind, [])
    return Scanner(ordered)


def detect(text: str, types: Iterable[str] = BUILTIN_TYPES, *, region: str = "US") -> list[Finding]:
    """One-off detection with built-in detectors (builds a scanner; reuse one in loops)."""
    return build_scanner(types, region=region).scan(text)
