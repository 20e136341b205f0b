"""The relay masking results: the column look-up it sends on the session's own upstream
leg, how lineage reaches the rows, binary COPY, rows of unknown shape. Scripted bytes."""

from __future__ import annotations

import struct

import pytest

from jitgate.masking import Masker, load_profile
from jitgate.policy.types import Decision
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.protocols.postgres.relay import Relay
from tests.unit.protocols.postgres import wire as w

SSN_RULE = {"columns": ["customers.ssn"], "label": "ssn"}


class Masking:
    """The session's masking: one profile for every statement."""

    def __init__(self, *rules: dict[str, object]) -> None:
        self.masker_ = Masker(load_profile({"name": "p", "rules": list(rules)}))

    def masker(self, profile: str | None) -> Masker | None:
        return self.masker_ if profile else None

    def profile_for(self, decision: Decision) -> str | None:
        return "p"


def relay(*rules: dict[str, object]) -> Relay:
    made, _ = w.make_relay({}, masking=Masking(*(rules or (SSN_RULE,))))
    return made


def field(name: str, table: int = 0, attnum: int = 0, type_oid: int = 25) -> bytes:
    return name.encode() + b"\0" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, 0)


def RowDescription(*fields: bytes) -> bytes:
    return w.frame(b"T", struct.pack("!h", len(fields)) + b"".join(fields))


def DataRow(*cells: bytes | None) -> bytes:
    body = struct.pack("!h", len(cells))
    for cell in cells:
        body += b"\xff\xff\xff\xff" if cell is None else struct.pack("!i", len(cell)) + cell
    return w.frame(b"D", body)


CUSTOMERS = 16384
CATALOG_ROWS = [
    ["r", '"customers"', str(CUSTOMERS), "public", "customers", "r", None],
    ["a", None, str(CUSTOMERS), "1", "id", "23", None],
    ["a", None, str(CUSTOMERS), "2", "ssn", "25", None],
]


def lookup_answer(rows: list[list[str | None]] = CATALOG_ROWS, status: bytes = b"I") -> bytes:
    data = b"".join(DataRow(*(None if c is None else c.encode() for c in row)) for row in rows)
    return (
        w.ParseComplete() + w.BindComplete() + data + w.CommandComplete(f"SELECT {len(rows)}")
        + w.CloseComplete() + w.CloseComplete() + w.ReadyForQuery(status)
    )  # fmt: skip


def codes(data: bytes) -> list[bytes]:
    return [code for code, _ in w.messages(data)]


def rows(data: bytes) -> list[list[bytes | None]]:
    out = []
    for code, payload in w.messages(data):
        if code != b"D":
            continue
        (count,) = struct.unpack_from("!h", payload)
        offset, cells = 2, []
        for _ in range(count):
            (length,) = struct.unpack_from("!i", payload, offset)
            offset += 4
            cells.append(None if length < 0 else payload[offset : offset + length])
            offset += max(length, 0)
        out.append(cells)
    return out


def test_the_lookup_goes_before_the_statement_and_its_answer_never_reaches_the_client() -> None:
    r = relay()
    forwarded = r.client_data(w.Query("SELECT upper(ssn) AS s, id FROM customers"))
    assert codes(forwarded) == [b"P", b"B", b"E", b"C", b"C", b"S", b"Q"]
    assert w.messages(forwarded)[-1] == (b"Q", b"SELECT upper(ssn) AS s, id FROM customers\0")
    answer = RowDescription(field("s"), field("id", CUSTOMERS, 1, 23))
    answer += DataRow(b"N/A", b"1") + w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    out = r.server_data(lookup_answer() + answer)
    assert codes(out) == [b"T", b"D", b"C", b"Z"]
    assert rows(out) == [[b"[REDACTED:ssn]", b"1"]]
    # The next statement on the same table needs no look-up.
    again = w.Query("SELECT ssn FROM customers")
    assert r.client_data(again) == again


def test_the_lookup_answer_may_arrive_in_pieces() -> None:
    r = relay()
    r.client_data(w.Query("SELECT ssn AS s, id FROM customers"))
    answer = RowDescription(field("s", CUSTOMERS, 2), field("id", CUSTOMERS, 1, 23))
    answer += DataRow(b"n/a", b"1") + w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    stream = lookup_answer() + answer
    out = b"".join(r.server_data(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert rows(out) == [[b"[REDACTED:ssn]", b"1"]]


def test_notices_during_the_lookup_are_the_clients() -> None:
    r = relay()
    r.client_data(w.Query("SELECT id FROM customers"))
    answer = w.ParseComplete() + w.NoticeResponse("hello") + w.ParameterStatus("TimeZone", "UTC")
    answer += lookup_answer()[len(w.ParseComplete()) :]
    assert codes(r.server_data(answer)) == [b"N", b"S"]


def test_one_lookup_for_pipelined_statements_on_the_same_tables() -> None:
    r = relay()
    first = r.client_data(w.Query("SELECT id FROM customers"))
    second = w.Query("SELECT ssn FROM customers")
    assert codes(first)[0] == b"P" and r.client_data(second) == second


def test_a_failed_lookup_warns_and_fails_closed() -> None:
    r = relay()
    r.client_data(w.Query("SELECT id, name FROM customers"))
    failed = w.ErrorResponse("57014", "canceling statement due to user request") + w.ReadyForQuery()
    answer = RowDescription(field("id", CUSTOMERS, 1, 23), field("name", CUSTOMERS, 3))
    answer += DataRow(b"1", b"Bob") + w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    out = r.server_data(failed + answer)
    assert codes(out) == [b"N", b"T", b"D", b"C", b"Z"]
    notice = w.error_fields(w.messages(out)[0][1])
    assert notice["S"] == "WARNING" and "look-up for masking failed" in notice["M"]
    assert rows(out) == [[None, b"[REDACTED:ssn]"]]  # nothing known: every column rule applies
    query = w.Query("SELECT id FROM customers")
    assert r.client_data(query) == query  # not asked again at once (nor warned again)


def test_no_lookup_in_the_middle_of_a_pipeline_rows_fail_closed() -> None:
    r = relay()
    first = w.Parse("SELECT 1") + w.Bind() + w.Execute()
    second = w.Parse("SELECT id, name FROM customers", "s2") + w.Bind("", "s2")
    second += w.Describe(b"P") + w.Execute() + w.Sync()
    assert r.client_data(first + second) == first + second  # nothing injected
    answer = w.ParseComplete() + w.BindComplete() + DataRow(b"1") + w.CommandComplete("SELECT 1")
    answer += w.ParseComplete() + w.BindComplete()
    answer += RowDescription(field("id", CUSTOMERS, 1, 23), field("name", CUSTOMERS, 3))
    answer += DataRow(b"1", b"Bob") + w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    assert rows(r.server_data(answer))[-1] == [None, b"[REDACTED:ssn]"]


def test_after_a_sync_a_lookup_is_safe_again() -> None:
    r = relay()
    first = w.Parse("SELECT 1") + w.Bind() + w.Execute() + w.Sync()
    assert r.client_data(first) == first
    second = w.Parse("SELECT ssn FROM customers")
    assert codes(r.client_data(second))[:2] == [b"P", b"B"]


def test_no_lookup_in_a_failed_transaction_or_without_column_rules() -> None:
    r = relay()
    r.client_data(w.Query("BEGIN"))
    r.server_data(w.CommandComplete("BEGIN") + w.ReadyForQuery(b"E"))
    query = w.Query("SELECT ssn FROM customers")
    assert r.client_data(query) == query
    plain = relay({"types": ["email"]})
    assert plain.client_data(query) == query


def test_ddl_makes_the_catalog_stale() -> None:
    r = relay()
    r.client_data(w.Query("SELECT id FROM customers"))
    r.server_data(lookup_answer() + w.CommandComplete("SELECT 0") + w.ReadyForQuery())
    ddl = w.Query("ALTER TABLE customers RENAME COLUMN id TO ssn2")
    assert r.client_data(ddl) == ddl
    r.server_data(w.CommandComplete("ALTER TABLE") + w.ReadyForQuery())
    assert codes(r.client_data(w.Query("SELECT id FROM customers")))[0] == b"P"


def test_statements_after_ddl_in_the_same_query_fail_closed() -> None:
    r = relay()
    query = w.Query("ALTER TABLE customers ADD COLUMN x text; SELECT id FROM customers")
    assert r.client_data(query) == query
    answer = w.CommandComplete("ALTER TABLE")
    answer += RowDescription(field("id", CUSTOMERS, 1, 23)) + DataRow(b"1")
    answer += w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    assert rows(r.server_data(answer)) == [[None]]


def test_binary_copy_is_refused() -> None:
    r = relay({"types": ["email"]})
    forwarded = r.client_data(w.Query("COPY customers TO STDOUT (FORMAT binary)"))
    marker = w.denial_marker(forwarded)
    out = r.server_data(w.invalid_int(marker) + w.ReadyForQuery())
    error = w.error_fields(w.messages(out)[0][1])
    assert error["C"] == "42501" and "binary format cannot be masked" in error["M"]
    plain, _ = w.make_relay({})
    copy = w.Query("COPY customers TO STDOUT (FORMAT binary)")
    assert plain.client_data(copy) == copy  # no masking: nothing to refuse


def test_binary_copy_output_is_never_forwarded_under_masking() -> None:
    r = relay({"types": ["email"]})
    r.client_data(w.Query("COPY customers TO STDOUT"))
    with pytest.raises(ProtocolViolation):
        r.server_data(w.frame(b"H", b"\x01" + struct.pack("!hh", 1, 1)) + w.CopyData(b"PGCOPY"))


def test_copy_rows_follow_the_catalog() -> None:
    r = relay()
    forwarded = r.client_data(w.Query("COPY customers TO STDOUT"))
    assert codes(forwarded)[0] == b"P"
    out = r.server_data(
        lookup_answer()
        + w.frame(b"H", b"\x00" + struct.pack("!hhh", 2, 0, 0))
        + w.CopyData(b"1\tn/a\n")
        + w.CopyData(b"2\t\\N\n")
    )
    assert [p for c, p in w.messages(out) if c == b"d"] == [b"1\t[REDACTED:ssn]\n", b"2\t\\N\n"]


def test_copy_of_a_table_whose_columns_are_unknown_masks_every_field() -> None:
    r = relay()
    r.client_data(w.Query("BEGIN; COPY customers TO STDOUT"))  # BEGIN: no catalog change
    r.server_data(w.ErrorResponse("57014", "canceled") + w.ReadyForQuery())  # look-up failed
    out = r.server_data(
        w.CommandComplete("BEGIN")
        + w.frame(b"H", b"\x00" + struct.pack("!hhh", 2, 0, 0))
        + w.CopyData(b"1\tn/a\n")
    )
    assert [p for c, p in w.messages(out) if c == b"d"] == [b"[REDACTED:ssn]\t[REDACTED:ssn]\n"]


def test_rows_of_an_undescribed_portal_become_null_when_masked() -> None:
    r = relay({"types": ["card"]})
    stream = w.Parse("SELECT $1::text", "s") + w.Sync()
    r.client_data(stream)
    r.server_data(w.ParseComplete() + w.ReadyForQuery())
    r.client_data(w.Bind("", "s", b"4111111111111111") + w.Execute() + w.Sync())
    out = r.server_data(
        w.BindComplete() + DataRow(b"4111111111111111") + w.CommandComplete("SELECT 1")
        + w.ReadyForQuery()
    )  # fmt: skip
    assert rows(out) == [[None]]


def test_masking_relay_with_no_profile_forwards_byte_for_byte() -> None:
    class Off(Masking):
        def profile_for(self, decision: Decision) -> str | None:
            return None

    r, _ = w.make_relay({}, masking=Off(SSN_RULE))
    query = w.Query("SELECT ssn FROM customers")
    assert r.client_data(query) == query
    answer = RowDescription(field("ssn", CUSTOMERS, 2)) + DataRow(b"n/a")
    answer += w.CommandComplete("SELECT 1") + w.ReadyForQuery()
    assert r.server_data(answer) == answer


def test_a_fatal_error_during_the_lookup_reaches_the_client() -> None:
    r = relay()
    r.client_data(w.Query("SELECT id FROM customers"))
    out = r.server_data(w.ErrorResponse("57P01", "terminating connection", "FATAL"))
    assert codes(out) == [b"E"] and r.upstream_fatal
    assert not any(kind.name == "LOOKUP" for kind, _item, _ends in r._expect)
    r.close()


def test_copies_of_masked_columns_are_refused_and_recorded() -> None:
    made, recorder = w.make_relay({}, masking=Masking(SSN_RULE))
    sql = "CREATE TABLE x AS SELECT ssn FROM customers"
    forwarded = made.client_data(w.Query(sql))
    assert b"customers" not in forwarded  # nothing of it reaches the upstream
    out = made.server_data(w.invalid_int(w.denial_marker(forwarded)) + w.ReadyForQuery())
    error = w.error_fields(w.messages(out)[0][1])
    assert error["C"] == "42501"
    assert error["M"] == (
        "jitgate: this statement would copy columns that are masked for you (customers.ssn) "
        "into a table; masking applies to results, not to copies"
    )
    assert recorder.summary() == [(sql, "denied", None, "42501")]
    allowed = w.Query("UPDATE customers SET name = 'x' WHERE id = 1")
    assert made.client_data(allowed).endswith(allowed)


def test_copies_are_refused_at_parse_and_at_execute_of_a_prepared_statement() -> None:
    r = relay()
    forwarded = r.client_data(w.Parse("INSERT INTO notes (body) SELECT ssn FROM customers"))
    assert b"customers" not in forwarded and b"jitgate-denied-" in forwarded
    prepare = w.Query("PREPARE p AS SELECT ssn FROM customers")
    r2 = relay()
    assert r2.client_data(prepare).endswith(prepare)  # preparing a SELECT copies nothing
    r2.server_data(w.CommandComplete("PREPARE") + w.ReadyForQuery())
    forwarded = r2.client_data(w.Query("CREATE TABLE x AS EXECUTE p"))
    assert b"jitgate-denied-" in forwarded and b"EXECUTE" not in forwarded
    out = r2.server_data(w.invalid_int(w.denial_marker(forwarded)) + w.ReadyForQuery())
    assert "tables with masked columns (customers)" in w.error_fields(w.messages(out)[0][1])["M"]


def test_detector_rules_do_not_refuse_copies() -> None:
    r = relay({"types": ["ssn"]})
    query = w.Query("CREATE TABLE x AS SELECT ssn FROM customers")
    assert r.client_data(query) == query
