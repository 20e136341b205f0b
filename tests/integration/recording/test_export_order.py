"""The export walks sessions in the order they were closed, so a session closed late with
an early ``ended_at`` (an interrupted session recovered after the export moved on) is
still exported; on SQLite and on real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jitgate.recording.export import (
    Cursor,
    Exporter,
    FileSink,
    LeaseLost,
    StoreCursor,
    StoreSource,
)
from jitgate.recording.log import EventLog
from jitgate.store.db import Store
from jitgate.store.models import ExportCursorRow, RevisionRow, SessionRow, utcnow


def open_session(store: Store, root: Path, *, started_ago: float = 0, events: int = 2) -> str:
    """A session row with a recording of ``events`` events, left open."""
    session_id = str(uuid.uuid4())
    relative = f"test/{session_id}.jsonl"
    log = EventLog(root / relative, session_id)
    log.append("session.start", {"session": session_id})
    for n in range(events - 1):
        log.append("request", {"request": n + 1, "text": f"SELECT {n}", "decision": "allow"})
    log.close()
    with store.session() as db:
        db.add(
            SessionRow(
                id=session_id, protocol="postgres", connection_name="db",
                identity_id="i", identity_name="ann", auth_method="api_token",
                started_at=utcnow() - timedelta(seconds=started_ago),
                recording_path=relative, recording_state="ok", counts={},
            )
        )  # fmt: skip
    return session_id


def close(store: Store, session_id: str, *, ended_ago: float = 0) -> None:
    with store.session() as db:
        row = db.get(SessionRow, session_id)
        assert row is not None
        row.ended_at = utcnow() - timedelta(seconds=ended_ago)
        row.end_reason = "test"


def exported(source: StoreSource, cursor: Cursor) -> tuple[list[str], Cursor]:
    records, after = source.fetch(Cursor(**{**cursor.__dict__, "admin": 10**9}), 1000)
    return [f"{r['session']}:{r['seq']}" for r in records], after


def test_a_session_closed_after_the_cursor_passed_its_end_time_is_exported(
    store: Store, tmp_path: Path
) -> None:
    source = StoreSource(store, tmp_path)
    interrupted = open_session(store, tmp_path, started_ago=3600)
    done = open_session(store, tmp_path)
    close(store, done)
    first, cursor = exported(source, Cursor())
    assert first == [f"{done}:1", f"{done}:2"]

    # The gateway that recorded `interrupted` stopped an hour ago; it is closed now, with
    # the time of its last write (long before `done` ended).
    close(store, interrupted, ended_ago=3000)
    second, cursor = exported(source, cursor)
    assert second == [f"{interrupted}:1", f"{interrupted}:2"]
    assert exported(source, cursor)[0] == []


def test_sessions_are_numbered_in_the_order_they_close(store: Store, tmp_path: Path) -> None:
    ids = [open_session(store, tmp_path, events=1) for _ in range(3)]
    close(store, ids[2], ended_ago=10)
    close(store, ids[0], ended_ago=500)
    close(store, ids[1])
    with store.session() as db:
        rows = {r.id: r.close_seq for r in db.scalars(select(SessionRow))}
        counter = db.get(RevisionRow, "session_close")
    assert rows[ids[2]] is not None and rows[ids[0]] is not None and rows[ids[1]] is not None
    assert rows[ids[2]] < rows[ids[0]] < rows[ids[1]]
    assert counter is not None and counter.value == rows[ids[1]]
    order, _ = exported(StoreSource(store, tmp_path), Cursor())
    assert order == [f"{ids[2]}:1", f"{ids[0]}:1", f"{ids[1]}:1"]


def test_a_cursor_saved_before_the_close_order_resumes_where_it_was(
    store: Store, tmp_path: Path
) -> None:
    ids = [open_session(store, tmp_path) for _ in range(3)]
    for n, session_id in enumerate(ids):
        close(store, session_id, ended_ago=30 - n)
    with store.session() as db:
        ended = {r.id: r.ended_at for r in db.scalars(select(SessionRow))}
    source = StoreSource(store, tmp_path)
    # Old cursors said (ended_at, session, seq): in the middle of the second session…
    middle = Cursor(closed=None, session=ids[1], seq=1, ended_at=ended[ids[1]].isoformat())
    assert Cursor.decode(middle.encode()) == middle
    rest, after = exported(source, middle)
    assert rest == [f"{ids[1]}:2", f"{ids[2]}:1", f"{ids[2]}:2"]
    assert after.ended_at is None and after.closed is not None  # the new kind from here on
    assert Cursor.decode(after.encode()) == after
    # …or at a session no longer in the store (its row deleted): the ones after it.
    gone = Cursor(closed=None, session="zzz-deleted", seq=5, ended_at=ended[ids[0]].isoformat())
    assert exported(source, gone)[0] == [f"{i}:{n}" for i in ids[1:] for n in (1, 2)]


def test_a_recording_not_readable_yet_is_waited_for_not_skipped(
    store: Store, tmp_path: Path
) -> None:
    source = StoreSource(store, tmp_path)
    first, elsewhere, deleted, last = (open_session(store, tmp_path) for _ in range(4))
    with store.session() as db:
        gone = db.get(SessionRow, deleted)
        assert gone is not None
        gone.recording_state = "deleted"
        away = db.get(SessionRow, elsewhere)
        assert away is not None and away.recording_path is not None
        path = tmp_path / away.recording_path
    kept = path.read_bytes()
    path.unlink()  # on another node's disk, not uploaded yet
    (tmp_path / "test" / f"{deleted}.jsonl").unlink()
    for session in (first, elsewhere, deleted, last):
        close(store, session)

    got, cursor = exported(source, Cursor())
    assert got == [f"{first}:1", f"{first}:2"] and source.waiting == elsewhere
    assert exported(source, cursor)[0] == []  # still waiting: the later sessions wait too
    path.write_bytes(kept)  # readable now
    got, cursor = exported(source, cursor)
    assert got == [f"{elsewhere}:1", f"{elsewhere}:2", f"{last}:1", f"{last}:2"]
    assert source.waiting is None


def test_two_exporters_on_one_cursor_take_turns_by_lease(store: Store, tmp_path: Path) -> None:
    for _ in range(3):
        close(store, open_session(store, tmp_path))
    a_out, b_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a_cursor = StoreCursor(store, "serve:shared")
    b_cursor = StoreCursor(store, "serve:shared")
    a = Exporter(StoreSource(store, tmp_path), FileSink(a_out), a_cursor, batch=2)
    b = Exporter(StoreSource(store, tmp_path), FileSink(b_out), b_cursor, batch=2)
    assert a_cursor.acquire()  # A in its round
    assert b.run_once() == 0 and not b_out.exists()  # A holds the lease
    assert a.run_once() == 6
    close(store, open_session(store, tmp_path))
    assert a_cursor.acquire()
    assert b.run_once() == 0
    assert a.run_once() == 2  # and gives the lease back at the end of its round

    # A starts a round and stalls past its lease; B takes over, and A, waking up, must
    # not save its (older) cursor.
    assert a_cursor.acquire()
    saved = a_cursor.load()
    with store.session() as db:
        row = db.get(ExportCursorRow, "serve:shared")
        assert row is not None
        lease = dict(row.cursor["lease"])
        lease["until"] = (utcnow() - timedelta(seconds=1)).isoformat()
        row.cursor = {**row.cursor, "lease": lease}
    close(store, open_session(store, tmp_path))
    assert b.run_once() == 2
    with pytest.raises(LeaseLost):
        a_cursor.save(saved)
    assert b_cursor.load() != saved
    ids_a = [json.loads(line)["export_id"] for line in a_out.read_text().splitlines()]
    ids_b = [json.loads(line)["export_id"] for line in b_out.read_text().splitlines()]
    assert not set(ids_a) & set(ids_b) and len(ids_a) + len(ids_b) == 5 * 2
    assert a.run_once() == 0 and b.run_once() == 0  # nothing new, from either
