"""When things break: oversized messages, vanished clients, killed backends, cancels."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg import errors

from jitgate.recording.log import read_events
from tests.fixtures.postgres_gateway import PgGateway, unique
from tests.support.cutproxy import CutProxy
from tests.support.pgcluster import PgCluster
from tests.support.pgwire import WireClient, query, send_cancel, startup

pytestmark = pytest.mark.postgres


def backends(cluster: PgCluster, app: str) -> int:
    out = cluster.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'")
    return int(out)


def wait_until(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_oversized_message_is_fatal_and_closes_both_legs(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    gw = make_pg_gateway(max_message_bytes=4096)
    name = gw.add_connection(pg_scram).name
    app = unique("oversized")
    client = WireClient.connect(gw.port, name, gw.admin_token, application_name=app)
    client.send(query("SELECT 1"))
    assert client.until_ready()[-1].code == b"Z"
    assert backends(pg_scram, app) == 1
    client.send(query("SELECT '" + "x" * 10_000 + "'"))
    answer = client.read_all_until_closed()
    assert [m.code for m in answer] == [b"E"]
    assert answer[0].fields["S"] == "FATAL" and answer[0].sqlstate == "54000"
    assert "exceeds the limit of 4096" in answer[0].fields["M"]
    client.close()
    wait_until(lambda: backends(pg_scram, app) == 0, what="the upstream backend to go")
    row = gw.session(name)
    assert row.end_reason is not None and row.end_reason.startswith("protocol violation")
    # libpq sees the same
    with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match="exceeds the limit"):
            conn.execute("SELECT %s::text", ["y" * 10_000])
        assert conn.closed


def test_client_that_drops_mid_result(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    app = unique("dropper")
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token, application_name=app)
    client.send(query("SELECT g, repeat('x', 1000) FROM generate_series(1, 2000000) g"))
    for _ in range(100):
        client.read()
    # vanish with a reset, mid-result
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    wait_until(lambda: backends(pg_scram, app) == 0, what="the upstream backend to go")
    row = pg_gateway.session(name)
    assert row.ended_at is not None
    stmts = pg_gateway.statements(row)
    assert stmts[-1]["text"].startswith("SELECT g") and stmts[-1]["status"] == "error"
    assert stmts[-1]["error"] == "08006" and stmts[-1]["rows"] >= 100
    pg_gateway.verify(row)


def test_upstream_terminated_mid_query(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    app = unique("victim")
    path_seen: list[bool] = []

    def kill() -> None:
        wait_until(
            lambda: pg_scram.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                f"'{app}' AND query LIKE '%pg_sleep%' AND state = 'active'"
            ) == "1",
            what="the query to run",
        )  # fmt: skip
        # the statement is on disk before it reached the upstream
        row = pg_gateway.session(name, ended=False)
        events = list(read_events(pg_gateway.recording_path(row)))
        path_seen.append(any("pg_sleep" in e.get("text", "") for e in events))
        pg_scram.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE application_name = '{app}'")  # fmt: skip

    killer = threading.Thread(target=kill)
    with psycopg.connect(pg_gateway.dsn(name, application_name=app), autocommit=True) as conn:
        killer.start()
        started = time.monotonic()
        with pytest.raises(errors.AdminShutdown, match="terminating connection"):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 15
        killer.join()
        assert conn.closed or conn.broken
    assert path_seen == [True]
    row = pg_gateway.session(name)
    assert row.ended_at is not None
    assert row.end_reason == "upstream closed the connection"
    stmts = pg_gateway.statements(row)
    assert stmts[-1]["text"] == "SELECT pg_sleep(30)"
    assert (stmts[-1]["status"], stmts[-1]["error"]) == ("error", "57P01")
    pg_gateway.verify(row)
    pg_gateway.wait_idle()


@pytest.mark.parametrize("cut_after", [2 << 20, (2 << 20) + 1, (2 << 20) + 77])
def test_upstream_that_vanishes_mid_result(
    pg_gateway: PgGateway, pg_scram: PgCluster, cut_after: int
) -> None:
    """The upstream's stream ends in the middle of a large result with no message at all
    (a reset, at a few different bytes): the client is not left hanging and never gets a
    gateway message spliced into a row — a clean 08006 ErrorResponse between messages, or
    just the close when the break was inside a row. The recording keeps the statement with
    its failure, and the gateway holds no leg open."""
    proxy = CutProxy(pg_scram.port)
    try:
        name = pg_gateway.add_connection(pg_scram, port=proxy.port).name
        client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
        proxy.cut_after = cut_after  # bytes from the server, counted from the start
        started = time.monotonic()
        client.send(query("SELECT g, repeat('x', 200) FROM generate_series(1, 1000000) g"))
        got = client.read_all_until_closed()
        assert time.monotonic() - started < 15 and proxy.cut.is_set()
        client.close()
    finally:
        proxy.close()
    rows = [m for m in got if m.code == b"D"]
    assert rows and {m.code for m in got} <= {b"T", b"D", b"E"}
    errors_sent = [m for m in got if m.code == b"E"]
    tail = bytes(client._buf)  # what came after the last whole message
    if errors_sent:  # the break fell between two messages
        assert got[-1] is errors_sent[0] and errors_sent[0].sqlstate == "08006" and not tail
    else:  # inside a row: that row is cut short and nothing of the gateway's follows
        assert tail and tail[:1] == b"D" and b"jitgate" not in tail
    row = pg_gateway.session(name)
    assert row.end_reason == "upstream closed the connection"
    stmts = pg_gateway.statements(row)
    assert stmts[-1]["text"].startswith("SELECT g, repeat")
    assert stmts[-1]["status"] == "error"
    pg_gateway.verify(row)
    pg_gateway.wait_idle()


def test_upstream_that_vanishes_between_statements(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    """A reset while the session is idle: the client's next statement gets SQLSTATE 08006
    from the gateway (a native FATAL error), not a silent drop."""
    proxy = CutProxy(pg_scram.port)
    try:
        name = pg_gateway.add_connection(pg_scram, port=proxy.port).name
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.reset_all()
            wait_until(lambda: pg_gateway.sessions(name)[-1].ended_at is not None,
                       what="the session to end")  # fmt: skip
            with pytest.raises(psycopg.OperationalError) as failed:
                conn.execute("SELECT 2")
            assert failed.value.sqlstate == "08006", failed.value
            assert "upstream server closed the connection" in str(failed.value)
    finally:
        proxy.close()
    assert pg_gateway.session(name).end_reason == "upstream closed the connection"
    pg_gateway.wait_idle()


def test_cancel_needs_the_right_key(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    try:
        client.send(query("SELECT pg_backend_pid()"))
        reply = client.until_ready()
        assert int(reply[1].payload[6:].decode()) == client.pid  # DataRow: 1 col, len, value
        # forged: right PID, wrong secret; wrong PID, right secret
        client.send(query("SELECT pg_sleep(1), 'done'"))
        time.sleep(0.2)
        send_cancel(pg_gateway.port, client.pid, client.secret ^ 0x5A5A5A5A)
        send_cancel(pg_gateway.port, client.pid + 1, client.secret)
        reply = client.until_ready()
        assert [m.code for m in reply] == [b"T", b"D", b"C", b"Z"]
        # the real key cancels at once
        client.send(query("SELECT pg_sleep(30)"))
        time.sleep(0.2)
        started = time.monotonic()
        send_cancel(pg_gateway.port, client.pid, client.secret)
        reply = client.until_ready()
        assert time.monotonic() - started < 5
        assert [m.code for m in reply] == [b"T", b"E", b"Z"] and reply[1].sqlstate == "57014"
    finally:
        client.close()
    row = pg_gateway.session(name)
    cancels = [e for e in pg_gateway.events(row) if e["type"] == "cancel"]
    assert len(cancels) == 1


def test_gateway_shutdown_ends_sessions_natively(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    gw = make_pg_gateway()
    name = gw.add_connection(pg_scram).name
    app = unique("shutdown")
    client = WireClient.connect(gw.port, name, gw.admin_token, application_name=app)
    gw.call(gw.listener.stop())
    answer = client.read_all_until_closed()
    client.close()
    assert [m.code for m in answer] == [b"E"] and answer[0].sqlstate == "57P01"
    wait_until(lambda: backends(pg_scram, app) == 0, what="the upstream backend to go")
    assert gw.session(name).end_reason == "jitgate: the gateway is shutting down"


def test_upstream_fatal_reaches_the_client_once(pg_gateway: PgGateway, pg_scram: PgCluster) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    app = unique("fatal-once")
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token, application_name=app)
    try:
        client.send(query("SELECT pg_sleep(30)"))
        wait_until(
            lambda: (
                pg_scram.psql(
                    "SELECT count(*) FROM pg_stat_activity "
                    f"WHERE application_name = '{app}' AND state = 'active'"
                )
                == "1"
            ),
            what="the query to run",
        )
        pg_scram.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{app}'"
        )
        answer = client.read_all_until_closed()
    finally:
        client.close()
    # the RowDescription the backend had buffered, then its FATAL — and nothing more
    assert [(m.code, m.sqlstate) for m in answer] == [(b"T", None), (b"E", "57P01")]
    assert pg_gateway.session(name).end_reason == "upstream closed the connection"


def test_silent_client_is_timed_out(make_pg_gateway: Callable[..., PgGateway]) -> None:
    gw = make_pg_gateway(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert time.monotonic() - started < 5
    assert data[:1] == b"E" and b"C08006\0" in data and b"handshake timed out" in data


def test_an_internal_error_fails_closed(
    make_pg_gateway: Callable[..., PgGateway],
    pg_scram: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = make_pg_gateway()
    name = gw.add_connection(pg_scram).name
    real = gw.listener.classifier

    class Broken:
        def classify(self, sql: str) -> object:
            if "boom" in sql:
                raise RuntimeError("classifier bug")
            return real.classify(sql)

    gw.listener.classifier = Broken()  # type: ignore[assignment]
    client = WireClient.connect(gw.port, name, gw.admin_token)
    client.send(query("SELECT 'boom'"))
    answer = client.read_all_until_closed()
    client.close()
    assert [(m.code, m.sqlstate) for m in answer] == [(b"E", "XX000")]
    assert answer[0].fields["M"] == "jitgate: internal error"
    assert gw.session(name).end_reason == "internal error"
    assert "relaying a request failed" in caplog.text


def test_upstream_refusal_keeps_a_retryable_sqlstate(
    pg_gateway: PgGateway, pg_trust: PgCluster
) -> None:
    """Too many connections upstream reaches the client as 53300 (drivers and poolers
    retry on it), with the upstream's reason. (The upstream trusts the gateway: no
    credential is stored.)"""
    role = unique("limited").replace("-", "_")
    local = f"host=127.0.0.1 port={pg_trust.port} dbname=postgres user={pg_trust.superuser}"
    with psycopg.connect(local, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        try:
            name = pg_gateway.add_connection(
                pg_trust, database="postgres", username=role, password=None
            ).name
            with psycopg.connect(pg_gateway.dsn(name)) as first:
                assert first.execute("SELECT 1").fetchone() == (1,)
                with pytest.raises(ConnectionRefusedError) as refused:
                    WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
            fields = refused.value.args[0]
            assert fields["S"] == "FATAL" and fields["C"] == "53300"
            assert "too many connections" in fields["M"]
        finally:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_handshake_is_bounded(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    """A start-up packet over 10,000 bytes or a password message over 64 KiB is refused
    at its length word, FATAL 08P01, without waiting for the rest."""
    gw = make_pg_gateway(handshake_timeout=30)
    name = gw.add_connection(pg_scram).name
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(struct.pack("!II", 1_000_000, 196608))
        answer = WireClient(sock).read_all_until_closed()
    assert [(m.code, m.sqlstate) for m in answer] == [(b"E", "08P01")]
    assert answer[0].fields["M"] == "jitgate: invalid length of startup packet"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        client = WireClient(sock)
        client.send(startup({"user": "admin", "database": name}))
        assert client.read().code == b"R"  # AuthenticationCleartextPassword
        client.send(b"p" + struct.pack("!I", 70_000))
        answer = client.read_all_until_closed()
    assert [(m.code, m.sqlstate) for m in answer] == [(b"E", "08P01")]


def test_upstream_messages_are_bounded(
    make_pg_gateway: Callable[..., PgGateway], pg_scram: PgCluster
) -> None:
    """A NoticeResponse the gateway would have to buffer, over max_message_bytes, ends the
    session with a FATAL error; a large row (streamed, not buffered) still passes."""
    gw = make_pg_gateway(max_message_bytes=4096)
    name = gw.add_connection(pg_scram).name
    with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
        big = conn.execute("SELECT repeat('r', 100000)").fetchone()
        assert big is not None and len(big[0]) == 100_000
        with pytest.raises(psycopg.OperationalError) as broke:
            conn.execute("SELECT public.say(repeat('n', 3000) || repeat('n', 3000))")
        assert "the upstream server broke the protocol" in str(broke.value)
        assert broke.value.diag.message_detail is not None
        assert "exceeds the limit of 4096" in broke.value.diag.message_detail
    assert gw.session(name).end_reason == "upstream protocol error"


def test_random_bytes_get_an_error_or_a_close(
    pg_gateway: PgGateway, pg_scram: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Seeded random and mutated bytes, at start-up and after logging in: the gateway
    answers with an ErrorResponse or closes, never fails inside, and keeps serving."""
    import random

    name = pg_gateway.add_connection(pg_scram).name
    rng = random.Random(20261206)
    valid = startup({"user": "admin", "database": name})
    for round_ in range(60):
        if round_ % 3 == 0:
            data = rng.randbytes(rng.randint(1, 64))
        elif round_ % 10 == 1:  # an SSLRequest, then bytes that are no TLS handshake
            data = struct.pack("!II", 8, 80877103) + rng.randbytes(rng.randint(1, 64))
        else:
            mutated = bytearray(valid + b"p" + struct.pack("!I", 9) + b"tok\0")
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        with socket.create_connection(("127.0.0.1", pg_gateway.port), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    received += chunk
        # A close (the client half-closed: asyncio closes the socket at once), an error,
        # a one-byte TLS/GSS answer, NegotiateProtocolVersion or a password request.
        assert received[:1] in (b"", b"E", b"S", b"N", b"v", b"R"), received[:80]
        if received[:1] == b"E":
            assert b"SFATAL\0" in received
    for _ in range(40):  # after a good log-in: the relay's frontend codec
        client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
        client.send(rng.randbytes(rng.randint(5, 80)))
        client.sock.shutdown(socket.SHUT_WR)
        answer = client.read_all_until_closed()
        client.close()
        assert all(m.code in b"ETDCZISnN123sAtVG" for m in answer), answer
    assert "session failed" not in caplog.text
    assert "relaying a request failed" not in caplog.text
    assert "internal error" not in caplog.text
    with psycopg.connect(pg_gateway.dsn(name)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_client_that_half_closes_after_its_queries_still_gets_their_answers(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    """A script that writes its queries and shuts down its sending side (as a direct
    PostgreSQL connection allows) gets every answer, then a clean close; the recording has
    the statements with their results."""
    name = pg_gateway.add_connection(pg_scram).name
    client = WireClient.connect(pg_gateway.port, name, pg_gateway.admin_token)
    client.send(query("SELECT pg_sleep(0.3), 41 + 1") + query("SELECT 'second'"))
    client.sock.shutdown(socket.SHUT_WR)
    answer = client.read_all_until_closed()
    client.close()
    codes = [m.code for m in answer]
    assert codes == [b"T", b"D", b"C", b"Z", b"T", b"D", b"C", b"Z"], answer
    assert answer[1].payload.endswith(b"42") and answer[5].payload.endswith(b"second")
    row = pg_gateway.session(name)
    assert row.end_reason == "client disconnected"
    results = [e for e in read_events(pg_gateway.recording_path(row)) if e["type"] == "result"]
    assert [(r["status"], r["rows"]) for r in results] == [("ok", 1), ("ok", 1)]
