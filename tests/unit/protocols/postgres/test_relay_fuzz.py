"""Hypothesis fuzzing of the relay: any input works or is a ProtocolViolation, nothing else."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.policy.types import Decision
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.protocols.postgres.relay import Relay
from tests.unit.protocols.postgres import wire as w

FUZZ = settings(
    max_examples=int(os.environ.get("JITGATE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SQL = [
    "SELECT 1",
    "SELECT $1::int",
    "DROP TABLE t",
    "DELETE FROM t",
    "BEGIN",
    "COMMIT",
    "SELEC 1",
    "COPY t FROM STDIN",
    "SELECT 'é'; TRUNCATE t; SELECT 2",
    "",
    ";",
    "SET client_encoding TO 'LATIN1'",
    "PREPARE p AS SELECT 1",
    "PREPARE s1 AS DELETE FROM t",
    "EXECUTE p",
    "EXECUTE s1",
    "DEALLOCATE p",
    "DISCARD ALL",
    "DO $$ BEGIN END $$",
]

sql_text = st.one_of(
    st.sampled_from(SQL),
    st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40),
)
names = st.sampled_from(["", "s1", "s2", "p"])

client_message = st.one_of(
    sql_text.map(w.Query),
    st.builds(w.Parse, sql_text, names),
    st.builds(w.Bind, names, names),
    st.builds(w.Describe, st.sampled_from([b"S", b"P"]), names),
    st.builds(w.Execute, names, st.integers(0, 3)),
    st.builds(w.Close, st.sampled_from([b"S", b"P"]), names),
    st.just(w.Sync()),
    st.just(w.Flush()),
    st.binary(max_size=20).map(w.CopyData),
    st.just(w.CopyDone()),
    st.builds(w.FunctionCall, st.sampled_from([952, 954, 955, 1, 2**31])),
)

server_message = st.one_of(
    st.just(w.ParseComplete()),
    st.just(w.BindComplete()),
    st.just(w.CloseComplete()),
    st.just(w.NoData()),
    st.just(w.RowDescription("a")),
    st.binary(max_size=30).map(w.DataRow),
    st.sampled_from(["SELECT 1", "INSERT 0 3", "COPY 2", "SET", ""]).map(w.CommandComplete),
    st.just(w.EmptyQueryResponse()),
    st.just(w.PortalSuspended()),
    st.sampled_from([b"I", b"T", b"E"]).map(w.ReadyForQuery),
    st.builds(w.ErrorResponse, st.sampled_from(["22012", "42P01", "57P01"]), st.text(max_size=20)),
    st.just(w.NoticeResponse("n")),
    st.builds(
        w.ParameterStatus,
        st.sampled_from(["client_encoding", "TimeZone"]),
        st.sampled_from(["UTF8", "LATIN1", "SJIS", "EUC_TW", "bogus"]),
    ),
    st.just(w.CopyInResponse()),
    st.just(w.CopyOutResponse()),
    st.binary(max_size=8).map(w.FunctionCallResponse),
)


def _feed(relay: Relay, direction: str, data: bytes, cuts: list[int]) -> bytes:
    feed = relay.client_data if direction == "client" else relay.server_data
    out = []
    previous = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out.append(feed(data[previous:cut]))
        previous = cut
        while direction == "client" and relay.held is not None:
            # A statement held for review: the approvers say no, and the rest flows on.
            out.append(relay.release(Decision.deny("not approved", "test")))
    return b"".join(out)


def _normalized(relay: Relay, data: bytes) -> bytes:
    return data.replace(relay._marker.encode(), b"jitgate-denied-MARKER-")


@FUZZ
@given(data=st.binary(max_size=400), server=st.booleans())
def test_random_bytes(data: bytes, server: bool) -> None:
    relay, _ = w.make_relay()
    try:
        if server:
            relay.server_data(data)
        else:
            relay.client_data(data)
    except ProtocolViolation:
        pass
    relay.close()


@FUZZ
@given(
    requests=st.lists(client_message, max_size=12),
    answers=st.lists(server_message, max_size=16),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_valid_streams_in_any_chunks(
    requests: list[bytes], answers: list[bytes], cuts: list[int]
) -> None:
    """Well-framed messages in any order: no exception, and chunking changes nothing."""
    stream, answer = b"".join(requests), b"".join(answers)
    results = []
    for pieces in ([], cuts):
        relay, recorder = w.make_relay()
        forwarded = _normalized(relay, _feed(relay, "client", stream, pieces))
        returned = _normalized(relay, _feed(relay, "server", answer, pieces))
        relay.close()
        results.append((forwarded, returned, recorder.summary()))
        assert len(recorder.finished) == len(recorder.started)
        assert relay._server_skip == 0 and not relay._server_buf and not relay._client_buf
    assert results[0] == results[1]


@FUZZ
@given(
    requests=st.lists(client_message, min_size=1, max_size=8),
    answers=st.lists(server_message, max_size=10),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_streams(
    requests: list[bytes], answers: list[bytes], edits: list[tuple[int, int, bool]]
) -> None:
    streams = [bytearray(b"".join(requests)), bytearray(b"".join(answers))]
    for position, value, insert in edits:
        target = streams[position % 2]
        at = position % (len(target) + 1)
        if insert or at == len(target):
            target.insert(at, value)
        else:
            target[at] = value
    relay, _ = w.make_relay(max_message=4096)
    for direction, data in zip(("client", "server"), streams, strict=True):
        try:
            _feed(relay, direction, bytes(data), [])
        except ProtocolViolation:
            break
    relay.close()


@pytest.mark.parametrize("size", [0, 1, 4, 5])
def test_header_edge_cases(size: int) -> None:
    relay, _ = w.make_relay()
    data = w.Query("SELECT 1")[:size]
    assert relay.client_data(data) == b""
    assert relay.server_data(w.ReadyForQuery()[:size]) == b""
