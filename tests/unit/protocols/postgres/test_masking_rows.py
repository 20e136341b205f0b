"""The DataRow fast path (byte filter, only hit cells decoded, a cache of short cells) gives
exactly what decoding and scanning every planned cell gives: the same bytes, the same
counts. Hypothesis rows of mixed cells, under several profiles, formats and encodings."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.masking_corpus import generate
from jitgate.masking import ColumnInfo, Masker, load_profile
from jitgate.protocols.postgres import masking as pg
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.recording.recorder import RowSample
from tests.unit.masking.test_properties import VALUES, cells
from tests.unit.protocols.postgres import wire as w
from tests.unit.protocols.postgres.test_relay_masking import Masking

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
    """Two maskers of the same profile, a plan for each (separate counts and caches), and
    a place for the row maskers made for a plan (one per encoding, as the relay keeps one
    per result)."""
    fields = pg.parse_row_description(row_description(columns), "utf-8")
    infos = [ColumnInfo(f.name, sources=(("public.t", f.name),)) for f in fields]
    out = []
    for _ in range(2):
        masker = Masker(load_profile(profile), key=KEY)
        out.append((masker, pg.plan(masker, fields, infos), {}))
    return tuple(out)


def both(payload: bytes, fast: tuple, slow: tuple, encoding: str) -> None:
    (fast_masker, fast_plan, row_maskers), (slow_masker, slow_plan, _) = fast, slow
    expected = pg._rewrite_each(payload, slow_plan, slow_masker, encoding)
    got = pg.rewrite_data_row(payload, fast_plan, fast_masker, encoding)
    assert got == expected
    rounds = 1
    if fast_plan.detect and encoding in pg.ASCII_TRANSPARENT:  # as the relay calls it
        rounds = 3
        message = None
        if expected is not None:
            message = b"D" + struct.pack("!i", len(expected) + 4) + expected
        framed = pg.mask_data_row(b"xx" + payload + b"yy", 2, 2 + len(payload), fast_plan,
                                  fast_masker, encoding, 0x44)  # fmt: skip
        assert framed == message
        # The row masker the relay keeps for all the rows of a result: rows before this
        # one went through it too (its list of cell offsets is reused from row to row).
        if encoding not in row_maskers:
            row_maskers[encoding] = pg.row_masker(fast_plan, fast_masker, encoding, 0x44)
        buffered = bytearray(b"D\0\0\0\0" + payload + b"D")  # (as the relay's own buffer)
        assert row_maskers[encoding](buffered, 5, 5 + len(payload)) == message
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
    cell_text.map(lambda text: b"\xff " + text.encode("utf-8", "surrogatepass")),  # not UTF-8
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


def outcome(mask: Callable[..., bytes | None], *args: object) -> tuple[str, bytes | str | None]:
    try:
        return "row", mask(*args)
    except ProtocolViolation as exc:
        return "violation", str(exc)


@FUZZ
@given(
    profile=st.sampled_from(PROFILES),
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4),
    data=st.data(),
)
def test_malformed_rows_fail_as_on_the_general_path(
    profile: dict[str, object], columns: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """Truncated rows, lengths out of range, stray bytes: the same protocol violation."""
    fast, slow = plans(profile, columns)
    (fast_masker, fast_plan, _), (slow_masker, slow_plan, _) = fast, slow
    mask = pg.row_masker(fast_plan, fast_masker, "utf-8", None)
    for _ in range(3):
        row = data_row(data.draw(st.lists(cell, min_size=len(columns), max_size=len(columns))))
        at = data.draw(st.integers(0, len(row)))
        mutated = data.draw(
            st.sampled_from(
                [
                    row[:at],
                    row + b"\0",
                    row[:at] + struct.pack("!i", data.draw(LENGTHS)) + row[at + 4 :],
                    struct.pack("!h", data.draw(st.integers(-2, 8))) + row[2:],
                ]
            )
        )
        expected = outcome(pg._rewrite_each, mutated, slow_plan, slow_masker, "utf-8")
        assert outcome(pg.rewrite_data_row, mutated, fast_plan, fast_masker, "utf-8") == expected
        assert outcome(mask, b"x" + mutated, 1, 1 + len(mutated)) == expected


LENGTHS = st.one_of(st.integers(-3, 300), st.sampled_from([2**31 - 1, -(2**31)]))


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
    (masker, plan, _), _ = plans(PROFILES[2], columns)
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


RULES = [  # (the relay's maskers here have no key: no hash)
    rule
    for profile in PROFILES
    for rule in profile["rules"]
    if "columns" not in rule and rule.get("strategy") != "hash"
]
BETWEEN_ROWS = [w.ParameterStatus("application_name", "x"), w.NoticeResponse("hello")]


@FUZZ
@given(
    rule=st.sampled_from(RULES),
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5),
    data=st.data(),
)
def test_the_relay_masks_a_results_rows_as_one_by_one(
    rule: dict[str, object], columns: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """The relay masks the rows of a result with one row masker and no look-up per row
    while no other message comes between them: the client, the counts, the row count and
    the recorder's sample are what masking each row on the general path gives. Streams
    cut anywhere; a message between rows."""
    masking = Masking(rule)
    relay, _ = w.make_relay({}, masking=masking)
    relay.client_data(w.Query("SELECT * FROM t"))
    description = row_description(columns)
    relay.server_data(w.frame(b"T", description))
    execution = relay._front_execution()
    assert execution is not None
    max_rows, max_bytes = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 300))
    sample = RowSample(execution, max_rows, max_bytes)
    execution.row_sink = sample.add
    general = Masker(load_profile({"name": "p", "rules": [rule]}))
    row_plan = pg.plan(general, pg.parse_row_description(description, "utf-8"))
    rows = data.draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns))))
    between = data.draw(st.sampled_from(BETWEEN_ROWS))
    at = data.draw(st.integers(0, len(rows)))
    stream, expected, sent = [], [], []
    for index, values in enumerate(rows):
        if index == at:
            stream.append(between)
            expected.append(between)
        payload = data_row(values)
        masked = pg._rewrite_each(payload, row_plan, general, "utf-8")
        sent.append(payload if masked is None else masked)
        stream.append(w.frame(b"D", payload))
        expected.append(w.frame(b"D", sent[-1]))
    whole = b"".join(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=5)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    assert b"".join(relay.server_data(piece) for piece in pieces) == b"".join(expected)
    assert execution.rows == (len(rows) or None)
    assert execution.masked_values == general.total
    assert masking.masker_.counts == general.counts
    kept: list[bytes] = []
    room = max_bytes
    for payload in sent:
        if len(kept) == max_rows or len(payload) > room:
            break
        kept.append(payload)
        room -= len(payload)
    assert sample.rows == kept


def test_rows_after_a_change_of_client_encoding_are_masked_in_it() -> None:
    """The relay's row masker for a result is made again when the client encoding changes."""
    relay, _ = w.make_relay({}, masking=Masking({"types": ["card"], "strategy": "partial"}))
    relay.client_data(w.Query("SELECT * FROM t"))
    relay.server_data(w.frame(b"T", row_description([("note", TEXT, 0)])))
    before = relay.server_data(w.frame(b"D", data_row([b"\xfe card 4111 1111 1111 1111"])))
    after = relay.server_data(
        w.ParameterStatus("client_encoding", "LATIN1")
        + w.frame(b"D", data_row([b"\xfe card 5555 5555 5555 4444"]))
    )
    assert before == w.frame(b"D", data_row(["\ufffd card **** **** **** 1111".encode()]))
    assert after.endswith(w.frame(b"D", data_row([b"\xfe card **** **** **** 4444"])))
