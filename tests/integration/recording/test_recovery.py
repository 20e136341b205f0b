"""Closing the sessions of stopped gateways: this node's previous run, nodes whose heartbeat
went stale or that stopped, on SQLite and on a real PostgreSQL store shared by nodes."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from jitgate.identity.signing import SigningKey
from jitgate.recording import recovery
from jitgate.recording.export import Cursor, StoreSource
from jitgate.recording.log import EventLog
from jitgate.recording.retention import apply_retention
from jitgate.recording.seal import StoredSeal, verify_recording
from jitgate.recording.upload import Uploader
from jitgate.store.db import Store
from jitgate.store.models import GatewayNodeRow, SessionRow, utcnow


class FakeBucket:
    name = "b"


def record(store: Store, root: Path, *, started_ago: float = 0, node: str | None = "") -> str:
    """An open session with a two-event recording under ``root``, stamped with the
    store's node (or ``node`` when given; None: recorded before nodes existed)."""
    session_id = str(uuid.uuid4())
    started = utcnow() - timedelta(seconds=started_ago)  # before its first write, as in life
    relative = f"t/{session_id}.jsonl"
    log = EventLog(root / relative, session_id)
    log.append("session.start", {"session": session_id})
    log.append("request", {"request": 1, "text": "SELECT 'in flight'", "decision": "allow"})
    log.close()
    row = SessionRow(
        id=session_id, protocol="postgres", connection_name="db", identity_id="i",
        identity_name="ann", auth_method="api_token", counts={}, recording_state="ok",
        started_at=started, recording_path=relative,
    )  # fmt: skip
    if node != "":
        row.node_id = node
    with store.session() as db:
        db.add(row)
    return session_id


def row(store: Store, session_id: str) -> SessionRow:
    with store.session() as db:
        found = db.get(SessionRow, session_id)
    assert found is not None
    return found


@pytest.fixture(autouse=True)
def no_node(store: Store, tmp_path: Path) -> None:
    """The PostgreSQL store is shared by the tests: no node is left from the one before."""
    store.node_id = None
    for name in ("a", "b", "c", "gone"):
        (tmp_path / name).mkdir()


@pytest.fixture
def other(store: Store) -> Iterator[Store]:
    """A second gateway process on the same store (its own engine and node)."""
    second = Store.from_url(store.engine.url.render_as_string(hide_password=False))
    yield second
    second.dispose()


def test_a_restarted_node_closes_what_its_previous_run_left_open(
    store: Store, tmp_path: Path
) -> None:
    first = recovery.register(store, tmp_path)
    interrupted = record(store, tmp_path / "rec")
    assert row(store, interrupted).node_id == first.id
    mtime = (tmp_path / "rec" / row(store, interrupted).recording_path).stat().st_mtime  # type: ignore[operator]
    assert recovery.recover_interrupted(store, tmp_path / "rec", first) == []  # still ours

    later = recovery.register(store, tmp_path)
    assert later.id == first.id  # the same node (its id is in the data dir), a new run
    current = record(store, tmp_path / "rec")  # this run's: left alone
    assert recovery.recover_interrupted(store, tmp_path / "rec", later) == [interrupted]
    closed = row(store, interrupted)
    assert closed.recording_state == "unsealed" and closed.end_reason
    assert closed.end_reason.startswith("interrupted")
    assert closed.event_count == 2 and closed.close_seq is not None
    assert closed.ended_at is not None
    assert abs(closed.ended_at.timestamp() - mtime) < 0.01  # its last write
    assert row(store, current).ended_at is None


def test_sessions_of_a_node_whose_heartbeat_is_stale_are_closed_by_another(
    store: Store, other: Store, tmp_path: Path
) -> None:
    a_root, b_root = tmp_path / "a" / "recordings", tmp_path / "b" / "recordings"
    node_a = recovery.register(store, tmp_path / "a")
    node_b = recovery.register(other, tmp_path / "b")
    assert node_a.id != node_b.id
    session = record(store, a_root)
    assert recovery.recover_interrupted(other, b_root, node_b) == []  # A is alive
    recovery.heartbeat(store, node_a)
    soon = utcnow() + timedelta(seconds=recovery.STALE_SECONDS - 10)
    assert recovery.recover_interrupted(other, b_root, node_b, now=soon) == []

    # A stops beating (killed): past the threshold B closes its session.
    later = utcnow() + timedelta(seconds=recovery.STALE_SECONDS + 5)
    with store.session() as db:
        beat = db.get(GatewayNodeRow, node_a.id)
        assert beat is not None
        last_beat = beat.heartbeat_at
    assert recovery.recover_interrupted(other, b_root, node_b, now=later) == [session]
    closed = row(store, session)
    assert closed.ended_at == last_beat  # the file is on A's disk: A's last sign of life
    assert closed.recording_state == "unsealed" and closed.event_count is None

    # Closed, it is exported (from where its file is), uploaded and deleted by retention.
    records, _ = StoreSource(store, a_root).fetch(Cursor(admin=10**9), 100)
    assert [r["seq"] for r in records if r["session"] == session] == [1, 2]
    uploads = Uploader(store, a_root, FakeBucket(), part_size=5 << 20)  # type: ignore[arg-type]
    assert [r.id for r in uploads._pending()] == [session]
    assert apply_retention(store, a_root, 1, now=utcnow() + timedelta(days=2)) == [session]


def test_a_stopped_node_and_an_unregistered_one(store: Store, other: Store, tmp_path: Path) -> None:
    node_a = recovery.register(store, tmp_path / "a")
    node_b = recovery.register(other, tmp_path / "b")
    of_a = record(store, tmp_path)
    recovery.stopped(store, node_a)  # a clean stop: nothing to wait for
    never_seen = str(uuid.uuid4())
    old = record(store, tmp_path, node=never_seen, started_ago=recovery.STALE_SECONDS + 60)
    young = record(store, tmp_path, node=never_seen)
    found = recovery.recover_interrupted(other, tmp_path, node_b)
    assert sorted(found) == sorted([of_a, old])
    assert row(store, young).ended_at is None


def test_sessions_from_before_nodes_are_closed_only_on_sqlite(store: Store, tmp_path: Path) -> None:
    legacy = record(store, tmp_path, node=None, started_ago=600)
    node = recovery.register(store, tmp_path)
    found = recovery.recover_interrupted(store, tmp_path, node)
    if store.dialect == "sqlite":  # one process owns a SQLite store
        assert found == [legacy]
    else:  # a gateway of an older version may still be recording it
        assert found == [] and row(store, legacy).ended_at is None


def test_a_data_dir_in_use_by_another_live_process_gets_a_node_of_its_own(
    store: Store, tmp_path: Path
) -> None:
    first = recovery.register(store, tmp_path)
    with store.session() as db:  # as if another process on this host ran it
        db.execute(
            update(GatewayNodeRow).where(GatewayNodeRow.id == first.id).values(pid=os.getppid())
        )
    second = recovery.register(store, tmp_path)
    assert second.id != first.id and store.node_id == second.id
    assert (tmp_path / recovery.NODE_ID_FILE).read_text().strip() == first.id


def test_two_nodes_recovering_at_once_close_each_session_once(
    store: Store, other: Store, tmp_path: Path
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("several nodes share a PostgreSQL store only")
    gone = recovery.register(store, tmp_path / "gone")
    sessions = {record(store, tmp_path) for _ in range(60)}
    recovery.stopped(store, gone)
    third = Store.from_url(store.engine.url.render_as_string(hide_password=False))
    try:
        nodes = [
            (other, recovery.register(other, tmp_path / "b")),
            (third, recovery.register(third, tmp_path / "c")),
        ]
        results: list[list[str]] = [[], []]
        barrier = threading.Barrier(2)

        def run(index: int) -> None:
            barrier.wait()
            target, node = nodes[index]
            results[index] = recovery.recover_interrupted(target, tmp_path, node)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        third.dispose()
    assert set(results[0]) | set(results[1]) == sessions
    assert not set(results[0]) & set(results[1])
    with store.session() as db:
        numbers = list(db.scalars(select(SessionRow.close_seq)))
    assert len(set(numbers)) == len(numbers) == 60


def test_a_recovered_recording_gets_a_signed_recovery_seal(store: Store, tmp_path: Path) -> None:
    key = SigningKey.generate()
    keys = {key.key_id: key.public_jwk()}
    root = tmp_path / "rec"
    first = recovery.register(store, tmp_path)
    crashed = record(store, root)
    path = root / str(row(store, crashed).recording_path)
    with path.open("ab") as fh:  # the crash cut the last write short
        fh.write(b'{"at":"2026-01-01T00:00:00.000000+00:00","prev":"')
    assert verify_recording(path, crashed, keys, open_session=True).state == "open"

    later = recovery.register(store, tmp_path)
    assert later.id == first.id
    assert recovery.recover_interrupted(store, root, later, signing_key=key) == [crashed]
    closed = row(store, crashed)
    assert closed.recording_state == "recovered" and closed.event_count == 4
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in events] == ["session.start", "request", "session.recovered", "seal"]
    assert events[2]["cut_bytes"] > 0 and events[3]["kind"] == "recovery"
    stored = StoredSeal(closed.seal_digest, closed.seal_signature, closed.seal_key_id, 4)
    result = verify_recording(path, crashed, keys, stored=stored)
    assert (result.valid, result.state, result.signature) == (True, "recovered", "valid")

    # The recovery seal cannot pass for the close's: the signed message names its kind.
    forged = path.read_bytes().replace(b',"kind":"recovery"', b"")
    fake = tmp_path / "forged.jsonl"
    fake.write_bytes(forged)
    assert verify_recording(fake, crashed, keys).state == "tampered"
    # One byte of the request changed: named, though the seal itself is intact.
    path.write_bytes(path.read_bytes().replace(b"in flight", b"in fliGht"))
    altered = verify_recording(path, crashed, keys, stored=stored)
    assert (altered.valid, altered.state, altered.first_bad_event) == (False, "tampered", 2)


def test_a_recording_whose_chain_is_broken_is_not_sealed_at_recovery(
    store: Store, tmp_path: Path
) -> None:
    key = SigningKey.generate()
    root = tmp_path / "rec"
    first = recovery.register(store, tmp_path)
    crashed = record(store, root)
    path = root / str(row(store, crashed).recording_path)
    path.write_bytes(path.read_bytes().replace(b"in flight", b"in fliGht"))
    recovery.register(store, tmp_path)
    assert recovery.recover_interrupted(store, root, first, signing_key=key) == []
    later = recovery.register(store, tmp_path)
    assert recovery.recover_interrupted(store, root, later, signing_key=key) == [crashed]
    assert row(store, crashed).recording_state == "unsealed"
    result = verify_recording(path, crashed, {key.key_id: key.public_jwk()})
    assert result.state == "tampered" and result.first_bad_event == 2
