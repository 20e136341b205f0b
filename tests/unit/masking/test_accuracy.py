"""Detection accuracy on the benchmark's seeded, labelled corpus, and on hard negatives.

The corpus (:mod:`bench.masking_corpus`) plants generated values (valid Luhn and IIN, valid
mod-97, SSA rules, numbers ``phonenumbers`` accepts…) in free text, JSON and CSV-ish cells,
next to hard negatives that look sensitive but are not. Scoring is the benchmark's own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.masking_accuracy import jitgate_detector, run, score
from bench.masking_corpus import NEGATIVES, TYPES, generate
from jitgate.masking import BUILTIN_TYPES, build_scanner

CELLS = 4000
TARGET_TYPES = ("card", "ssn", "iban", "email")


@pytest.mark.parametrize("seed", [5, 11, 23])
def test_f1_per_type_and_no_false_positive_on_hard_negatives(seed: int) -> None:
    cells = generate(CELLS, seed)
    predictions, _seconds = run(jitgate_detector(), cells)
    result = score(cells, predictions, TYPES)
    for kind in TYPES:
        assert result.tp[kind] > 50, kind  # the corpus holds enough of every type
        _precision, _recall, f1 = result.prf([kind])
        assert f1 >= (0.99 if kind in TARGET_TYPES else 0.98), (kind, f1, result.examples)
    assert result.prf(TYPES)[2] >= 0.99
    assert not result.negative_fp, (dict(result.negative_fp), result.examples)
    assert sum(1 for cell in cells if cell.shape == "negative") > CELLS // 10


HARD_NEGATIVES = [
    "ORD-2024-000123",
    "2024-01-15T12:30:45Z",
    "1705312245123",
    "550e8400-e29b-41d4-a716-446655440000",
    "550E8400E29B41D4A716446655440000",
    "4111111111111112",  # 16 digits, Luhn fails
    "4111 1111 1111 1112",
    "5d41402abc4b2a76b9719d911017c592",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    # 19 digits printed 4-4-4-4-3 that fail Luhn: their first 16 digits pass it
    "6222-4978-5253-0598-929",
    "6281 2234 6737 3747 123",
    "6759-3766-6025-0153-837",
    # a Luhn-failing card next to an invalid SSN, a date, a MAC address, two amounts
    "6011 7725 6459 8960 245-45-0000",
    "3530 9001 4571 8552 05/22/2001",
    "a5:f1:3c:7b:2b:56 3530 0474 8038 4849",
    "07:39:27.239581 73:79:63:b3:c1:17",
    "666-96-6279 91328 93721",
    "72759. 764.92 EUR",
    "pkg@7.8.1 5.19.2.11.0-rc1",
    "build 7.0.14.2 17.0.15-rc19",
    "978-3-16-148410-0",
    "52.520008, 13.404954",
    "DE01865017659330185813",  # check digits 01: never issued
    "5526 3613 3336 8203 67% 219-09-9999",  # a Luhn failure, then an amount
]


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negatives_are_not_found(text: str) -> None:
    assert build_scanner(BUILTIN_TYPES).scan(text) == []


def test_the_corpus_has_every_hard_negative_kind() -> None:
    for name in (
        "order",
        "timestamp",
        "uuid",
        "luhn_fail",
        "long_luhn_fail",
        "hash",
        "log_numbers",
        "isbn",
        "coordinates",
        "uuid_hex",
    ):
        assert name in NEGATIVES


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("card 5555 5555 5555 4444 123 exp", "card", "5555 5555 5555 4444"),
        ("Value on file: +44 7400 128499 705-755-0315 ok", "phone", "705-755-0315"),
        ("Value on file: +44 7400 128499 705-755-0315 ok", "phone", "+44 7400 128499"),
        ("+1 636 684 9404. 226.345.2969 was added", "phone", "226.345.2969"),
        (
            "PL28 8599 9094 2785 6676 7908 5953 GB82 WEST 1234 5698 7654 32",
            "iban",
            "GB82 WEST 1234 5698 7654 32",
        ),
    ],
)
def test_values_next_to_other_numbers_are_found(text: str, kind: str, value: str) -> None:
    found = [(f.type, f.text) for f in build_scanner(BUILTIN_TYPES).scan(text)]
    assert (kind, value) in found


def test_the_benchmark_runs_without_presidio() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.masking_accuracy", "--cells", "300", "--no-presidio"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout
    micro = next(line for line in out.splitlines() if line.startswith("| **micro (all 7"))
    assert micro.split("|")[5].strip() == "1.000"
    assert "| card | " in out and "Presidio analyze" not in out
    assert "| jitgate detection, all 7 types |" in out and "n/a |" in out
