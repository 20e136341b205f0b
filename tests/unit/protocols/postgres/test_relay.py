"""The sans-IO relay, driven with scripted byte streams in both directions."""

from __future__ import annotations

import pytest

from jitgate.policy.types import Decision
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.protocols.postgres.relay import UNKNOWN_PREPARED, Relay
from jitgate.sql.types import CommandKind
from tests.unit.protocols.postgres.wire import (
    Bind,
    BindComplete,
    Close,
    CloseComplete,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyInResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FunctionCall,
    FunctionCallResponse,
    NoData,
    NoticeResponse,
    ParameterStatus,
    Parse,
    ParseComplete,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
    Terminate,
    denial_marker,
    error_fields,
    invalid_int,
    make_relay,
    messages,
)


def test_allowed_query_is_forwarded_byte_for_byte_and_rows_counted() -> None:
    relay, rec = make_relay()
    request = Query("SELECT a FROM t")
    assert relay.client_data(request) == request
    assert [e.text for e in rec.started] == ["SELECT a FROM t"]
    answer = RowDescription("a") + DataRow(b"1") + DataRow(b"2") + CommandComplete("SELECT 2")
    answer += ReadyForQuery()
    assert relay.server_data(answer) == answer
    assert rec.summary() == [("SELECT a FROM t", "ok", 2, None)]
    assert rec.finished[0].duration_ms is not None


def test_messages_split_anywhere_give_the_same_result() -> None:
    stream = Query("SELECT 1; SELECT 2") + Parse("SELECT $1", "s") + Bind("", "s", b"7")
    stream += Execute() + Sync()
    answer = RowDescription("x") + DataRow(b"1") + CommandComplete("SELECT 1")
    answer += RowDescription("x") + DataRow(b"2") + CommandComplete("SELECT 1") + ReadyForQuery()
    answer += ParseComplete() + BindComplete() + DataRow(b"7") + CommandComplete("SELECT 1")
    answer += ReadyForQuery()
    relay, rec = make_relay()
    assert relay.client_data(stream) == stream and relay.server_data(answer) == answer
    whole = rec.summary()
    relay, rec = make_relay()
    forwarded = b"".join(relay.client_data(stream[i : i + 1]) for i in range(len(stream)))
    returned = b"".join(relay.server_data(answer[i : i + 1]) for i in range(len(answer)))
    assert forwarded == stream and returned == answer
    assert (
        rec.summary()
        == whole
        == [
            ("SELECT 1", "ok", 1, None),
            ("SELECT 2", "ok", 1, None),
            ("SELECT $1", "ok", 1, None),
        ]
    )


def test_large_data_rows_stream_through() -> None:
    relay, rec = make_relay()
    relay.client_data(Query("SELECT big"))
    row = DataRow(b"x" * 100_000)
    answer = RowDescription("big") + row + row + CommandComplete("SELECT 2") + ReadyForQuery()
    out = b"".join(relay.server_data(answer[i : i + 4096]) for i in range(0, len(answer), 4096))
    assert out == answer
    assert rec.summary() == [("SELECT big", "ok", 2, None)]
    assert len(relay._server_buf) == 0


def test_denied_query_is_replaced_and_its_error_rewritten() -> None:
    relay, rec = make_relay()
    forwarded = relay.client_data(Query("DROP TABLE accounts"))
    assert b"DROP" not in forwarded
    nonce = denial_marker(forwarded)
    assert messages(forwarded) == [(b"Q", f"SELECT '{nonce}'::pg_catalog.int4\0".encode())]
    back = relay.server_data(invalid_int(nonce) + ReadyForQuery())
    (error, ready) = messages(back)
    fields = error_fields(error[1])
    assert error[0] == b"E" and ready == (b"Z", b"I")
    assert fields["C"] == "42501"
    assert fields["M"] == "jitgate: DROP TABLE is not allowed on production connections"
    assert fields["D"] == "Decided by builtin:deny-drop-prod."
    assert nonce not in back.decode("latin-1")
    assert rec.summary() == [("DROP TABLE accounts", "denied", None, "42501")]


def test_denied_statement_in_a_multi_statement_query() -> None:
    relay, rec = make_relay()
    forwarded = relay.client_data(Query("INSERT INTO t VALUES (1); DROP TABLE t; SELECT 1"))
    nonce = denial_marker(forwarded)
    assert messages(forwarded)[0][1] == (
        f"INSERT INTO t VALUES (1); SELECT '{nonce}'::pg_catalog.int4; SELECT 1\0".encode()
    )
    relay.server_data(CommandComplete("INSERT 0 1") + invalid_int(nonce) + ReadyForQuery())
    assert rec.summary() == [
        ("INSERT INTO t VALUES (1)", "ok", 1, None),
        ("DROP TABLE t", "denied", None, "42501"),
        ("SELECT 1", "skipped", None, None),
    ]


def test_unparseable_text_never_reaches_the_upstream() -> None:
    relay, rec = make_relay()
    forwarded = relay.client_data(Query("SELEC 1; DROP TABLE t"))
    nonce = denial_marker(forwarded)
    assert b"DROP" not in forwarded and b"SELEC 1" not in forwarded
    back = messages(relay.server_data(invalid_int(nonce) + ReadyForQuery()))
    fields = error_fields(back[0][1])
    assert fields["C"] == "42601" and 'syntax error at or near "SELEC"' in fields["M"]
    assert rec.summary()[0][1:] == ("denied", None, "42601")


def test_error_skips_the_rest_up_to_sync() -> None:
    relay, rec = make_relay()
    relay.client_data(
        Parse("SELECT 1/0", "a") + Bind("", "a") + Execute()
        + Parse("SELECT 2", "b") + Bind("", "b") + Execute() + Sync()
        + Bind("", "b") + Execute() + Sync()
    )  # fmt: skip
    relay.server_data(
        ParseComplete() + BindComplete() + ErrorResponse("22012", "division by zero")
        + ReadyForQuery()
        + BindComplete() + ErrorResponse("26000", 'prepared statement "b" does not exist')
        + ReadyForQuery()
    )  # fmt: skip
    assert rec.summary() == [
        ("SELECT 1/0", "error", None, "22012"),
        ("SELECT 2", "skipped", None, None),
        ("SELECT 2", "error", None, "26000"),
    ]
    assert not relay._expect and b"b" not in relay._prepared and not relay._pending


def test_denied_parse_and_the_stale_portal_after_it() -> None:
    relay, rec = make_relay()
    relay.client_data(Parse("SELECT 1", "ok") + Sync())
    relay.server_data(ParseComplete() + ReadyForQuery())
    forwarded = relay.client_data(
        Parse("TRUNCATE t", "bad") + Bind("p", "bad") + Execute("p") + Sync()
        + Bind("p", "bad") + Execute("p") + Sync()
    )  # fmt: skip
    nonce = denial_marker(forwarded)
    assert messages(forwarded)[0] == (
        b"P",
        b"bad\0" + f"SELECT '{nonce}'::pg_catalog.int4\0".encode() + b"\0\0",
    )
    back = relay.server_data(
        invalid_int(nonce) + ReadyForQuery()
        + ErrorResponse("26000", 'prepared statement "bad" does not exist') + ReadyForQuery()
    )  # fmt: skip
    assert error_fields(messages(back)[0][1])["C"] == "42501"
    # the portals bound to the refused name were never attributed to its text
    assert [e.text for e in rec.started] == ["TRUNCATE t"]
    assert rec.summary() == [("TRUNCATE t", "denied", None, "42501")]


def test_denials_survive_ready_for_query_of_earlier_syncs() -> None:
    """Pipelined: the Sync answered first must not forget a denial still in flight."""
    relay, rec = make_relay()
    forwarded = relay.client_data(
        Parse("SELECT 1") + Bind() + Execute() + Sync()
        + Parse("DROP TABLE t") + Bind() + Execute() + Sync()
        + Query("TRUNCATE t")
    )  # fmt: skip
    first, second = (m for m in forwarded.split(b"jitgate-denied-")[1:])
    nonce_parse = "jitgate-denied-" + first[: first.index(b"'")].decode()
    nonce_query = "jitgate-denied-" + second[: second.index(b"'")].decode()
    assert nonce_parse != nonce_query
    back = relay.server_data(
        ParseComplete() + BindComplete() + DataRow(b"1") + CommandComplete("SELECT 1")
        + ReadyForQuery()
        + invalid_int(nonce_parse) + ReadyForQuery()
        + invalid_int(nonce_query) + ReadyForQuery()
    )  # fmt: skip
    errors = [error_fields(p)["C"] for t, p in messages(back) if t == b"E"]
    assert errors == ["42501", "42501"]
    assert b"jitgate-denied" not in back
    assert rec.summary() == [
        ("SELECT 1", "ok", 1, None),
        ("DROP TABLE t", "denied", None, "42501"),
        ("TRUNCATE t", "denied", None, "42501"),
    ]
    assert not relay._denials


def test_denied_statement_in_a_failed_transaction() -> None:
    relay, rec = make_relay()
    forwarded = relay.client_data(Query("DROP TABLE t"))
    back = relay.server_data(
        ErrorResponse("25P02", "current transaction is aborted") + ReadyForQuery(b"E")
    )
    assert error_fields(messages(back)[0][1])["C"] == "25P02"  # PostgreSQL's own answer
    assert denial_marker(forwarded) and not relay._denials
    assert rec.summary() == [("DROP TABLE t", "denied", None, "25P02")]
    assert relay.transaction_status == ord("E")


def test_named_statement_is_prepared_once_the_server_says_so() -> None:
    """A failed re-Parse of an existing name leaves the name meaning what it meant."""
    relay, rec = make_relay()
    relay.client_data(Parse("SELECT salary FROM payroll", "s1") + Sync())
    relay.server_data(ParseComplete() + ReadyForQuery())
    relay.client_data(Parse("SELECT 1", "s1") + Sync())
    relay.server_data(
        ErrorResponse("42P05", 'prepared statement "s1" already exists') + ReadyForQuery()
    )
    relay.client_data(Bind("", "s1") + Execute() + Sync())
    relay.server_data(BindComplete() + DataRow(b"1") + CommandComplete("SELECT 1"))
    relay.server_data(ReadyForQuery())
    assert rec.summary() == [("SELECT salary FROM payroll", "ok", 1, None)]
    # a Bind pipelined right behind its Parse refers to the pending statement
    relay.client_data(Parse("SELECT 2", "s2") + Bind("", "s2") + Execute() + Sync())
    relay.server_data(
        ParseComplete() + BindComplete() + DataRow(b"2") + CommandComplete("SELECT 1")
        + ReadyForQuery()
    )  # fmt: skip
    assert rec.summary()[-1] == ("SELECT 2", "ok", 1, None)
    # Close forgets it
    relay.client_data(Close(b"S", "s2") + Sync() + Bind("", "s2") + Execute() + Sync())
    assert [e.text for e in rec.started][-1] == "SELECT 2"
    assert len(rec.started) == 2


def test_portals_are_forgotten_outside_transactions() -> None:
    relay, _rec = make_relay()
    relay.client_data(Parse("SELECT 1", "s") + Bind("p", "s") + Sync())
    relay.server_data(ParseComplete() + BindComplete() + ReadyForQuery(b"T"))
    assert b"p" in relay._portals
    relay.client_data(Query("COMMIT"))
    relay.server_data(CommandComplete("COMMIT") + ReadyForQuery(b"I"))
    assert not relay._portals


def test_describe_close_and_suspended_portals() -> None:
    relay, rec = make_relay()
    relay.client_data(
        Parse("SELECT g FROM generate_series(1, 3) g", "s") + Describe(b"S", "s")
        + Bind("p", "s") + Describe(b"P", "p") + Execute("p", 2) + Execute("p", 2)
        + Close(b"P", "p") + Sync()
    )  # fmt: skip
    relay.server_data(
        ParseComplete() + RowDescription("g") + BindComplete() + RowDescription("g")
        + DataRow(b"1") + DataRow(b"2") + PortalSuspended()
        + DataRow(b"3") + CommandComplete("SELECT 1") + CloseComplete() + ReadyForQuery()
    )  # fmt: skip
    text = "SELECT g FROM generate_series(1, 3) g"
    assert rec.summary() == [(text, "ok", 2, None), (text, "ok", 1, None)]
    assert rec.finished[0].tag == "(suspended)"
    assert not relay._expect


def test_empty_query_and_notices_pass_through() -> None:
    relay, rec = make_relay()
    relay.client_data(Query(""))
    back = NoticeResponse("hello") + EmptyQueryResponse() + ReadyForQuery()
    assert relay.server_data(back) == back
    assert rec.summary() == [("", "ok", None, None)]


def test_copy_in_simple_protocol() -> None:
    relay, rec = make_relay()
    stream = Query("COPY t FROM STDIN") + CopyData(b"1\n") + CopyData(b"2\n") + CopyDone()
    assert relay.client_data(stream) == stream
    relay.server_data(CopyInResponse() + CommandComplete("COPY 2") + ReadyForQuery())
    relay.client_data(Query("SELECT 1"))
    relay.server_data(DataRow(b"1") + CommandComplete("SELECT 1") + ReadyForQuery())
    assert rec.summary() == [("COPY t FROM STDIN", "ok", 2, None), ("SELECT 1", "ok", 1, None)]


@pytest.mark.parametrize("sync_during_copy", [False, True])
def test_copy_in_extended_protocol_ignored_syncs(sync_during_copy: bool) -> None:
    """libpq: Parse/Bind/Describe/Execute/Sync, copy data, CopyDone, Sync — the server
    ignores Syncs while in copy-in mode and answers only the last one."""
    relay, rec = make_relay()
    relay.client_data(Parse("COPY t FROM STDIN") + Bind() + Describe() + Execute() + Sync())
    relay.server_data(ParseComplete() + BindComplete() + NoData() + CopyInResponse())
    if sync_during_copy:
        relay.client_data(Sync())
    relay.client_data(CopyData(b"1\n") + CopyDone() + Sync())
    relay.server_data(CommandComplete("COPY 1") + ReadyForQuery())
    relay.client_data(Query("SELECT 5"))
    relay.server_data(RowDescription("x") + DataRow(b"5") + CommandComplete("SELECT 1"))
    relay.server_data(ReadyForQuery())
    assert rec.summary() == [("COPY t FROM STDIN", "ok", 1, None), ("SELECT 5", "ok", 1, None)]
    assert not relay._expect


def test_fast_path_large_objects_allowed_others_denied() -> None:
    relay, rec = make_relay()
    call = FunctionCall(952, b"\0\0\0\1", b"\0\0\0\1")
    assert relay.client_data(call) == call
    relay.server_data(FunctionCallResponse(b"\0\0\0\0") + ReadyForQuery(b"T"))
    forwarded = relay.client_data(FunctionCall(2_000_000))
    nonce = denial_marker(forwarded)
    assert forwarded[:1] == b"Q"
    back = relay.server_data(invalid_int(nonce) + ReadyForQuery(b"E"))
    fields = error_fields(messages(back)[0][1])
    assert fields["C"] == "42501" and "function OID 2000000" in fields["M"]
    assert rec.summary() == [
        ("<fast-path call of lo_open>", "ok", None, None),
        ("<fast-path call of function OID 2000000>", "denied", None, "42501"),
    ]


def test_client_encoding_is_followed() -> None:
    relay, rec = make_relay()
    relay.client_data(Query("SET client_encoding TO 'LATIN1'"))
    relay.server_data(
        CommandComplete("SET") + ParameterStatus("client_encoding", "LATIN1") + ReadyForQuery()
    )
    latin1 = "SELECT 'façade'".encode("latin-1")
    assert relay.client_data(Query(latin1)) == Query(latin1)
    relay.server_data(DataRow("façade".encode("latin-1")) + CommandComplete("SELECT 1"))
    relay.server_data(ReadyForQuery())
    forwarded = relay.client_data(Query("SELECT 'ç'; DROP TABLE t".encode("latin-1")))
    nonce = denial_marker(forwarded)
    assert messages(forwarded)[0][1] == (
        f"SELECT 'ç'; SELECT '{nonce}'::pg_catalog.int4\0".encode("latin-1")
    )
    assert [e.text for e in rec.started][1:] == ["SELECT 'façade'", "SELECT 'ç'", "DROP TABLE t"]


def test_text_invalid_in_the_client_encoding_is_refused() -> None:
    relay, rec = make_relay()
    forwarded = relay.client_data(Query(b"SELECT '\xe9'; DROP TABLE t"))
    nonce = denial_marker(forwarded)
    assert b"DROP" not in forwarded
    back = relay.server_data(invalid_int(nonce) + ReadyForQuery())
    fields = error_fields(messages(back)[0][1])
    assert fields["C"] == "22021" and "invalid byte sequence" in fields["M"]
    assert rec.summary()[0][1:] == ("denied", None, "22021")
    # names are bytes: any byte sequence works as a statement or portal name
    relay.client_data(Parse("SELECT 1", "\udce9".encode("utf-8", "surrogatepass")) + Sync())


def test_oversized_and_malformed_client_messages() -> None:
    relay, _ = make_relay(max_message=1024)
    with pytest.raises(ProtocolViolation) as big:
        relay.client_data(Query("SELECT '" + "x" * 2000 + "'"))
    assert big.value.sqlstate == "54000"
    relay, _ = make_relay()
    with pytest.raises(ProtocolViolation) as bad:
        relay.client_data(b"Q\0\0\0\2")
    assert bad.value.sqlstate == "08P01"
    relay, _ = make_relay()
    with pytest.raises(ProtocolViolation):
        relay.client_data(b"!\0\0\0\4")
    relay, _ = make_relay()
    with pytest.raises(ProtocolViolation):
        relay.client_data(b"Q\0\0\0\5x")  # unterminated string


def test_terminate_and_close_in_flight() -> None:
    relay, rec = make_relay()
    relay.client_data(Query("SELECT pg_sleep(10)"))
    relay.server_data(RowDescription("pg_sleep"))
    relay.client_data(Terminate())
    assert relay.terminated
    relay.close()
    assert rec.summary() == [("SELECT pg_sleep(10)", "error", None, "08006")]


def test_upstream_fatal_is_noted() -> None:
    relay, rec = make_relay()
    relay.client_data(Query("SELECT pg_sleep(10)"))
    relay.server_data(ErrorResponse("57P01", "terminating connection", severity="FATAL"))
    assert relay.upstream_fatal
    assert rec.summary() == [("SELECT pg_sleep(10)", "error", None, "57P01")]


def test_non_prod_allows_drop_but_still_reviews_unbounded_writes() -> None:
    relay, rec = make_relay(tags={})
    assert relay.client_data(Query("DROP TABLE t")) == Query("DROP TABLE t")
    # Review holds the statement: nothing goes upstream and it is not recorded yet.
    assert relay.client_data(Query("DELETE FROM t") + Query("SELECT 1")) == b""
    assert relay.held is not None and relay.held.text == "DELETE FROM t"
    assert relay.held.decision.outcome.value == "review"
    assert [e.text for e in rec.started] == ["DROP TABLE t"]
    # Denied by the approvers: it fails in place, and what was queued behind it flows on.
    forwarded = relay.release(Decision.deny("request 7 was denied", "review-unbounded-writes"))
    assert b"jitgate-denied" in forwarded and forwarded.endswith(Query("SELECT 1"))
    assert relay.held is None
    assert [(e.text, e.decision.outcome.value) for e in rec.started] == [
        ("DROP TABLE t", "allow"),
        ("DELETE FROM t", "deny"),
        ("SELECT 1", "allow"),
    ]


def test_held_statement_released_by_approval_runs_unchanged() -> None:
    relay, rec = make_relay(tags={})
    both = Query("SELECT 1; DELETE FROM t; UPDATE t SET a = 1")
    assert relay.client_data(both) == b""
    assert relay.held is not None and relay.held.text == "DELETE FROM t"
    assert relay.release(Decision.allow("approved-request:1")) == b""
    assert relay.held is not None and relay.held.text == "UPDATE t SET a = 1"
    assert relay.release(Decision.allow("approved-request:2")) == both
    assert [(e.text, e.decision.outcome.value) for e in rec.started] == [
        ("SELECT 1", "allow"),
        ("DELETE FROM t", "allow"),
        ("UPDATE t SET a = 1", "allow"),
    ]
    assert [e.decision.policies for e in rec.started[1:]] == [
        ("approved-request:1",),
        ("approved-request:2",),
    ]
    with pytest.raises(RuntimeError):
        relay.release(Decision.allow())


def test_a_prepared_statement_in_review_is_held_at_execute_with_its_parameters() -> None:
    """Preparing runs nothing: the Parse goes upstream and the Execute is held, with the
    values it was bound to, so an approval is for the statement *and* those values."""
    relay, rec = make_relay(tags={})
    prepare = Parse("UPDATE t SET a = $1", "upd") + Sync()
    assert relay.client_data(prepare) == prepare
    relay.server_data(ParseComplete() + ReadyForQuery())
    run = Bind("", "upd", b"42") + Execute() + Sync()
    other = Bind("", "upd", b"7") + Execute() + Sync()
    # The Bind goes ahead (binding runs nothing); the Execute and what follows wait.
    assert relay.client_data(run + other) == Bind("", "upd", b"42")
    held = relay.held
    assert held is not None and held.text == "UPDATE t SET a = $1"
    assert held.params == ((), (b"42",))
    assert held.describe() == "UPDATE t SET a = $1\n-- parameters: $1 = '42'"
    assert rec.started == []
    released = relay.release(Decision.allow("approved-request:1"))
    assert released == Execute() + Sync() + Bind("", "upd", b"7")  # up to the next Execute
    assert relay.held is not None and relay.held.params == ((), (b"7",))
    refused = relay.release(Decision.deny("not this one"))
    assert b"jitgate-denied" in refused and refused.endswith(Sync())
    assert [(e.text, e.decision.outcome.value) for e in rec.started] == [
        ("UPDATE t SET a = $1", "allow"),
        ("UPDATE t SET a = $1", "deny"),
    ]


def test_held_parameters_are_shown_as_an_approver_needs_them() -> None:
    from jitgate.protocols.postgres.relay import HeldStatement
    from jitgate.sql.types import CommandKind, Statement

    stmt = Statement(CommandKind.DELETE, "DELETE", "DELETE FROM t WHERE a = $1", 0, 26)
    review = Decision.review("r")
    text = "DELETE FROM t WHERE a = $1 AND b = $2 AND c = $3"
    held = HeldStatement(text, stmt, review, "extended", ((0, 1, 0), (b"it's", b"\x00\x01", None)))
    assert held.describe().endswith(
        "-- parameters: $1 = 'it''s', $2 = <binary, 2 bytes: 0001>, $3 = NULL"
    )
    assert "not known" in HeldStatement(text, stmt, review, "extended", None).describe()
    assert HeldStatement(text, stmt, review, "query").describe() == text


def test_startup_client_encoding_and_multibyte_encodings() -> None:
    relay, rec = make_relay(client_encoding="SJIS")
    sql = "SELECT '表'; DROP TABLE t"  # 表 is 0x95 0x5c in Shift JIS: a backslash byte
    raw = sql.encode("shift_jis")
    assert b"\\" in raw
    forwarded = relay.client_data(Query(raw))
    nonce = denial_marker(forwarded)
    assert messages(forwarded)[0][1] == (
        f"SELECT '表'; SELECT '{nonce}'::pg_catalog.int4\0".encode("shift_jis")
    )
    assert [e.text for e in rec.started] == ["SELECT '表'", "DROP TABLE t"]
    back = relay.server_data(
        DataRow("表".encode("shift_jis")) + CommandComplete("SELECT 1") + invalid_int(nonce)
        + ReadyForQuery()
    )  # fmt: skip
    fields = messages(back)[2][1]
    assert b"C42501\0" in fields


def test_backslash_sql_is_refused_while_standard_conforming_strings_is_off() -> None:
    relay, rec = make_relay()
    sneaky = Query("SELECT 'x\\' , ' ; DROP TABLE t; -- '")
    done = CommandComplete("SELECT 1") + ReadyForQuery()
    relay.server_data(ParameterStatus("standard_conforming_strings", "off"))
    forwarded = relay.client_data(sneaky)
    assert b"DROP" not in forwarded and b"jitgate-denied" in forwarded
    relay.server_data(invalid_int(denial_marker(forwarded)) + ReadyForQuery())
    assert relay.client_data(Query("SELECT 1")) == Query("SELECT 1")  # no backslash: fine
    relay.server_data(done)
    escaped = Query("SELECT E'a\\'b', $$c\\d$$")  # read alike with the setting on or off
    assert relay.client_data(escaped) == escaped
    relay.server_data(done)
    relay.server_data(ParameterStatus("standard_conforming_strings", "on"))
    back_on = relay.client_data(Query("SELECT 'a\\'; DROP TABLE t"))
    assert b"SELECT 'a\\'; SELECT 'jitgate-denied" in back_on  # parsed: the DROP is seen
    first = rec.started[0].statement
    assert first is not None and "standard_conforming_strings" in (first.error or "")


def test_backslash_sql_is_refused_while_requests_are_in_flight() -> None:
    """A statement in flight may be turning standard_conforming_strings off; the server
    says so only in its answer, so a pipelined text that would read differently waits
    for nothing: it is refused."""
    relay, _rec = make_relay()
    assert relay.client_data(Query("SELECT set_config('a', 'b', false)"))
    pipelined = relay.client_data(Parse("SELECT 'x\\' , ' ; DROP TABLE t; -- '") + Sync())
    assert b"DROP" not in pipelined and b"jitgate-denied" in pipelined


def prepared_in(relay: Relay, sql: str) -> None:
    """Send ``sql`` (PREPARE …) and let the server confirm it, as PostgreSQL does."""
    assert relay.client_data(Query(sql)) == Query(sql)
    relay.server_data(CommandComplete("PREPARE") + ReadyForQuery())


def test_create_table_as_execute_is_decided_as_what_the_name_means_now() -> None:
    """One text, two meanings: neither the classifier's nor the gate's cache may carry
    the decision of one prepared statement over to another under the same name."""
    relay, rec = make_relay(tags={})
    prepared_in(relay, "PREPARE p AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    ctas = Query("CREATE TABLE leak AS EXECUTE p")
    assert relay.client_data(ctas) == b""  # held: it deletes every row of t
    held = relay.held
    assert held is not None  # an approver is shown what the name means, then the statement
    assert held.text.endswith("SELECT * FROM d;\nCREATE TABLE leak AS EXECUTE p")
    statement = held.statement
    assert (statement.kind, statement.tag, statement.inner_kind) == (
        CommandKind.DDL,
        "CREATE TABLE AS",
        CommandKind.DELETE,
    )
    assert (statement.has_where, statement.tables_written) == (False, {"leak", "t"})
    refused = relay.release(Decision.deny("not approved"))
    assert b"jitgate-denied" in refused
    relay.server_data(invalid_int(denial_marker(refused)) + ReadyForQuery())
    relay.client_data(Query("DEALLOCATE p"))
    relay.server_data(CommandComplete("DEALLOCATE") + ReadyForQuery())
    prepared_in(relay, "PREPARE p AS SELECT * FROM u")
    assert relay.client_data(ctas) == ctas
    ran = rec.started[-1]
    assert ran.decision.outcome.value == "allow" and ran.statement is not None
    assert (ran.statement.tables_read, ran.statement.tables_written) == ({"u"}, {"leak"})


def test_create_table_as_execute_of_an_unknown_name_fails_closed() -> None:
    relay, rec = make_relay()
    for request in (
        Query("CREATE TABLE leak AS EXECUTE nosuch"),
        Parse("CREATE TABLE leak AS EXECUTE nosuch"),
    ):
        assert b"jitgate-denied" in relay.client_data(request)
        assert rec.started[-1].decision.policies == (UNKNOWN_PREPARED,)


def test_execute_is_refused_for_what_its_parameters_call() -> None:
    relay, rec = make_relay()
    prepared_in(relay, "PREPARE q (text) AS SELECT $1")
    assert b"jitgate-denied" in relay.client_data(Query("EXECUTE q(pg_read_file('x'))"))
    assert rec.started[-1].decision.policies == ("builtin:deny-dangerous",)
    run = Query("EXECUTE q('x')")
    assert relay.client_data(run) == run


def test_explain_analyze_execute_runs_it_and_plain_explain_plans_it() -> None:
    relay, rec = make_relay(tags={})
    prepared_in(relay, "PREPARE d AS DELETE FROM t")
    assert relay.client_data(Query("EXPLAIN ANALYZE EXECUTE d")) == b""
    held = relay.held
    assert held is not None
    assert (held.statement.kind, held.statement.has_where) == (CommandKind.DELETE, False)
    relay.release(Decision.deny("not approved"))
    plan = Query("EXPLAIN EXECUTE d")
    assert relay.client_data(plan) == plan
    assert rec.started[-1].statement is not None
    assert rec.started[-1].statement.kind is CommandKind.EXPLAIN
