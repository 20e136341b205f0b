"""Hypothesis fuzzing of the masking codec and of a masking relay: random and mutated
DataRow, RowDescription and CopyData never crash; they give valid messages or a
ProtocolViolation."""

from __future__ import annotations

import contextlib
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.masking import ColumnInfo, Masker, load_profile
from jitgate.policy.types import Decision
from jitgate.protocols.postgres import masking as pg
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.protocols.postgres.relay import Relay
from jitgate.sql.lineage import CopyOptions
from tests.unit.protocols.postgres import wire as w

FUZZ = settings(
    max_examples=int(os.environ.get("JITGATE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MASKER = Masker(
    load_profile(
        {
            "name": "fuzz",
            "rules": [
                {"columns": ["t.secret", "*ssn*"], "label": "ssn"},
                {"types": ["email"], "strategy": "null"},
                {"types": ["*"]},
            ],
        }
    )
)
TYPES = [25, 23, 1700, 3802, 17, 1043, 114, 2950]

values = st.one_of(
    st.none(),
    st.binary(max_size=24),
    st.sampled_from([b"4111 1111 1111 1111", b"jo@example.com", b"123-45-6789", b"\x01{}", b"n/a"]),
)


def data_row(cells: list[bytes | None]) -> bytes:
    body = struct.pack("!h", len(cells))
    for cell in cells:
        body += b"\xff\xff\xff\xff" if cell is None else struct.pack("!i", len(cell)) + cell
    return body


def row_description(fields: list[tuple[str, int, int, int, int]]) -> bytes:
    body = struct.pack("!h", len(fields))
    for name, table, attnum, type_oid, fmt in fields:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, fmt)
    return body


fields_strategy = st.lists(
    st.tuples(
        st.sampled_from(["id", "ssn", "note", "secret", "x"]),
        st.integers(0, 3),
        st.integers(0, 4),
        st.sampled_from(TYPES),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=5,
)


def assert_data_row(payload: bytes, width: int | None = None) -> None:
    (count,) = struct.unpack_from("!h", payload)
    assert width is None or count == width
    offset = 2
    for _ in range(count):
        (length,) = struct.unpack_from("!i", payload, offset)
        assert length >= -1
        offset += 4 + max(length, 0)
    assert offset == len(payload)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for position, value, how in edits:
        at = position % (len(out) + 1)
        if how == 0 or at == len(out):
            out.insert(at, value)
        elif how == 1:
            out[at] = value
        else:
            del out[at:]
    return bytes(out)


@FUZZ
@given(fields=fields_strategy, rows=st.data())
def test_valid_rows_give_valid_rows(
    fields: list[tuple[str, int, int, int, int]], rows: st.DataObject
) -> None:
    parsed = pg.parse_row_description(row_description(fields), "utf-8")
    columns = [ColumnInfo(f.name, sources=(("public.t", f.name),)) for f in parsed]
    plan = pg.plan(MASKER, parsed, columns)
    cells = rows.draw(st.lists(values, min_size=len(fields), max_size=len(fields)))
    out = pg.rewrite_data_row(data_row(cells), plan, MASKER, "utf-8")
    if out is not None:
        assert_data_row(out, len(fields))
    unknown = pg.mask_all_text_cells(data_row(cells), MASKER, "utf-8")
    if unknown is not None:
        assert_data_row(unknown, len(fields))


@FUZZ
@given(
    fields=fields_strategy,
    cells=st.lists(values, max_size=6),
    edits=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255), st.integers(0, 2)),
                   max_size=4),
)  # fmt: skip
def test_mutated_rows_give_valid_rows_or_a_protocol_violation(
    fields: list[tuple[str, int, int, int, int]],
    cells: list[bytes | None],
    edits: list[tuple[int, int, int]],
) -> None:
    description = mutate(row_description(fields), edits[:1])
    try:
        parsed = pg.parse_row_description(description, "utf-8")
    except ProtocolViolation:
        parsed = pg.parse_row_description(row_description(fields), "utf-8")
    plan = pg.plan(MASKER, parsed, None)
    payload = mutate(data_row(cells), edits)
    for rewrite in (
        lambda: pg.rewrite_data_row(payload, plan, MASKER, "utf-8"),
        lambda: pg.mask_all_text_cells(payload, MASKER, "utf-8"),
    ):
        try:
            out = rewrite()
        except ProtocolViolation:
            continue
        if out is not None:
            assert_data_row(out)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_row_descriptions(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        pg.parse_row_description(data, "utf-8")


copy_text = st.lists(
    st.lists(
        st.one_of(
            st.sampled_from(["\\N", "4111 1111 1111 1111", "jo@example.com", "a\\tb", "n/a"]),
            st.text(max_size=12),
        ),
        min_size=1,
        max_size=4,
    ).map("\t".join),
    max_size=4,
).map(lambda rows: "".join(row + "\n" for row in rows))


@FUZZ
@given(
    text=st.one_of(copy_text, st.text(max_size=80)),
    raw=st.binary(max_size=80),
    csv=st.booleans(),
    width=st.integers(0, 4),
)
def test_copy_data_never_crashes_and_keeps_its_rows(
    text: str, raw: bytes, csv: bool, width: int
) -> None:
    options = CopyOptions(format="csv", delimiter=",", null="") if csv else CopyOptions()
    columns = [ColumnInfo(f"c{i}", sources=(("public.t", "secret" if i == 1 else "x"),))
               for i in range(width)]  # fmt: skip
    for payload in (text.encode("utf-8", "surrogatepass"), raw):
        plan = pg.copy_plan(options, width, columns, "utf-8")
        out = pg.mask_copy_data(payload, plan, MASKER)
        if out is None or csv:
            continue
        assert out.count(b"\n") == payload.count(b"\n")  # text format: one row, one line
        for before, after in zip(payload.split(b"\n"), out.split(b"\n"), strict=True):
            assert len(pg._text_fields(after.decode("utf-8", "surrogateescape"), "\t")) == len(
                pg._text_fields(before.decode("utf-8", "surrogateescape"), "\t")
            )


@FUZZ
@given(data=st.binary(max_size=120))
def test_error_fields_never_crash(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        pg.mask_error_fields(data, MASKER, "utf-8", pg.table_scope(None))


# -- a masking relay, fed anything from the server ------------------------------------------------


class Masking:
    def masker(self, profile: str | None) -> Masker | None:
        return MASKER if profile else None

    def profile_for(self, decision: Decision) -> str | None:
        return decision.mask_profile or "fuzz"


def masking_relay() -> Relay:
    relay, _ = w.make_relay({}, masking=Masking(), max_message=1 << 16)
    return relay


def described(fields: list[tuple[str, int, int, int, int]]) -> bytes:
    return w.frame(b"T", row_description(fields))


server_message = st.one_of(
    st.just(w.ParseComplete()),
    st.just(w.BindComplete()),
    st.just(w.CloseComplete()),
    fields_strategy.map(described),
    st.lists(values, max_size=5).map(lambda cells: w.frame(b"D", data_row(cells))),
    st.binary(max_size=30).map(lambda b: w.frame(b"D", b)),
    st.binary(max_size=30).map(w.CopyData),
    st.text(max_size=30).map(lambda t: w.CopyData(t.encode())),
    st.just(w.CopyOutResponse()),
    st.just(w.frame(b"H", b"\x00" + struct.pack("!hhh", 2, 0, 0))),
    st.just(w.frame(b"H", b"\x01" + struct.pack("!hh", 1, 1))),
    st.sampled_from(["SELECT 1", "COPY 2"]).map(w.CommandComplete),
    st.sampled_from([b"I", b"T", b"E"]).map(w.ReadyForQuery),
    st.builds(w.ErrorResponse, st.sampled_from(["22012", "25P02"]), st.text(max_size=20)),
    st.text(max_size=20).map(w.NoticeResponse),
)

client_sql = st.sampled_from(
    [
        "SELECT ssn FROM t",
        "SELECT * FROM t",
        "SELECT upper(secret) AS s FROM t JOIN u USING (id)",
        "COPY t TO STDOUT",
        "COPY (SELECT secret FROM t) TO STDOUT (FORMAT csv, HEADER)",
        "ALTER TABLE t RENAME COLUMN a TO b",
        "SELECT 1",
    ]
)


@FUZZ
@given(
    requests=st.lists(client_sql, min_size=1, max_size=4),
    answers=st.lists(server_message, max_size=14),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255), st.integers(0, 1)),
                   max_size=3),
)  # fmt: skip
def test_a_masking_relay_gives_whole_messages_or_a_protocol_violation(
    requests: list[str], answers: list[bytes], edits: list[tuple[int, int, int]]
) -> None:
    relay = masking_relay()
    forwarded = relay.client_data(b"".join(w.Query(sql) for sql in requests))
    assert w.messages(forwarded)
    try:
        out = relay.server_data(mutate(b"".join(answers), edits))
    except ProtocolViolation:
        relay.close()
        return
    pos = 0
    while pos < len(out):  # the client only ever gets whole messages
        (length,) = struct.unpack_from("!I", out, pos + 1)
        assert length >= 4
        pos += 1 + length
    if not relay._server_skip:
        assert pos == len(out)
    relay.close()
