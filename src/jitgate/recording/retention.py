"""Retention: delete the recordings of sessions older than their connection allows.

A connection's ``recording_retention_days`` option (or the ``recording.retention_days``
setting) says how many days after a session ended its recording is kept; nothing is
deleted when neither is set. A session under legal hold (its own flag, or the
connection's ``legal_hold`` option) is never deleted. The session row stays — the audit
index keeps who, when, what counts and the seal's digest — with ``recording_state``
``deleted``; every deletion is written to the administrative audit log
(``recording:delete``). A recording uploaded to object storage is deleted there too
(and an unfinished upload of it aborted).

A recording is deleted only once every export that must have it has delivered it: the
gateway's own export, when it is configured (``recording.export_to``), and every named
consumer of the export API (:mod:`jitgate.recording.consumers`: ``jitgate audit export
--consumer NAME``). Each of them is at a *position*, the close number of the session its
cursor is on; a session may go only when it was closed before the lowest of these
positions (``close_seq`` below it). So an export that has not started yet, or a consumer
that has registered but not fetched anything, holds every recording, and a consumer that
stops fetching holds everything after its position until an admin removes it. With no
export and no consumer, age and legal holds alone decide. Rows are locked while they are
deleted, so a legal hold set meanwhile waits, and is then honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitgate.audit.log import AuditLog
from jitgate.config import RecordingSettings
from jitgate.recording.consumers import consumers
from jitgate.recording.options import resolve
from jitgate.recording.s3 import ObjectStoreError
from jitgate.recording.storage import RecordingStorage
from jitgate.store.db import Store
from jitgate.store.models import ConnectionRow, ExportCursorRow, SessionRow, utcnow

log = logging.getLogger("jitgate.recording")

BATCH = 500


@dataclass(frozen=True, slots=True)
class _Rule:
    days: int | None
    hold: bool


def _rule(options: dict[str, Any] | None, default_days: int | None, connection: str) -> _Rule:
    resolved = resolve(
        options, RecordingSettings(retention_days=default_days), connection=connection
    )
    return _Rule(resolved.retention_days, resolved.legal_hold)


def exported_below(store: Store, cursor_name: str) -> int:
    """The close number below which every session has been exported by the export whose
    cursor is ``cursor_name`` (0: nothing yet)."""
    from jitgate.recording.export import Cursor

    with store.session() as db:
        row = db.get(ExportCursorRow, cursor_name)
        if row is None:
            return 0
        try:
            cursor = Cursor.decode((row.cursor or {}).get("cursor"))
        except ValueError:
            return 0
    return int(cursor.closed or 0)


def delivered_below(store: Store, export_cursor: str | None) -> int | None:
    """The close number below which every session has been delivered by the gateway's
    export (``export_cursor``, if any) and every registered API consumer: the lowest of
    their positions; None when there is neither."""
    positions = [consumer.position for consumer in consumers(store)]
    if export_cursor:
        positions.append(exported_below(store, export_cursor))
    return min(positions, default=None)


def apply_retention(
    store: Store,
    root: Path,
    default_days: int | None,
    *,
    now: datetime | None = None,
    storage: RecordingStorage | None = None,
    export_cursor: str | None = None,
) -> list[str]:
    """Delete what is due; returns the ids of the sessions whose recordings went.

    ``storage`` deletes uploaded objects too (default: local files only);
    ``export_cursor`` names the gateway's export cursor, which must have passed a session
    first, as must every registered API consumer."""
    now = now or utcnow()
    storage = storage or RecordingStorage(root, store)
    exported = delivered_below(store, export_cursor)
    if exported == 0:
        return []
    with store.session() as db:
        rules = {
            row.name: _rule(row.options, default_days, row.name)
            for row in db.scalars(select(ConnectionRow))
        }
    fallback = _Rule(default_days, False)
    deleted: list[str] = []
    # One pass per connection with a retention (and one for sessions of connections that
    # no longer exist), so sessions kept longer elsewhere never hold the others back.
    passes: list[tuple[str | None, _Rule]] = [*rules.items(), (None, fallback)]
    for name, rule in passes:
        if rule.hold or rule.days is None:
            continue
        stmt = (
            select(SessionRow)
            .where(
                SessionRow.ended_at.is_not(None),
                SessionRow.ended_at < now - timedelta(days=rule.days),
                SessionRow.recording_path.is_not(None),
                SessionRow.legal_hold.is_(False),
            )
            .order_by(SessionRow.ended_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        if exported is not None:
            stmt = stmt.where(SessionRow.close_seq < exported)
        if name is not None:
            stmt = stmt.where(SessionRow.connection_name == name)
        elif rules:
            stmt = stmt.where(SessionRow.connection_name.not_in(list(rules)))
        with store.session() as db:
            for row in db.scalars(stmt).all():
                if row.legal_hold:
                    continue
                if _delete(db, storage, row, rule.days):
                    deleted.append(row.id)
    if deleted:
        log.info("retention: deleted %d recordings", len(deleted))
    return deleted


def _delete(db: Session, storage: RecordingStorage, row: SessionRow, days: int) -> bool:
    assert row.recording_path is not None and row.ended_at is not None
    location = row.recording_location
    try:
        storage.delete(db, row)
    except (OSError, ObjectStoreError) as exc:
        log.error("cannot delete the recording of session %s: %s", row.id, exc)
        return False
    row.recording_path = None
    row.recording_state = "deleted"
    AuditLog.record(
        db,
        "recording:delete",
        caller=None,
        target_type="session",
        target_name=row.id,
        details={
            "connection": row.connection_name,
            "retention_days": days,
            "ended_at": row.ended_at.isoformat(),
            **({"location": location} if location else {}),
        },
    )
    return True
