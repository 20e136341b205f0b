"""Runs a set of detectors over one cell: cheap pre-filter first, then priority order.

Theory of operation. Most cells of a result hold nothing sensitive (names, statuses,
amounts), so the first thing :meth:`Scanner.scan` does is decide whether *any* detector
could match, in two steps. First the gates: one ``bytes.translate`` pass counts digits and
trigger punctuation, and a few ``in`` tests look for needles (``eyJ``, ``Bearer``…); a cell
with none of them — most text — is answered without any regex. A cell that passes meets
the *triggers* (:class:`~.detectors.Trigger`): small shapes every cell with one of a
detector's findings matches (four digits, an optional separator and four more, not glued
to a word, for cards; ``@`` for e-mail; a needle for secrets…). The scanner joins them into
one regex that starts with a single character class — the characters any trigger can start
with — so ``re`` skips in C to the next digit, ``@`` or capital letter, and there the
look-behind the digit-led triggers share ("not right after a letter, a digit or a dot")
turns away digits inside words, numbers and hashes at once. A scanner with a detector that
has no trigger (an operator-defined one, say) keeps the gates only.

:func:`row_filter` turns the same triggers into a :class:`~.bytefilter.ByteFilter`: a
protocol rewriter runs it over a whole row's raw bytes and decodes only the cells it hits.

Then each detector whose gates and trigger pass runs, strongest type first (see
:data:`PRIORITY`); a finding that overlaps one already claimed is dropped, so a card
number is never also reported as a phone number and a JWT never yields digits for others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from jitgate.masking.bytefilter import ByteFilter, byte_filter
from jitgate.masking.detectors import (
    CardDetector,
    Detector,
    EmailDetector,
    IbanDetector,
    SsnDetector,
    Trigger,
    char_class,
    compile_trigger,
    context,
    digit_count,
    needle_triggers,
)
from jitgate.masking.findings import Claims, Finding
from jitgate.masking.network import Ipv4Detector, Ipv6Detector
from jitgate.masking.phone import PhoneDetector
from jitgate.masking.secret_detectors import secret_detectors

BUILTIN_TYPES: tuple[str, ...] = ("card", "email", "ssn", "phone", "iban", "ip", "secret")
"""Detector types that exist without configuration."""

PRIORITY: tuple[str, ...] = ("secret", "iban", "card", "email", "ssn", "ip", "phone")
"""Built-in types, strongest first; custom detectors run right after ``secret``."""


_Step = tuple[
    int,  # min_digits
    Callable[[str], "re.Match[str] | None"] | None,  # the trigger's search
    tuple[str, ...],  # needles (one must occur)
    Callable[[str, Claims], Iterator[Finding]],  # find
    bool,  # runs over the text as it is too, before the copy with escapes blanked
]

_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|.)", re.DOTALL)


def unescaped(text: str) -> str:
    """``text`` with each backslash escape (``\\n``, ``\\t``, ``\\"``, ``\\u00e9``…, as
    JSON, string literals and logs write them) replaced by as many spaces: same offsets,
    and ``x\\n4111…`` no longer reads as a word glued to the number."""
    return _ESCAPE.sub(_blank, text)


def _blank(match: re.Match[str]) -> str:
    return " " * (match.end() - match.start())


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
        "_shapes",
        "_steps",
        "_triggers",
        "_whole",
        "scanned",
        "types",
    )

    def __init__(self, detectors: Sequence[Detector], *, use_triggers: bool = True) -> None:
        """``use_triggers=False`` leaves the triggers out (only the gates: for tests)."""
        self._detectors = tuple(detectors)
        shapes = [_triggers_of(d) if use_triggers else () for d in self._detectors]
        self._detector_triggers = tuple(compile_trigger(t) if t else None for t in shapes)
        # Per detector, what scan_candidate does: its gates, its trigger, its find. A
        # trigger of plain strings is looked for with ``in`` (faster than a regex).
        steps: list[_Step] = []
        for detector, found, trigger in zip(
            self._detectors, shapes, self._detector_triggers, strict=True
        ):
            plain = [t.literal() for t in found]
            raw = detector.raw_too
            if found and all(plain):
                strings = tuple(p for p in plain if p is not None)
                steps.append((detector.min_digits, None, strings, detector.find, raw))
            else:
                search = trigger.search if trigger is not None else None
                steps.append((detector.min_digits, search, detector.needles, detector.find, raw))
        self._steps: tuple[_Step, ...] = tuple(steps)
        self._whole = _whole_cell(self._detectors, self._steps)
        # One regex for "could any detector match?" when every detector has a trigger:
        # a single pass in C instead of a gate per detector in Python.
        self._combined: re.Pattern[str] | None = None
        self._shapes: tuple[Trigger, ...] | None = None  # every detector's, if all have some
        if self._detectors and all(shapes):
            self._shapes = tuple(t for found in shapes for t in found)
            self._combined = re.compile(joined_trigger(self._shapes))
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
        """The pre-filter: whether any detector's gates and trigger may pass for ``text``.

        First the gates: one byte pass counts digits and trigger punctuation
        (``@ : = _ -``); failing that, a few literal ``in`` tests (``eyJ``, ``Bearer``,
        ``AKIA``…). Then, when every detector has triggers, one search of their joined
        regex.
        """
        if self._always:
            return True
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw.translate(None, self._triggers)) == len(raw):
            for literal in self._literals:
                if literal in text:
                    break
            else:
                return False  # the common case: words, no digit, no needle
        combined = self._combined
        if combined is None or combined.search(text) is not None:
            return True
        return "\\" in text and combined.search(unescaped(text)) is not None

    def scan(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, sorted by start offset."""
        if not text or not self.could_match(text):
            return []
        return self.scan_candidate(text)

    def whole(self, text: str) -> str | None:
        """The type of the one finding :meth:`scan_candidate` gives when ``text`` is, whole,
        one value of the first detector that can tell so cheaply (an e-mail address in an
        e-mail column), told without scanning; ``None``: not known, scan the cell.

        The same findings as the scan, by construction: that detector's first finding is
        all of the text, so it is claimed unless a stronger detector claimed something
        first — and here no stronger detector's gates and trigger pass, so none runs —
        and every weaker detector's findings (never empty) overlap it and are dropped. A text with a
        backslash is left to the scan (escapes are read differently there)."""
        whole = self._whole
        if whole is None or not whole[1](text) or "\\" in text:
            return None
        kind, _spans_whole, stronger, min_digits = whole
        digits = digit_count(text) if min_digits else 0
        for needed, search, needles, _find, _raw_too in stronger:
            if digits < needed:
                continue
            if search is not None:
                if search(text) is None:
                    continue
            elif needles and not _any_in(needles, text):
                continue
            return None  # it would run: scan
        self.scanned += 1
        return kind

    def scan_candidate(self, text: str) -> list[Finding]:
        """:meth:`scan` for a cell that already passed :meth:`could_match`."""
        self.scanned += 1
        if "\\" in text:
            return self._scan_escaped(text)
        # The common case, no escapes: one text, the digits counted once, no tuples made.
        digits = digit_count(text)
        claims = None  # made when a detector first runs
        for min_digits, search, needles, find, _raw_too in self._steps:
            if digits < min_digits:
                continue
            if search is not None:
                if search(text) is None:
                    continue
            elif needles and not _any_in(needles, text):
                continue
            if claims is None:
                claims = Claims()
            for finding in find(text, claims):
                claims.add(finding)
        return [] if claims is None else claims.findings()

    def _scan_escaped(self, text: str) -> list[Finding]:
        """:meth:`scan_candidate` for a cell with backslash escapes: detectors run over the
        copy with escapes blanked (and those that read escapes, over the text too)."""
        digits = -1  # counted when a detector first asks
        claims = None  # made when a detector first runs
        view = unescaped(text)
        for min_digits, search, needles, find, raw_too in self._steps:
            if min_digits:
                if digits < 0:
                    digits = digit_count(text)
                if digits < min_digits:
                    continue
            for seen in (text, view) if raw_too else (view,):
                if search is not None:
                    if search(seen) is None:
                        continue
                elif needles and not _any_in(needles, seen):
                    continue
                if claims is None:
                    claims = Claims()
                for finding in find(seen, claims):
                    if seen is not text and finding.text != text[finding.start : finding.end]:
                        finding = finding._replace(text=text[finding.start : finding.end])
                    claims.add(finding)
        return [] if claims is None else claims.findings()


_Whole = tuple[
    str,  # the detector's type
    Callable[[str], bool],  # its spans_whole
    tuple[_Step, ...],  # the stronger detectors' steps
    int,  # the fewest digits one of those needs (0: none counts digits)
]


def _whole_cell(detectors: Sequence[Detector], steps: Sequence[_Step]) -> _Whole | None:
    """What :meth:`Scanner.whole` needs: the first detector that has a ``spans_whole`` and
    the steps before it (``None``: no detector has one)."""
    for index, detector in enumerate(detectors):
        if type(detector).spans_whole is not Detector.spans_whole:
            stronger = tuple(steps[:index])
            least = min((step[0] for step in stronger if step[0]), default=0)
            return detector.type, detector.spans_whole, stronger, least
    return None


def row_filter(scanners: Iterable[Scanner]) -> ByteFilter | None:
    """One :class:`~.bytefilter.ByteFilter` for the triggers of several scanners (``None``:
    one has a detector without triggers, or a trigger that does not hold in bytes)."""
    shapes: dict[Trigger, None] = {}
    for scanner in scanners:
        if scanner._shapes is None:
            return None
        shapes.update(dict.fromkeys(scanner._shapes))
    return byte_filter(shapes) if shapes else None


def _triggers_of(detector: Detector) -> tuple[Trigger, ...]:
    """The detector's triggers: its own, or its needles (empty: it has neither)."""
    return detector.triggers or needle_triggers(detector.needles)


def joined_trigger(triggers: Sequence[Trigger]) -> str:
    """One regex for "any of ``triggers``", led by the class of all their first characters.

    ``re`` jumps in C to a character of that class; then, grouped by first character
    (a look-behind on the character just read), the look-behind the group's triggers share
    — for the digit-led ones "not right after a letter, a digit or a dot", which most
    digits inside words, numbers and hashes fail at once — and each trigger's own
    look-behind and rest.
    """
    groups: dict[str, list[Trigger]] = {}
    for trigger in dict.fromkeys(triggers):
        groups.setdefault(char_class(trigger.first), []).append(trigger)
    branches = []
    for first, members in groups.items():
        shared = tuple(
            item
            for item in members[0].not_after
            if all(item in other.not_after for other in members[1:])
        )
        rests = [(t.behind if t.not_after != shared else "") + t.rest for t in members]
        alternatives = rests[0] if len(rests) == 1 else "(?:" + "|".join(rests) + ")"
        branches.append(f"(?<={first}){context(members[0].first, shared)}{alternatives}")
    firsts = "".join(t.first for t in triggers)
    return char_class(firsts) + "(?:" + "|".join(branches) + ")"


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
