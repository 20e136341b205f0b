"""Recording through the writer process (``recording.writer: process``, for PostgreSQL
sessions): the records reach the spool ring before the client sees an answer,
a writer that dies is taken over without losing a record, a writer that cannot write
makes a session that fails closed refuse its statements until it can again.

The writer is a real process (stopped and killed with real signals); the full disk is a
real, small tmpfs filled up with a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from jitgate.recording.encode import REQUEST, RESULT, load_record
from jitgate.recording.handoff import Handoff
from jitgate.recording.ring import Ring
from tests.fixtures.postgres_gateway import WRITER_PROCESS, PgGateway, run_pg_gateway
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def _handoff(gw: PgGateway) -> Handoff:
    handoff = gw.call_soon(lambda: gw.gateway.recorder._handoff)
    assert handoff is not None and handoff.alive
    return handoff


def _spooled(ring_path: Path) -> list[tuple[object, ...]]:
    """The records in the ring the writer has not consumed yet."""
    ring = Ring.attach(ring_path)
    try:
        return [load_record(raw) for raw in ring.read()[0]]
    finally:
        ring.close()


def _wait(condition: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_answers_are_spooled_first_and_a_dead_writer_loses_nothing(
    pg_gateway_writer: PgGateway, pg_scram: PgCluster
) -> None:
    name = pg_gateway_writer.add_connection(pg_scram).name
    with psycopg.connect(pg_gateway_writer.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 'before'")
        handoff = _handoff(pg_gateway_writer)
        writer = handoff.process.pid
        os.kill(writer, signal.SIGSTOP)  # the writer falls behind: nothing is consumed
        try:
            for i in range(3):
                conn.execute(f"SELECT {i} AS spooled")
                records = _spooled(handoff.ring.path)
                texts = {r[5]: r[6] for r in records if r[0] == REQUEST}
                results = [r[4] for r in records if r[0] == RESULT]
                # the answer the client just got is in the ring, with its request
                assert texts[results[-1][0]] == f"SELECT {i} AS spooled"  # type: ignore[index]
                assert results[-1][1:4] == ("ok", "SELECT 1", 1)  # type: ignore[index]
        finally:
            os.kill(writer, signal.SIGKILL)
        _wait(lambda: not handoff.alive, "the gateway did not notice its writer died")
        conn.execute("SELECT 'after'")  # the session goes on, recorded inline
    row = pg_gateway_writer.session(name)
    pg_gateway_writer.verify(row)
    texts = [s["text"] for s in pg_gateway_writer.statements(row)]
    assert texts == [
        "SELECT 'before'",
        *[f"SELECT {i} AS spooled" for i in range(3)],
        "SELECT 'after'",
    ]
    assert all(s["status"] == "ok" for s in pg_gateway_writer.statements(row))
    assert pg_gateway_writer.events(row)[-1]["type"] == "seal"
    assert row.recording_state == "ok" and row.event_count == len(pg_gateway_writer.events(row))
    assert not handoff.ring.path.exists()
    # the next session gets a new writer
    with psycopg.connect(pg_gateway_writer.dsn(name), autocommit=True) as conn:
        conn.execute("SELECT 'new writer'")
        assert _handoff(pg_gateway_writer).process.pid != writer
    row = pg_gateway_writer.session(name)
    pg_gateway_writer.verify(row)
    assert [s["text"] for s in pg_gateway_writer.statements(row)] == ["SELECT 'new writer'"]
    # closed through the writer: every event it was handed is there, sealed
    assert row.recording_state == "ok" and row.event_count == len(pg_gateway_writer.events(row))
    assert pg_gateway_writer.events(row)[-1]["type"] == "seal"


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` up; the file that did it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


def test_a_full_disk_makes_the_session_refuse_until_it_has_room_again(
    tmp_path: Path, pg_scram: PgCluster
) -> None:
    data_dir = tmp_path / "data"
    recordings = data_dir / "recordings"
    with (
        _tmpfs(recordings, "40m"),
        run_pg_gateway(data_dir, settings_overrides=WRITER_PROCESS) as gw,
    ):
        assert gw.gateway.paths.recordings == recordings
        name = gw.add_connection(pg_scram).name
        with psycopg.connect(gw.dsn(name), autocommit=True) as conn:
            conn.execute("SELECT 'room'")
            filler = _fill(recordings)
            conn.execute("SELECT 'no room'")  # its records are in the ring, not the file
            recorder = next(s.recorder for s in gw.listener.sessions if s.recorder)
            _wait(lambda: recorder.refusing, "the writer's failure did not reach the session")
            with pytest.raises(errors.InsufficientPrivilege, match="cannot be recorded"):
                conn.execute("SELECT 'refused'")
            assert not conn.closed
            filler.unlink()
            _wait(lambda: not recorder.refusing, "the writer did not recover")
            conn.execute("SELECT 'room again'")
        row = gw.session(name)
        gw.verify(row)
        statements = [(s["text"], s["decision"]) for s in gw.statements(row)]
        assert statements == [
            ("SELECT 'room'", "allow"),
            ("SELECT 'no room'", "allow"),
            ("SELECT 'refused'", "deny"),
            ("SELECT 'room again'", "allow"),
        ]
        assert row.recording_state == "failed"  # it had failures, though nothing was lost
        assert gw.events(row)[-1]["type"] == "seal"
