"""When the recording cannot be written: fail closed (default) or open (per connection).

The disk is made to fail for real: the session's event-log descriptor is pointed at
``/dev/full`` (every write fails with ENOSPC) and pointed back to recover. (With the
writer process, see test_writer.py: a small tmpfs is filled up and emptied again.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from jitgate.recording.recorder import SessionRecorder
from tests.fixtures.postgres_gateway import APP_PASSWORD, APP_USER, PgGateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def _recorder(gw: PgGateway, connection: str) -> SessionRecorder:
    def find() -> SessionRecorder:
        (session,) = [s for s in gw.listener.sessions if s.connection_name == connection]
        assert session.recorder is not None
        return session.recorder

    return gw.call_soon(find)


@contextmanager
def disk_full(recorder: SessionRecorder) -> Iterator[None]:
    assert recorder.log is not None and recorder.log._fd is not None
    fd = recorder.log._fd
    saved = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(full)


def _table(cluster: PgCluster, name: str) -> str:
    table = f"audit_{name.replace('-', '_')}"
    with psycopg.connect(cluster.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (x int)")
    return table


def _rows(cluster: PgCluster, table: str) -> list[int]:
    with psycopg.connect(cluster.dsn("app", APP_USER, APP_PASSWORD), autocommit=True) as conn:
        return [r[0] for r in conn.execute(f"SELECT x FROM {table} ORDER BY x").fetchall()]


def test_fail_closed_a_request_that_cannot_be_recorded_never_runs(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    table = _table(pg_scram, name)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        recorder = _recorder(pg_gateway, name)
        refused = pytest.raises(psycopg.OperationalError, match="can no longer be recorded")
        with disk_full(recorder), refused:
            conn.execute(f"INSERT INTO {table} VALUES (2)")
    assert _rows(pg_scram, table) == [1]  # the unrecorded INSERT never reached the target
    row = pg_gateway.session(name)
    assert row.end_reason == "recording failed"
    events = pg_gateway.events(row)
    texts = [e.get("text") for e in events if e["type"] == "request"]
    # The disk came back before close: the event of the refused INSERT was kept and
    # written, marked as never answered, and the chain is whole and sealed.
    assert texts == [f"INSERT INTO {table} VALUES (1)", f"INSERT INTO {table} VALUES (2)"]
    assert events[-1]["type"] == "seal"
    pg_gateway.verify(row)


def test_fail_closed_refuses_statements_and_keeps_the_session(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    table = _table(pg_scram, name)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        recorder = _recorder(pg_gateway, name)
        # The failure is met by the result event of a statement already running …
        worker = threading.Thread(target=conn.execute, args=("SELECT pg_sleep(0.3)",))
        worker.start()
        time.sleep(0.1)
        with disk_full(recorder):
            worker.join(10)
            deadline = time.monotonic() + 5
            while not recorder.refusing:
                assert time.monotonic() < deadline, "the failed write was not noticed"
                time.sleep(0.02)
            # … so what comes next is refused with an error, and the session stays open.
            for value in (2, 3):
                with pytest.raises(errors.InsufficientPrivilege, match="cannot be recorded"):
                    conn.execute(f"INSERT INTO {table} VALUES ({value})")
            assert not conn.closed
        # The disk has space again: the next write succeeds and statements run again.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {table} VALUES (4)")
        conn.execute(f"INSERT INTO {table} VALUES (5)")
    assert _rows(pg_scram, table) == [5]
    row = pg_gateway.session(name)
    assert row.recording_state == "failed"  # it had failures, though nothing was lost
    pg_gateway.verify(row)
    decisions = [(e["text"][-3:], e["decision"]) for e in pg_gateway.events(row)
                 if e["type"] == "request" and "INSERT" in e["text"]]  # fmt: skip
    assert decisions == [("(2)", "deny"), ("(3)", "deny"), ("(4)", "deny"), ("(5)", "allow")]


def test_fail_open_lets_traffic_through_and_says_so_loudly(
    pg_gateway: PgGateway, pg_scram: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jitgate.recording")
    name = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(name, options={"recording_on_failure": "open"})
    table = _table(pg_scram, name)
    with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
        recorder = _recorder(pg_gateway, name)
        assert recorder.fail_open
        with disk_full(recorder):
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            assert recorder.log is not None and recorder.log.failed is not None
    assert _rows(pg_scram, table) == [1, 2]
    assert "RECORDING FAILURE (fail-open)" in caplog.text
    assert pg_gateway.session(name).recording_state == "failed"


def test_a_session_that_cannot_be_recorded_is_refused_at_login(
    pg_gateway: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway.add_connection(pg_scram).name
    recorder = pg_gateway.gateway.recorder
    root = recorder.root
    recorder.root = Path("/dev/null/recordings")  # not a directory: every open fails
    try:
        with pytest.raises(psycopg.OperationalError, match="cannot be recorded") as caught:
            psycopg.connect(pg_gateway.dsn(name))
    finally:
        recorder.root = root
    assert "HINT:  The connection's recording fails closed" in str(caught.value)
    # with recording off for the connection, the session is allowed and indexed only
    pg_gateway.gateway.connections.update(name, options={"recording": False})
    recorder.root = Path("/dev/null/recordings")
    try:
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            conn.execute("SELECT 1")
    finally:
        recorder.root = root
    row = pg_gateway.session(name)
    assert row.recording_state == "off" and row.recording_path is None
    assert row.counts == {"allow": 1}


def test_fail_open_a_session_whose_recording_cannot_be_opened_goes_on_unrecorded(
    pg_gateway: PgGateway, pg_scram: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jitgate.recording")
    name = pg_gateway.add_connection(pg_scram).name
    pg_gateway.gateway.connections.update(name, options={"recording_on_failure": "open"})
    table = _table(pg_scram, name)
    recorder = pg_gateway.gateway.recorder
    root = recorder.root
    recorder.root = Path("/dev/null/recordings")  # not a directory: every open fails
    try:
        with psycopg.connect(pg_gateway.dsn(name), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (7)")
            assert conn.execute(f"SELECT x FROM {table}").fetchall() == [(7,)]
    finally:
        recorder.root = root
    assert _rows(pg_scram, table) == [7]
    assert "RECORDING FAILURE (fail-open)" in caplog.text and "UNRECORDED" in caplog.text
    row = pg_gateway.session(name)
    assert row.recording_state == "failed" and row.recording_path is None
    assert row.counts == {"allow": 2} and row.ended_at is not None
