"""Closing the sessions a stopped gateway left open — with one node or several.

Theory of operation
-------------------
Every serve process is a *node* of the store (table ``gateway_nodes``). Its id is kept in
``DATA_DIR/node.id``, so a node that restarts on the same data dir is the same node;
each run records when it started, and the housekeeping job renews ``heartbeat_at``
every :data:`HEARTBEAT_SECONDS`. Each session row names the node that records it
(``sessions.node_id``, stamped by the store: see :mod:`jitgate.store.closing`).

A session still open in the store belongs to a live recorder unless its node is gone.
:func:`recover_interrupted` closes the open sessions

* of this node that started before its current run (the previous run stopped or crashed);
* of another node whose heartbeat is older than ``stale_after`` (default
  :data:`STALE_SECONDS`), or that stopped;
* of a node that never registered, once they are ``stale_after`` old;
* with no node (recorded before nodes existed) that started before this process, on a
  SQLite store only: SQLite is owned by one process. On a shared PostgreSQL store such
  sessions may still belong to a gateway of an older version, and are left alone.

A recovered session ends at its recording file's last write when the file is on this
node, else at the last heartbeat of its node. Every request that was forwarded is in its
recording. When the file is on this node and a signing key is given, the recording gets
a ``session.recovered`` event and a *recovery seal* (:mod:`jitgate.recording.seal`,
``"kind": "recovery"``) over everything the crashed gateway wrote (``recording_state``
``recovered``); a last line the crash left half written — a write that never completed,
so its request was never forwarded — is cut first, and the event says how many bytes.
A recording on another node's disk, or one whose chain does not hold, is left as it is
(``recording_state`` ``unsealed``; ``audit verify`` reports it ``interrupted``, or
tampered). Rows are
taken with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two nodes recovering at once
close each session once. The comparison of heartbeats uses each node's clock: the nodes'
clocks must agree to well within ``stale_after``. A node that was only cut off from the
store for longer than that, and comes back, closes its sessions again when they end: the
row then gets its seal, and a new close number (the export sends it again, in full).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from jitgate.connections.vault import write_secret_file
from jitgate.recording.log import EventLog, chain_hash, genesis
from jitgate.recording.seal import RECOVERY, SEAL_TYPE, make_seal
from jitgate.store.db import Store
from jitgate.store.models import GatewayNodeRow, SessionRow, utcnow

if TYPE_CHECKING:
    from jitgate.identity.signing import SigningKey

log = logging.getLogger("jitgate.recording")

#: How often a node says it is alive.
HEARTBEAT_SECONDS = 15.0
#: A node not heard of for this long is taken to be gone (its sessions are recovered).
STALE_SECONDS = 120.0
#: The file in the data dir that holds the node's id.
NODE_ID_FILE = "node.id"
BATCH = 200


@dataclass(frozen=True, slots=True)
class Node:
    """This process as a node of the store: its id and when its current run began."""

    id: str
    started_at: datetime


def node_id(data_dir: Path) -> str:
    """The node id kept in the data dir (created on first use)."""
    path = data_dir / NODE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text(encoding="utf-8").strip()
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(text))
        log.warning("%s does not hold a node id; writing a new one", path)
    new = str(uuid.uuid4())
    write_secret_file(path, new + "\n")
    return new


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(store: Store, data_dir: Path, *, now: datetime | None = None) -> Node:
    """Start this process's run as a node of the store; its sessions are stamped with it.

    If the data dir's node is running on this host in another live process (two
    gateways given the same data dir), this one takes a fresh id for its run instead, so
    neither mistakes the other's sessions for a previous run's.
    """
    now = now or utcnow()
    hostname = socket.gethostname()[:255] or "-"
    pid = os.getpid()
    identity = node_id(data_dir)
    with store.session() as db:
        row = db.get(GatewayNodeRow, identity)
        if (
            row is not None
            and row.stopped_at is None
            and row.hostname == hostname
            and row.pid != pid
            and process_alive(row.pid)
        ):
            log.warning(
                "node %s (data dir %s) is in use by process %d: this run is a node of its own",
                identity,
                data_dir,
                row.pid,
            )
            identity = str(uuid.uuid4())
            row = None
        if row is None:
            db.add(
                GatewayNodeRow(
                    id=identity, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now
                )
            )
        else:
            row.hostname, row.pid = hostname, pid
            row.started_at, row.heartbeat_at, row.stopped_at = now, now, None
    store.node_id = identity
    return Node(identity, now)


def heartbeat(store: Store, node: Node, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    with store.session() as db:
        row = db.get(GatewayNodeRow, node.id)
        if row is None:  # removed meanwhile: this node is still running
            db.add(
                GatewayNodeRow(
                    id=node.id,
                    hostname=socket.gethostname()[:255] or "-",
                    pid=os.getpid(),
                    started_at=node.started_at,
                    heartbeat_at=now,
                )
            )
        else:
            row.heartbeat_at = now
            row.stopped_at = None


def stopped(store: Store, node: Node) -> None:
    """This run is over (its listeners have closed their sessions)."""
    with store.session() as db:
        row = db.get(GatewayNodeRow, node.id)
        if row is not None:
            row.stopped_at = utcnow()


def recover_interrupted(
    store: Store,
    root: Path,
    node: Node,
    *,
    started_before: datetime | None = None,
    stale_after: float = STALE_SECONDS,
    now: datetime | None = None,
    signing_key: SigningKey | None = None,
) -> list[str]:
    """Close the sessions whose recorder is gone (see above); returns their ids.

    ``root`` is this node's recordings directory; ``started_before`` is when this process
    began (its sessions without a node are newer: default, the run's start);
    ``signing_key`` seals the recordings found in ``root``.
    """
    now = now or utcnow()
    horizon = now - timedelta(seconds=stale_after)
    before = min(started_before or node.started_at, node.started_at)
    gone = select(GatewayNodeRow.id).where(
        GatewayNodeRow.id != node.id,
        or_(GatewayNodeRow.heartbeat_at < horizon, GatewayNodeRow.stopped_at.is_not(None)),
    )
    known = select(GatewayNodeRow.id)
    whose = [
        and_(SessionRow.node_id == node.id, SessionRow.started_at < node.started_at),
        SessionRow.node_id.in_(gone),
        and_(
            SessionRow.node_id.is_not(None),
            SessionRow.node_id.not_in(known),
            SessionRow.started_at < horizon,
        ),
    ]
    if store.dialect == "sqlite":
        whose.append(and_(SessionRow.node_id.is_(None), SessionRow.started_at < before))
    recovered: list[str] = []
    while True:
        with store.session() as db:
            rows = db.scalars(
                select(SessionRow)
                .where(SessionRow.ended_at.is_(None), or_(*whose))
                .order_by(SessionRow.started_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                _close(db, root, row, node, now, signing_key)
                recovered.append(row.id)
        if len(rows) < BATCH:
            break
    if recovered:
        log.warning("closed %d sessions interrupted by a gateway stop", len(recovered))
    return recovered


def _close(
    db: Session,
    root: Path,
    row: SessionRow,
    node: Node,
    now: datetime,
    key: SigningKey | None,
) -> None:
    ended: datetime | None = None
    path = root / row.recording_path if row.recording_path else None
    if path is not None:
        with contextlib.suppress(OSError):
            ended = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    if ended is None and row.node_id is not None and row.node_id != node.id:
        # The recording is on the other node's disk: it wrote last at its last heartbeat.
        ended = db.scalar(
            select(GatewayNodeRow.heartbeat_at).where(GatewayNodeRow.id == row.node_id)
        )
    row.ended_at = max(min(ended or now, now), row.started_at)
    row.end_reason = "interrupted: the gateway stopped"
    if path is None:
        return
    row.recording_state = "unsealed"
    try:
        sealed = _seal(path, row, node, key) if key is not None else None
    except OSError as exc:
        log.error("cannot seal the recovered recording of session %s: %s", row.id, exc)
        sealed = None
    if sealed is not None:
        row.event_count = sealed["last_seq"] + 1
        row.seal_digest, row.seal_signature = sealed["digest"], sealed["signature"]
        row.seal_key_id = sealed["kid"]
        # A seal found in place is the close's, when only the row's update was lost.
        row.recording_state = "recovered" if sealed.get("kind") == RECOVERY else "ok"
        return
    with contextlib.suppress(OSError), path.open("rb") as fh:
        row.event_count = sum(1 for _ in fh)


def _seal(path: Path, row: SessionRow, node: Node, key: SigningKey) -> dict[str, Any] | None:
    """Append ``session.recovered`` and a recovery seal to the recording at ``path``;
    returns the seal, or None when the file is missing or its chain does not hold."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    complete = data.rfind(b"\n") + 1  # a crash may have cut the last write short
    seq, head = 0, genesis(row.id)
    for number, line in enumerate(data[:complete].splitlines(), start=1):
        try:
            event = orjson.loads(line)
        except ValueError:
            event = None
        if (
            not isinstance(event, dict)
            or event.get("seq") != number
            or (event.get("prev") != head or chain_hash(head, event) != event.get("hash"))
        ):
            log.error(
                "session %s: its recording does not verify at event %d; not sealed at recovery",
                row.id,
                number,
            )
            return None
        if event.get("type") == SEAL_TYPE:  # sealed before (a recovery that did not commit)
            return event if number == data[:complete].count(b"\n") else None
        seq, head = number, str(event["hash"])
    if complete < len(data):
        os.truncate(path, complete)
    event_log = EventLog.resume(path, row.id, seq, head)
    try:
        recovered: dict[str, Any] = {"node": node.id, "reason": row.end_reason}
        if complete < len(data):
            recovered["cut_bytes"] = len(data) - complete
        event_log.append("session.recovered", recovered)
        seal = make_seal(key, row.id, event_log.seq, event_log.head, RECOVERY)
        event_log.append(SEAL_TYPE, dict(seal))
    finally:
        event_log.close()
    return seal
