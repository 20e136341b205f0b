"""The DataRow fast path (byte filter, only hit cells decoded, a cache of short cells) gives
exactly what decoding and scanning every planned cell gives: the same bytes, the same
counts. Hypothesis rows of mixed cells, under several profiles, formats and encodings."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.masking_corpus import generate
from jitgate.masking import ColumnInfo, Masker, load_profile
from jitgate.protocols.postgres import masking as pg
from tests.unit.masking.test_properties import VALUES, cells

FUZZ = settings(
    max_examples=int(os.environ.get("JITGATE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = b"fast-path-test-key"
PROFILES = [
    {"name": "all", "rules": [{"types": ["*"]}]},
    {
        "name": "mixed",
        "rules": [
            {"columns": ["t.secret"], "label": "secret"},
            {"types": ["ssn"], "columns": ["*ssn*"], "bare_ssn": True},
            {"types": ["email"], "strategy": "null"},
            {"types": ["card"], "strategy": "partial"},
            {"types": ["phone", "iban"], "strategy": "hash"},
            {"types": ["ip", "secret", "ssn"]},
        ],
    },
    {"name": "pii-like", "rules": [{"types": ["email", "phone", "ssn", "iban", "card"]}]},
    {"name": "pci-like", "rules": [{"types": ["card"]}]},
]
TEXT, VARCHAR, INT4, NUMERIC, JSONB, BYTEA, UUID, JSON = 25, 1043, 23, 1700, 3802, 17, 2950, 114
COLUMNS = [
    ("note", TEXT, 0),
    ("ssn", VARCHAR, 0),
    ("secret", TEXT, 0),
    ("amount", NUMERIC, 0),
    ("id", INT4, 0),
    ("doc", JSONB, 1),
    ("blob", BYTEA, 1),
    ("body", TEXT, 1),
    ("data", JSON, 0),
    ("u", UUID, 0),
]


def data_row(values: list[bytes | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        body += b"\xff\xff\xff\xff" if value is None else struct.pack("!i", len(value)) + value
    return body


def row_description(columns: list[tuple[str, int, int]]) -> bytes:
    body = struct.pack("!h", len(columns))
    for name, type_oid, fmt in columns:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", 0, 0, type_oid, -1, -1, fmt)
    return body


def plans(profile: dict[str, object], columns: list[tuple[str, int, int]]) -> tuple:
    """Two maskers of the same profile, and a plan for each (separate counts and caches)."""
    fields = pg.parse_row_description(row_description(columns), "utf-8")
    infos = [ColumnInfo(f.name, sources=(("public.t", f.name),)) for f in fields]
    out = []
    for _ in range(2):
        masker = Masker(load_profile(profile), key=KEY)
        out.append((masker, pg.plan(masker, fields, infos)))
    return tuple(out)


def both(payload: bytes, fast: tuple, slow: tuple, encoding: str) -> None:
    (fast_masker, fast_plan), (slow_masker, slow_plan) = fast, slow
    expected = pg._rewrite_each(payload, slow_plan, slow_masker, encoding)
    got = pg.rewrite_data_row(payload, fast_plan, fast_masker, encoding)
    assert got == expected
    rounds = 1
    if fast_plan.detect and encoding in pg.ASCII_TRANSPARENT:  # as the relay calls it
        rounds = 2
        framed = pg.mask_data_row(b"xx" + payload + b"yy", 2, 2 + len(payload), fast_plan,
                                  fast_masker, encoding, 0x44)  # fmt: skip
        if expected is None:
            assert framed is None
        else:
            assert framed == b"D" + struct.pack("!i", len(expected) + 4) + expected
    assert fast_masker.counts == {k: rounds * v for k, v in slow_masker.counts.items() if v}
    assert fast_masker.total == sum(fast_masker.counts.values())


def encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "replace")


cell_text = st.one_of(
    cells,
    st.sampled_from(VALUES),
    st.lists(st.sampled_from(VALUES), max_size=3).map(" ".join),
    st.lists(st.sampled_from(VALUES), max_size=3).map(lambda v: json.dumps({"v": v})),
)
cell = st.one_of(
    st.none(),
    cell_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    cell_text.map(lambda text: b"\x01" + text.encode("utf-8", "surrogatepass")),
)


@FUZZ
@given(
    profile=st.sampled_from(PROFILES),
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6),
    data=st.data(),
)
def test_the_fast_path_gives_what_scanning_every_cell_gives(
    profile: dict[str, object], columns: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    fast, slow = plans(profile, columns)
    assert fast[1].detect  # the fast path (with or without a byte filter)
    for _ in range(3):
        row = data.draw(st.lists(cell, min_size=len(columns), max_size=len(columns)))
        both(data_row(row), fast, slow, "utf-8")


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "iso8859-5", "koi8-r", "shift_jis"])
@FUZZ
@given(data=st.data())
def test_other_client_encodings(encoding: str, data: st.DataObject) -> None:
    columns = [("note", TEXT, 0), ("ssn", TEXT, 0), ("id", INT4, 0)]
    fast, slow = plans(PROFILES[1], columns)
    texts = data.draw(st.lists(cell_text, min_size=3, max_size=3))
    both(data_row([encode(text, encoding) for text in texts]), fast, slow, encoding)


def test_ascii_transparent_encodings() -> None:
    assert {"utf-8", "latin-1", "cp1252", "koi8-r"} <= pg.ASCII_TRANSPARENT
    assert "shift_jis" not in pg.ASCII_TRANSPARENT  # a second byte may be ASCII: cell by cell


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: str(p["name"]))
def test_the_corpus_row_by_row(profile: dict[str, object]) -> None:
    """The labelled benchmark corpus, five cells a row, with lengths of every low byte."""
    columns = [("note", TEXT, 0), ("ssn", TEXT, 0), ("secret", TEXT, 0), ("doc", JSONB, 1),
               ("amount", NUMERIC, 0)]  # fmt: skip
    fast, slow = plans(profile, columns)
    texts = [c.text for c in generate(600, seed=23)]
    for index in range(0, len(texts) - 3, 3):
        a, b, c = texts[index : index + 3]
        row = [a.encode(), b.encode(), c.encode(), b"\x01" + b.encode(), b"12345"]
        both(data_row(row), fast, slow, "utf-8")
    for length in range(256):  # a value right after every possible low byte of its length
        row = [b"4111 1111 1111 1111".ljust(length, b" "), b"x", None, None, b"1"]
        both(data_row(row), fast, slow, "utf-8")


def test_unchanged_rows_are_not_rebuilt_and_repeats_are_counted() -> None:
    columns = [("note", TEXT, 0), ("id", INT4, 0)]
    (masker, plan), _ = plans(PROFILES[2], columns)
    clean = data_row([b"order 8f14e45fceea167a5a36dedd4bea2543 shipped", b"7"])
    assert pg.rewrite_data_row(clean, plan, masker, "utf-8") is None
    card = data_row([b"card 4111 1111 1111 1111 on file", b"8"])
    for _ in range(3):
        out = pg.rewrite_data_row(card, plan, masker, "utf-8")
        assert out == data_row([b"card [REDACTED:card] on file", b"8"])
    assert masker.counts == {"card": 3} and masker.total == 3


def test_a_profile_with_a_custom_detector_scans_cell_by_cell() -> None:
    profile = {
        "name": "custom",
        "detectors": [{"name": "employee", "pattern": r"E\d{6}"}],
        "rules": [{"types": ["employee", "email"]}],
    }
    fast, slow = plans(profile, [("note", TEXT, 0)])
    assert fast[1].filter is None and not fast[1].detect
    both(data_row([b"E123456 and jo@example.com"]), fast, slow, "utf-8")
