"""The cell masker protocol rewriters call for every result cell that may need masking.

A :class:`Masker` is built once per session from the mask profile that policy chose.
For each result shape (PostgreSQL RowDescription, MySQL column definitions) the rewriter
asks for a :class:`RowPlan`; the plan resolves column rules once, so per row only the
columns that can need masking are touched, and a row whose plan is empty passes through
untouched. Cells are ``str`` (the rewriter decodes them) and ``None`` is SQL NULL, both
on the way in and on the way out.

``counts`` is a per-masker :class:`~collections.Counter` of masked values by type, read by
the session recorder; :meth:`Masker.explain` backs the operator tool ``jitgate mask test``.
"""

from __future__ import annotations

import json
import re
import secrets
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from jitgate.masking.findings import Finding
from jitgate.masking.rules import MaskingConfigError, Profile, Rule, get_profile
from jitgate.masking.scanner import Scanner, build_scanner
from jitgate.masking.strategies import (
    MaskedValues,
    NumericFallback,
    Strategy,
    TypeClass,
    hash_token,
    numeric_zero,
    partial,
    redact,
    validate_marker,
)

_EMPTY_COUNTS: Mapping[str, int] = MappingProxyType({})
_TYPE_CLASSES: Mapping[str, TypeClass] = {kind.value: kind for kind in TypeClass}


def _type_class(value: TypeClass | str) -> TypeClass:
    try:
        return _TYPE_CLASSES[value]
    except KeyError:
        raise ValueError(
            f"type class must be one of {sorted(_TYPE_CLASSES)}, not {value!r}"
        ) from None


_TEXTUAL = frozenset({TypeClass.TEXT, TypeClass.JSON})
# A JSON string literal (its quotes included), for telling where a finding sits in a document.
# Runs of plain characters between escapes: the same matches as "(?:plain|\\.)*", in a
# fraction of the steps.
_JSON_STRING = re.compile(r'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"')
# The characters of a JSON scalar outside strings (number, true/false/null).
_JSON_SCALAR = frozenset("0123456789+-.eEtrufalsn")
_OPENERS = ("{", "[")  # how a text cell that may be a JSON document starts

_ACTION_CACHE_SIZE = 4096
_MAX_PASSES = 4
# Which strategy wins when several findings share a non-text cell: the strictest.
_SEVERITY = {Strategy.PARTIAL: 0, Strategy.REDACT: 1, Strategy.HASH: 2, Strategy.NULL: 3}


Source = tuple[str | None, str]  # (table or None, column or "*" for a whole row)


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A result column as the protocol rewriter describes it.

    ``sources`` is its lineage: the ``(table, column)`` pairs its values are derived from
    (``None``: not known, then ``name``/``table`` are matched as they are). ``opaque`` says
    the values come from something the rewriter cannot see (an unknown function, a result
    shape it could not map): every column rule applies to it.
    """

    name: str
    table: str | None = None
    type_class: TypeClass = TypeClass.TEXT
    sources: tuple[Source, ...] | None = None
    opaque: bool = False

    def __post_init__(self) -> None:
        # Accept the plain strings "text" / "numeric" / "other" too.
        object.__setattr__(self, "type_class", _type_class(self.type_class))


class MaskResult(NamedTuple):
    """The outcome for one cell: its new value (``None`` is SQL NULL) and what was masked."""

    value: str | None
    changed: bool
    counts: Mapping[str, int]

    @property
    def is_null(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class TypeRule:
    """How values of one detector type are replaced in a column."""

    strategy: Strategy
    on_numeric: NumericFallback
    rule: str


@dataclass(frozen=True, slots=True)
class WholeCell:
    """A column rule: the whole cell is replaced, whatever it contains."""

    kind: str
    strategy: Strategy
    on_numeric: NumericFallback
    rule: str


@dataclass(frozen=True, slots=True)
class Detection:
    """Detectors run over the cell; each type found is replaced by its rule's strategy."""

    scanner: Scanner
    by_type: Mapping[str, TypeRule]


ColumnAction = WholeCell | Detection


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    index: int
    column: ColumnInfo
    action: ColumnAction


@dataclass(frozen=True, slots=True)
class RowPlan:
    """Per result shape: the columns that can need masking and what to do with each."""

    columns: tuple[ColumnInfo, ...]
    masked: tuple[ColumnPlan, ...]

    @property
    def passthrough(self) -> bool:
        """No column of this shape can need masking: forward rows untouched."""
        return not self.masked

    @property
    def indexes(self) -> tuple[int, ...]:
        return tuple(column.index for column in self.masked)


class Masker:
    """Masks cells under one profile; keeps per-type counts of what it masked.

    ``key`` is the HMAC key of the ``hash`` strategy (required if the profile uses it);
    ``default_region`` is the region phone numbers without ``+country`` are read in;
    ``marker`` overrides the profile's redaction marker.
    """

    def __init__(
        self,
        profile: Profile | str,
        *,
        key: bytes | str | None = None,
        default_region: str = "US",
        marker: str | None = None,
        profiles: Mapping[str, Profile] | None = None,
    ) -> None:
        self.profile = get_profile(profile, profiles) if isinstance(profile, str) else profile
        if isinstance(key, str):
            key = key.encode("utf-8")
        if self.profile.uses(Strategy.HASH) and not key:
            raise MaskingConfigError(
                f"mask profile {self.profile.name!r} uses the hash strategy: a key is required"
            )
        self._key = key or b""
        self.region = default_region
        try:
            self.marker = validate_marker(marker or self.profile.marker)
        except ValueError as exc:
            raise MaskingConfigError(str(exc)) from None
        self._masked = MaskedValues(self.marker)
        self._written = self._masked.fullmatch  # not None: a value this masker wrote
        self._markers: dict[str, str] = {}
        try:
            self._custom = {spec.name: spec.build() for spec in self.profile.detectors}
            self._scanners: dict[tuple[frozenset[str], bool], Scanner] = {}
            self._unscoped = self._resolve(None, None)
        except ValueError as exc:
            raise MaskingConfigError(f"mask profile {self.profile.name!r}: {exc}") from None
        self._actions: dict[object, ColumnAction | None] = {}
        self.needs_lineage = any(rule.columns for rule in self.profile.rules)
        """Some rule names columns: the rewriter should say where result columns come from."""
        self.counts: Counter[str] = Counter()
        self.total = 0
        """The sum of ``counts``, kept as it grows."""
        self._check_marker()

    # -- planning -------------------------------------------------------------------------

    def plan(self, columns: Sequence[ColumnInfo]) -> RowPlan:
        """Resolve the profile's rules for a result shape, once per RowDescription."""
        masked = []
        for index, column in enumerate(columns):
            action = self._action(column)
            if action is not None:
                masked.append(ColumnPlan(index, column, action))
        return RowPlan(tuple(columns), tuple(masked))

    def action_for(self, column: str | None, table: str | None = None) -> ColumnAction | None:
        """What happens to cells of a column (``None``: never masked)."""
        if column is None:
            return self._unscoped
        return self._action(ColumnInfo(column, table))

    def _action(self, column: ColumnInfo) -> ColumnAction | None:
        cache_key = (column.name, column.table, column.sources, column.opaque)
        try:
            return self._actions[cache_key]
        except KeyError:
            pass
        action = self._resolve(column.name, column.table, column.sources, column.opaque)
        if len(self._actions) >= _ACTION_CACHE_SIZE:
            self._actions.clear()
        self._actions[cache_key] = action
        return action

    def _resolve(
        self,
        column: str | None,
        table: str | None,
        sources: tuple[Source, ...] | None = None,
        opaque: bool = False,
    ) -> ColumnAction | None:
        rules = self.profile.rules
        for rule in rules:
            if rule.whole_cell and rule.matches(column, table, sources, opaque=opaque):
                return WholeCell(rule.kind, rule.strategy, rule.on_numeric, _describe(rule))
        by_type: dict[str, TypeRule] = {}
        bare_ssn = False
        for rule in rules:
            if rule.whole_cell or not rule.matches(column, table, sources, opaque=opaque):
                continue
            for kind in self.profile.expand(rule.types):
                if kind not in by_type:
                    by_type[kind] = TypeRule(rule.strategy, rule.on_numeric, _describe(rule))
                    bare_ssn = bare_ssn or (kind == "ssn" and rule.bare_ssn)
        if not by_type:
            return None
        return Detection(self._scanner(frozenset(by_type), bare_ssn), MappingProxyType(by_type))

    def _scanner(self, types: frozenset[str], bare_ssn: bool) -> Scanner:
        key = (types, bare_ssn)
        scanner = self._scanners.get(key)
        if scanner is None:
            ordered = [kind for kind in self.profile.all_types() if kind in types]
            scanner = build_scanner(
                ordered, region=self.region, bare_ssn=bare_ssn, custom=self._custom
            )
            self._scanners[key] = scanner
        return scanner

    def _check_marker(self) -> None:
        """A marker that a detector would find again would make masking non-idempotent."""
        scanner = self._scanner(frozenset(self.profile.all_types()), False)
        for kind in self.profile.all_types():
            rendered = redact(kind, self.marker)
            if scanner.scan(rendered):
                raise MaskingConfigError(f"redaction marker {rendered!r} is itself detected")
        scanner.scanned = 0

    # -- masking --------------------------------------------------------------------------

    def mask_text(
        self,
        value: str | None,
        *,
        column: str | None = None,
        table: str | None = None,
        type_class: TypeClass | str = TypeClass.TEXT,
        info: ColumnInfo | None = None,
        nullable: bool = True,
    ) -> MaskResult:
        """Mask one cell; without ``column`` (or ``info``) only rules naming no columns apply.

        ``nullable=False`` is for text that cannot hold SQL NULL (an error message, a log
        line): the ``null`` strategy then writes the redaction marker instead.
        """
        if info is not None:
            kind = info.type_class
            action = self._action(info)
        else:
            kind = _type_class(type_class)
            action = self.action_for(column, table)
        if value is None:
            return MaskResult(None, False, _EMPTY_COUNTS)
        if action is None or (
            isinstance(action, Detection) and not action.scanner.could_match(value)
        ):
            return MaskResult(value, False, _EMPTY_COUNTS)  # the hot path: nothing to look at
        new, counts = self._apply(action, value, kind, nullable, candidate=True)
        if counts is None:
            return MaskResult(value, False, _EMPTY_COUNTS)
        return MaskResult(new, True, MappingProxyType(counts))

    def mask_row(self, plan: RowPlan, cells: Sequence[str | None]) -> list[str | None]:
        """The row with masked cells replaced; untouched cells are the same objects."""
        row = list(cells)
        for index, value in self.row_changes(plan, cells).items():
            row[index] = value
        return row

    def row_changes(self, plan: RowPlan, cells: Sequence[str | None]) -> dict[int, str | None]:
        """Only the cells that change, by column index (empty: forward the row as is).

        Only the positions in ``plan.indexes`` are read, so a rewriter may decode just those.
        """
        changes: dict[int, str | None] = {}
        for column in plan.masked:
            value = cells[column.index]
            if not value:
                continue
            new, counts = self._apply(column.action, value, column.column.type_class)
            if counts is not None:
                changes[column.index] = new
        return changes

    def change(
        self, column: ColumnPlan, value: str, *, candidate: bool = False
    ) -> tuple[str | None, Mapping[str, int] | None]:
        """One planned cell: its new value and what was masked in it, by type (``None``:
        unchanged, the value is returned as it was). Counted in :attr:`counts`.

        ``candidate``: the caller's own pre-filter (a byte trigger) already passed the cell,
        so the scanner's is skipped."""
        return self._apply(column.action, value, column.column.type_class, True, candidate)

    def recount(self, counts: Mapping[str, int]) -> None:
        """Count again what :meth:`change` masked in a cell, for a rewriter that kept
        its answer for a value it sees again."""
        for kind, count in counts.items():
            self.counts[kind] += count
            self.total += count

    def _apply(
        self,
        action: ColumnAction,
        value: str,
        type_class: TypeClass,
        nullable: bool = True,
        candidate: bool = False,
    ) -> tuple[str | None, dict[str, int] | None]:
        """``(new value, counts)``, or ``(value, None)`` when nothing is masked."""
        if isinstance(action, WholeCell):
            # A column rule masks the cell whatever it holds, even text that looks like a
            # masked value ("****1234" may hide anything but ASCII letters and digits);
            # only the exact marker it would write is left as it is.
            if not value or (
                action.strategy is Strategy.REDACT
                and value == self._marker(action.kind)
                and type_class is TypeClass.TEXT
            ):
                return value, None
            self.counts[action.kind] += 1
            self.total += 1
            counted = {action.kind: 1}
            if action.strategy is Strategy.NULL:
                return (None if nullable else redact(action.kind, self.marker)), counted
            if type_class not in _TEXTUAL:
                return self._non_text(
                    value, action.strategy, action.on_numeric, type_class
                ), counted
            new = self._replace(action.kind, action.strategy, value)
            if type_class is TypeClass.JSON:
                if value == json.dumps(new, ensure_ascii=False):
                    return value, None
                new = json.dumps(new, ensure_ascii=False)  # a JSON string: still a document
            return new, counted
        scanner = action.scanner
        if not candidate and not scanner.could_match(value):
            return value, None
        if type_class is TypeClass.TEXT and value[:1] not in _OPENERS:
            # The common masked cell, a whole e-mail column value: the scan's one finding
            # (see Scanner.whole), and no document to keep.
            kind = scanner.whole(value)
            if kind is not None:
                if self._written(value) is not None:
                    return value, None
                return self._one_value(action, kind, value, nullable)
        findings = scanner.scan_candidate(value)
        if not findings:
            return value, None
        written = self._written
        for finding in findings:
            if written(finding.text) is not None:  # (rare: a value this masker wrote)
                findings = [f for f in findings if written(f.text) is None]
                if not findings:
                    return value, None
                break
        counts: dict[str, int] = {}
        if type_class not in _TEXTUAL:
            self._count(findings, counts)
            rules = [action.by_type[finding.type] for finding in findings]
            strictest = max(rules, key=lambda rule: _SEVERITY[rule.strategy])
            fallback = strictest.on_numeric
            return self._non_text(value, strictest.strategy, fallback, type_class), counts
        document = type_class is TypeClass.JSON or (
            value[:1] in ("{", "[") and value[-1:] in ("}", "]") and _parses(value)
        )
        if (
            len(findings) == 1
            and findings[0].start == 0
            and findings[0].end == len(value)
            and not document
        ):
            return self._one_value(action, findings[0].type, value, nullable)
        masked: str | None = value
        passes = 0
        while findings and masked is not None:
            self._count(findings, counts)
            masked = self._rewrite(action, masked, findings, nullable, document)
            passes += 1
            # Replacing a value changes its neighbours' context: "…1111-4111 …" hides a
            # second card until the first is gone. Where a replaced value touched such a
            # neighbour, re-scan until nothing new is found.
            if masked is None or passes == _MAX_PASSES or not _touches(value, findings):
                break
            value = masked
            findings = self._findings(action, masked)
        return masked, counts

    def _one_value(
        self, action: Detection, kind: str, value: str, nullable: bool
    ) -> tuple[str | None, dict[str, int]]:
        """A text cell that is, whole, one value of ``kind``: no neighbour to look at again."""
        self.counts[kind] += 1
        self.total += 1
        strategy = action.by_type[kind].strategy
        if strategy is Strategy.REDACT:
            return self._markers.get(kind) or self._marker(kind), {kind: 1}
        if strategy is Strategy.NULL:
            if nullable:
                return None, {kind: 1}
            strategy = Strategy.REDACT
        return self._replace(kind, strategy, value, action.scanner), {kind: 1}

    def _findings(self, action: Detection, text: str) -> list[Finding]:
        return self._findings_in(action.scanner, text)

    def _findings_in(self, scanner: Scanner, text: str) -> list[Finding]:
        written = self._written
        return [f for f in scanner.scan(text) if written(f.text) is None]

    def _count(self, findings: list[Finding], counts: dict[str, int]) -> None:
        for finding in findings:
            counts[finding.type] = counts.get(finding.type, 0) + 1
            self.counts[finding.type] += 1
        self.total += len(findings)

    def _rewrite(
        self,
        action: Detection,
        value: str,
        findings: list[Finding],
        nullable: bool = True,
        document: bool = False,
    ) -> str | None:
        """``value`` with every finding replaced by its type's strategy (None: SQL NULL).

        Not ``nullable``: a ``null`` finding is replaced by the redaction marker instead.
        A JSON ``document`` stays one: see :meth:`_rewrite_json`."""
        replacements: list[str] = []
        for finding in findings:
            strategy = action.by_type[finding.type].strategy
            if strategy is Strategy.NULL:
                if nullable:
                    return None
                strategy = Strategy.REDACT
            replacements.append(self._replace(finding.type, strategy, finding.text, action.scanner))
        if document:
            return self._rewrite_json(action, value, findings, replacements, nullable)
        pieces: list[str] = []
        position = 0
        for finding, replacement in zip(findings, replacements, strict=True):
            pieces.append(value[position : finding.start])
            pieces.append(replacement)
            position = finding.end
        pieces.append(value[position:])
        return "".join(pieces)

    def _rewrite_json(
        self,
        action: Detection,
        value: str,
        findings: list[Finding],
        replacements: list[str],
        nullable: bool,
    ) -> str | None:
        """A JSON document with its findings replaced, still valid JSON.

        A finding inside a string is replaced by the JSON-escaped replacement; one in a
        number (``{"card": 4111111111111111}``) turns the whole number into a string
        (``"************1111"``). A finding that spans JSON structure (a value across two
        array items, say) is handled by masking the parsed document value by value."""
        strings = [m.span() for m in _JSON_STRING.finditer(value)]
        starts = [start for start, _end in strings]
        pieces: list[str] = []
        position = 0
        for finding, replacement in zip(findings, replacements, strict=True):
            index = bisect_right(starts, finding.start) - 1
            inside = index >= 0 and strings[index][0] < finding.start < strings[index][1]
            if inside:
                if finding.end > strings[index][1] - 1:  # past the closing quote
                    return self._rewrite_parsed(action, value, nullable)
                start, end = finding.start, finding.end
                text = json.dumps(replacement, ensure_ascii=False)[1:-1]
            else:
                start, end = finding.start, finding.end
                while start > position and value[start - 1] in _JSON_SCALAR:
                    start -= 1
                while end < len(value) and value[end] in _JSON_SCALAR:
                    end += 1
                if any(char in '"{}[],:' for char in value[finding.start : finding.end]):
                    return self._rewrite_parsed(action, value, nullable)
                scalar = value[start : finding.start] + replacement + value[finding.end : end]
                text = json.dumps(scalar, ensure_ascii=False)
            pieces.append(value[position:start])
            pieces.append(text)
            position = end
        pieces.append(value[position:])
        out = "".join(pieces)
        if not _parses(out):
            return self._rewrite_parsed(action, value, nullable)
        return out

    def _rewrite_parsed(self, action: Detection, value: str, nullable: bool) -> str | None:
        """The document parsed, each key, string and number masked on its own, and written
        again (a number that changes becomes a string; the others keep their text). Not
        JSON at all: masked as text."""
        try:
            document = json.loads(value, parse_float=_Number, parse_int=_Number)
        except ValueError:
            return self._rewrite(action, value, self._findings(action, value), nullable)
        kept: list[str] = []  # numbers written back as they were, by placeholder
        nonce = secrets.token_hex(8)
        masked_null = False

        def mask(item: object) -> object:
            nonlocal masked_null
            if isinstance(item, dict):
                return {mask(key): mask(inner) for key, inner in item.items()}
            if isinstance(item, list):
                return [mask(inner) for inner in item]
            if isinstance(item, str):
                text = str(item)
                findings = self._findings(action, text)
                new = self._rewrite(action, text, findings, nullable) if findings else text
                if new is None:
                    masked_null = True
                if isinstance(item, _Number) and new == text:
                    kept.append(text)
                    return f"\x00{nonce}:{len(kept) - 1}\x00"
                return new
            return item

        result = mask(document)
        if masked_null:
            return None
        out = json.dumps(result, ensure_ascii=False)
        if not kept:
            return out
        placeholder = re.compile(rf'"\\u0000{nonce}:([0-9]+)\\u0000"')
        return placeholder.sub(lambda match: kept[int(match.group(1))], out)

    def _replace(
        self, kind: str, strategy: Strategy, text: str, scanner: Scanner | None = None
    ) -> str:
        if strategy is Strategy.PARTIAL:
            kept = partial(kind, text)
            # What a partial keeps may itself be a value ("****0.0.0.0"): then keep nothing.
            if scanner is not None and self._findings_in(scanner, kept):
                return partial("", "".join("*" if char.isalnum() else char for char in text))
            return kept
        if strategy is Strategy.HASH:
            return hash_token(self._key, kind, text)
        return self._marker(kind)

    def _marker(self, kind: str) -> str:
        marker = self._markers.get(kind)
        if marker is None:
            marker = self._markers[kind] = redact(kind, self.marker)
        return marker

    @staticmethod
    def _non_text(
        value: str, strategy: Strategy, fallback: NumericFallback, type_class: TypeClass
    ) -> str | None:
        """A value a non-text column can still decode: zeros of the same shape, or NULL."""
        if (
            type_class is TypeClass.NUMERIC
            and fallback is NumericFallback.ZERO
            and strategy in (Strategy.REDACT, Strategy.PARTIAL)
        ):
            return numeric_zero(value, strategy)
        return None

    # -- operator tooling -----------------------------------------------------------------

    def explain(
        self, text: str, *, column: str | None = None, table: str | None = None
    ) -> list[Finding]:
        """What would be masked in ``text`` and why (``jitgate mask test``)."""
        action = self.action_for(column, table)
        if action is None or not text:
            return []
        if isinstance(action, WholeCell):
            why = f"column rule {action.rule} masks the whole cell; {action.strategy}"
            return [Finding(action.kind, 0, len(text), text, why)]
        explained = []
        for finding in action.scanner.scan(text):
            if finding.text in self._masked:
                continue
            rule = action.by_type[finding.type]
            why = f"{finding.why}; {rule.strategy} (rule {rule.rule})"
            explained.append(Finding(finding.type, finding.start, finding.end, finding.text, why))
        return explained


class _Number(str):
    """A JSON number kept as its text (so that writing the document again keeps it)."""


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_SEPARATING = frozenset(" \t\r\n\"',;|[]{}<>")


def _touches(text: str, findings: list[Finding]) -> bool:
    """Whether a finding borders a character that could make a neighbour detectable.

    That is anything but a plain separator (space, quote, comma, bracket…) right next to
    it, or a space followed by a digit (numbers are written in space-separated groups).
    """
    size = len(text)
    for finding in findings:
        for index, step in ((finding.start - 1, -1), (finding.end, 1)):
            if not 0 <= index < size:
                continue
            char = text[index]
            if char not in _SEPARATING:
                return True
            beyond = index + step
            if char == " " and 0 <= beyond < size and text[beyond].isdigit():
                return True
    return False


def _describe(rule: Rule) -> str:
    return rule.describe()
