"""Inline data masking: detectors, mask profiles and the cell masker used in the data path.

Protocol rewriters build a :class:`Masker` from the mask profile policy chose, ask it for
a :class:`RowPlan` per result shape and pass it decoded cells; the session recorder reads
``Masker.counts``. Detection works inside free text and JSON, not only on whole cells.
"""

from jitgate.masking.detectors import Detector
from jitgate.masking.findings import Finding, Span
from jitgate.masking.masker import ColumnInfo, Masker, MaskResult, RowPlan
from jitgate.masking.rules import (
    BUILTIN_PROFILES,
    CustomDetector,
    MaskingConfigError,
    Profile,
    Rule,
    get_profile,
    load_profile,
    load_profiles,
)
from jitgate.masking.scanner import BUILTIN_TYPES, Scanner, build_scanner, detect
from jitgate.masking.strategies import NumericFallback, Strategy, TypeClass

__all__ = [
    "BUILTIN_PROFILES",
    "BUILTIN_TYPES",
    "ColumnInfo",
    "CustomDetector",
    "Detector",
    "Finding",
    "MaskResult",
    "Masker",
    "MaskingConfigError",
    "NumericFallback",
    "Profile",
    "RowPlan",
    "Rule",
    "Scanner",
    "Span",
    "Strategy",
    "TypeClass",
    "build_scanner",
    "detect",
    "get_profile",
    "load_profile",
    "load_profiles",
]
