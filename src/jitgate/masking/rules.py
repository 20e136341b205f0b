"""Mask profiles: named, ordered lists of rules, loaded from plain dicts (JSON/YAML shape).

A **rule** selects values and says how to replace them::

    {"types": ["card"], "strategy": "partial"}                  # detect cards in every cell
    {"columns": ["customers.ssn", "*password*"], "label": "ssn"} # whole cell, whatever it holds
    {"types": ["ssn"], "columns": ["*ssn*"], "bare_ssn": true}  # detect only in these columns

* ``types`` — detector types (``card``, ``email``, ``ssn``, ``phone``, ``iban``, ``ip``,
  ``secret``, ``*`` for all, or a custom detector of the profile).
* ``columns`` — glob on the column name (``email*``) or ``table.column`` (``customers.ssn``;
  ``schema.table.column`` also works). A result column matches when it is derived from a
  matching table column (its lineage: ``upper(ssn) AS s`` is derived from ``ssn``) or, for
  a glob, when its own name matches. A ``table.column`` pattern also matches a column
  whose table is unknown, and every pattern matches a column whose lineage the gateway
  cannot see: fail closed. Names compare case-insensitively.
* A rule with ``columns`` and no ``types`` masks the **whole cell** (counted as ``label``,
  default ``column``). With both, its types are detected only in those columns.
* ``strategy`` — ``redact`` (default), ``partial``, ``hash`` (keyed HMAC token), ``null``.
* ``on_numeric`` — ``null`` (default) or ``zero``: what redact/partial write in numeric columns.
* ``bare_ssn`` — with ``types: [ssn]`` and ``columns``: plain nine-digit values count too.

Whole-cell rules win over detection rules; among detection rules the first rule (in
order) naming a type decides that type's strategy for a column.

A **profile** is ``{"name", "description", "marker", "detectors", "rules"}``; ``marker`` is
the redaction text (``{type}`` is replaced by the type), ``detectors`` declares custom
detectors: ``{"name": "employee_id", "pattern": "E\\\\d{6}", "validator": "luhn"}`` or
``{"name": "codename", "words": ["bluebird", "nightjar"]}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jitgate.errors import InvalidInput
from jitgate.masking.custom import RegexDetector, WordListDetector
from jitgate.masking.detectors import Detector
from jitgate.masking.scanner import BUILTIN_TYPES
from jitgate.masking.strategies import DEFAULT_MARKER, NumericFallback, Strategy, validate_marker
from jitgate.masking.validators import VALIDATORS

ALL_TYPES = "*"


class MaskingConfigError(InvalidInput):
    """A mask profile or rule that cannot be used; the message says where and why."""

    code = "invalid_mask_profile"


class CustomDetector(BaseModel):
    """An operator-defined detector: a regex (with optional validator) or a word list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    pattern: str | None = None
    validator: str | None = None
    ignore_case: bool = False
    words: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CustomDetector:
        if self.name in BUILTIN_TYPES:
            raise ValueError(f"{self.name!r} is a built-in detector type")
        if (self.pattern is None) == (self.words is None):
            raise ValueError("give exactly one of 'pattern' or 'words'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from exc
        if self.validator is not None:
            if self.pattern is None:
                raise ValueError("'validator' only applies to a 'pattern' detector")
            if self.validator not in VALIDATORS:
                raise ValueError(
                    f"unknown validator {self.validator!r}; known: {sorted(VALIDATORS)}"
                )
        if self.words is not None and not any(word.strip() for word in self.words):
            raise ValueError("'words' needs at least one non-empty word")
        return self

    def build(self) -> Detector:
        if self.pattern is not None:
            return RegexDetector(
                self.name, self.pattern, validator=self.validator, ignore_case=self.ignore_case
            )
        return WordListDetector(self.name, self.words or ())


class Rule(BaseModel):
    """Which values (by detector type and/or column) are masked, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    types: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    strategy: Strategy = Strategy.REDACT
    label: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    bare_ssn: bool = False
    on_numeric: NumericFallback = NumericFallback.NULL

    @field_validator("columns")
    @classmethod
    def _columns_well_formed(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in columns:
            if not pattern or pattern.startswith(".") or pattern.endswith(".") or ".." in pattern:
                raise ValueError(f"column pattern {pattern!r}: use 'glob' or 'table.column'")
        return columns

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if not self.types and not self.columns:
            raise ValueError("a rule needs 'types', 'columns' or both")
        if self.label is not None and self.types:
            raise ValueError("'label' names a whole-cell rule; detection rules report their types")
        if self.bare_ssn and ("ssn" not in self.types or not self.columns):
            raise ValueError("'bare_ssn' needs types ['ssn'] and 'columns'")
        return self

    @property
    def whole_cell(self) -> bool:
        return not self.types

    @property
    def kind(self) -> str:
        """The type a whole-cell rule counts its values as."""
        return self.label or "column"

    def describe(self) -> str:
        return self.name or ", ".join(self.columns or self.types)

    def matches(
        self,
        column: str | None,
        table: str | None,
        sources: tuple[tuple[str | None, str], ...] | None = None,
        *,
        opaque: bool = False,
    ) -> bool:
        """Whether this rule applies to the column (a rule without columns applies to all).

        ``sources`` are the ``(table, column)`` pairs a result column is derived from (its
        lineage; ``None``: unknown, then ``column``/``table`` are matched as named). A glob
        also matches the result column's own name. An ``opaque`` column — derived from
        something the gateway cannot see — matches every rule: fail closed.
        """
        if not self.columns:
            return True
        if opaque:
            return True
        if column is None and sources is None:
            return False
        for pattern in self.columns:
            if sources is None:
                assert column is not None
                if column_matches(pattern, column, table):
                    return True
                continue
            if column is not None and "." not in pattern and column_matches(pattern, column, None):
                return True
            if any(source_matches(pattern, name, where) for where, name in sources):
                return True
        return False


def source_matches(pattern: str, column: str, table: str | None) -> bool:
    """Like :func:`column_matches`; ``column == "*"`` (a whole row) has every column name."""
    if column != "*":
        return column_matches(pattern, column, table)
    if "." not in pattern:
        return True
    return _table_matches(pattern.lower().rpartition(".")[0], table)


def column_matches(pattern: str, column: str, table: str | None) -> bool:
    """Glob ``pattern`` on the column name, or ``[schema.]table.column`` against both."""
    pattern = pattern.lower()
    column = column.lower()
    if "." not in pattern:
        return fnmatchcase(column, pattern)
    table_pattern, _, column_pattern = pattern.rpartition(".")
    if not fnmatchcase(column, column_pattern):
        return False
    return _table_matches(table_pattern, table)


def _table_matches(table_pattern: str, table: str | None) -> bool:
    if table is None:
        return True  # the statement's table is unknown: fail closed
    schema_pattern, _, table_name_pattern = table_pattern.rpartition(".")
    schema, _, table_name = table.lower().rpartition(".")
    if not fnmatchcase(table_name, table_name_pattern):
        return False
    return not (schema_pattern and schema and not fnmatchcase(schema, schema_pattern))


class Profile(BaseModel):
    """A named mask profile, as chosen by policy (``@mask("pii")``) or per connection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    marker: str = DEFAULT_MARKER
    detectors: tuple[CustomDetector, ...] = ()
    rules: tuple[Rule, ...] = ()

    @field_validator("marker")
    @classmethod
    def _marker_safe(cls, marker: str) -> str:
        return validate_marker(marker)

    @model_validator(mode="after")
    def _types_known(self) -> Profile:
        custom = [detector.name for detector in self.detectors]
        if len(set(custom)) != len(custom):
            raise ValueError("custom detector names must be unique")
        known = {*BUILTIN_TYPES, *custom, ALL_TYPES}
        for index, rule in enumerate(self.rules):
            unknown = [kind for kind in rule.types if kind not in known]
            if unknown:
                raise ValueError(
                    f"rule {index} ({rule.describe()}): unknown type(s) {unknown}; "
                    f"known: {sorted(known)}"
                )
        return self

    def all_types(self) -> tuple[str, ...]:
        return (*BUILTIN_TYPES, *(detector.name for detector in self.detectors))

    def expand(self, types: tuple[str, ...]) -> tuple[str, ...]:
        """A rule's types with ``*`` replaced by every type of this profile."""
        if ALL_TYPES in types:
            return self.all_types()
        return types

    def uses(self, strategy: Strategy) -> bool:
        return any(rule.strategy is strategy for rule in self.rules)

    @property
    def column_rules(self) -> tuple[Rule, ...]:
        """The rules that name columns: they follow a result's lineage, not its values."""
        return tuple(rule for rule in self.rules if rule.columns)

    def masked_sources(
        self, sources: Iterable[tuple[str | None, str]]
    ) -> list[tuple[str | None, str]]:
        """The ``(table, column)`` pairs among ``sources`` a column rule covers (``"*"``:
        a whole row, or every column of the table, covered if any of them may be)."""
        rules = self.column_rules
        return [pair for pair in sources if any(r.matches(None, None, (pair,)) for r in rules)]


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "profile"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def load_profile(data: Mapping[str, Any]) -> Profile:
    """Validate one profile given as a dict; raise :class:`MaskingConfigError` with details."""
    if not isinstance(data, Mapping):
        raise MaskingConfigError("a mask profile must be a mapping")
    try:
        return Profile.model_validate(dict(data))
    except ValidationError as exc:
        name = data.get("name", "?")
        raise MaskingConfigError(f"mask profile {name!r}: {_errors(exc)}") from None


def load_profiles(data: Mapping[str, Any]) -> dict[str, Profile]:
    """Profiles from ``{"profiles": [{...}, ...]}`` or ``{"profiles": {name: {...}}}``."""
    raw = data.get("profiles") if isinstance(data, Mapping) else None
    if isinstance(raw, Mapping):
        items = [{"name": name, **body} for name, body in raw.items()]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise MaskingConfigError("expected a 'profiles' list or mapping")
    profiles: dict[str, Profile] = {}
    for item in items:
        profile = load_profile(item)
        if profile.name in profiles:
            raise MaskingConfigError(f"mask profile {profile.name!r} is defined twice")
        profiles[profile.name] = profile
    return profiles


_SSN_COLUMNS = ["*ssn*", "*social_security*"]
# Globs are deliberately narrower than "*card*"/"*pan*", which would also match
# "discard", "cardinality", "company", "span" and "expand".
_CARD_COLUMNS = [
    "*card_number*", "*cardnumber*", "*card_num", "*card_no", "cc_number", "ccnum", "card",
    "*_card", "pan", "pan_*", "*_pan", "*primary_account_number*",
]  # fmt: skip
_SECRET_COLUMNS = [
    "*password*", "*passwd*", "*secret*", "*api_key*", "*apikey*", "*private_key*",
    "*access_token*", "*refresh_token*", "*_token", "token",
]  # fmt: skip

_BUILTIN: tuple[dict[str, Any], ...] = (
    {
        "name": "none",
        "description": "No masking.",
        "rules": [],
    },
    {
        "name": "pii",
        "description": "Personal data: e-mails, phones, SSNs, IBANs redacted; cards partial.",
        "rules": [
            {"types": ["ssn"], "columns": _SSN_COLUMNS, "bare_ssn": True},
            {"types": ["email", "phone", "ssn", "iban"]},
            {"types": ["card"], "strategy": "partial"},
        ],
    },
    {
        "name": "pci",
        "description": "Payment cards: detected anywhere, card-number columns masked whole.",
        "rules": [
            {"name": "card columns", "columns": _CARD_COLUMNS, "label": "card"},
            {"types": ["card"]},
        ],
    },
    {
        "name": "secrets",
        "description": "Credentials: keys, tokens, passwords; secret-named columns masked whole.",
        "rules": [
            {"name": "secret columns", "columns": _SECRET_COLUMNS, "label": "secret"},
            {"types": ["secret"]},
        ],
    },
    {
        "name": "strict",
        "description": "Everything every detector finds, plus card, SSN and secret columns.",
        "rules": [
            {"name": "card columns", "columns": _CARD_COLUMNS, "label": "card"},
            {"name": "secret columns", "columns": _SECRET_COLUMNS, "label": "secret"},
            {"types": ["ssn"], "columns": _SSN_COLUMNS, "bare_ssn": True},
            {"types": [ALL_TYPES]},
        ],
    },
)

BUILTIN_PROFILES: Mapping[str, Profile] = MappingProxyType(
    {profile["name"]: load_profile(profile) for profile in _BUILTIN}
)
"""The profiles every gateway has: ``none``, ``pii``, ``pci``, ``secrets``, ``strict``."""


def get_profile(name: str, profiles: Mapping[str, Profile] | None = None) -> Profile:
    """An operator profile from ``profiles`` or else a built-in one, by name."""
    if profiles and name in profiles:
        return profiles[name]
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name]
    known = sorted({*BUILTIN_PROFILES, *(profiles or {})})
    raise MaskingConfigError(f"unknown mask profile {name!r}; known: {', '.join(known)}")
