"""Named consumers of the audit export API, whose positions retention waits for.

An exporter outside the gateway (``jitgate audit export --consumer NAME``, or any client
of ``GET /api/v1/audit/export?consumer=NAME``) keeps its own cursor; without a name the
server cannot know how far it has got, and retention could delete a recording it has not
fetched yet — a gap in its copy of the trail that nobody would see. A named consumer is
*registered* by its first request and kept in ``export_cursors`` as ``api:NAME``.

The cursor a consumer presents is the one it saved after its sink acknowledged the
previous batch, so everything before it has been delivered (at least once): that is the
consumer's position. The batch a request returns is not delivered yet; the server learns
that it was when the next request presents the cursor after it. A position never moves
back: a consumer presenting an older cursor (restored from a backup, or a second copy
running) is served from there, but retention goes on from the furthest position seen, as
it may already have deleted what lies between. ``updated_at`` is when it was last seen.

A consumer holds everything it has not passed, until an admin removes it (``DELETE
/api/v1/audit/consumers/NAME``, written to the administrative audit log); one that has
registered but fetched nothing yet holds every recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from jitgate.audit.log import AuditLog
from jitgate.errors import InvalidInput, NotFound
from jitgate.identity.names import check_simple_name
from jitgate.identity.principal import Authenticated
from jitgate.recording.export import Cursor, locked_cursor_row
from jitgate.store.db import Store
from jitgate.store.models import ExportCursorRow, utcnow

#: Consumers' rows in ``export_cursors`` (the gateway's own export uses ``serve:``).
PREFIX = "api:"
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    position: int  # close number: every session closed before it was delivered
    admin: int  # id of the last administrative event delivered
    last_seen: datetime


def check_consumer_name(name: str) -> str:
    if len(name) > MAX_NAME:
        raise InvalidInput(f"a consumer name is at most {MAX_NAME} characters")
    return check_simple_name(name, "consumer name")


def _saved(row: ExportCursorRow) -> Cursor:
    try:
        return Cursor.decode((row.cursor or {}).get("cursor"))
    except ValueError:  # written by this module only; never trusted to be further on
        return Cursor()


def furthest(saved: Cursor, presented: Cursor) -> Cursor:
    """The furthest of two positions of one consumer, part by part. A cursor of the old
    ``ended_at`` order names no close number: it moves the administrative part only."""
    merged = Cursor(**saved.__dict__)
    merged.admin = max(saved.admin, presented.admin)
    if presented.closed is not None and (presented.closed, presented.seq) > (
        saved.closed or 0,
        saved.seq,
    ):
        merged.closed, merged.session, merged.seq = (
            presented.closed,
            presented.session,
            presented.seq,
        )
    return merged


def seen(
    store: Store,
    name: str,
    presented: Cursor,
    *,
    caller: Authenticated | None,
    client_addr: str | None = None,
) -> None:
    """Record that consumer ``name`` has delivered everything before ``presented``
    (registering it on its first request: that is written to the audit log, since from
    then on it holds recordings back from retention)."""
    with store.session() as db:
        row, created = locked_cursor_row(db, PREFIX + name)
        row.cursor = {"cursor": furthest(_saved(row), presented).encode()}
        row.updated_at = utcnow()  # also when the position did not move
        if created:
            AuditLog.record(
                db,
                "audit_consumer:create",
                caller=caller,
                target_type="audit_consumer",
                target_name=name,
                client_addr=client_addr,
            )


def consumers(store: Store) -> list[Consumer]:
    """The registered consumers, by name."""
    stmt = (
        select(ExportCursorRow)
        .where(ExportCursorRow.name.startswith(PREFIX, autoescape=True))
        .order_by(ExportCursorRow.name)
    )
    with store.session() as db:
        return [
            Consumer(
                name=row.name.removeprefix(PREFIX),
                position=int(cursor.closed or 0),
                admin=cursor.admin,
                last_seen=row.updated_at,
            )
            for row in db.scalars(stmt)
            for cursor in (_saved(row),)
        ]


def remove(
    store: Store, name: str, *, caller: Authenticated | None, client_addr: str | None = None
) -> None:
    """Forget consumer ``name``: retention no longer waits for it."""
    with store.session() as db:
        row = db.get(ExportCursorRow, PREFIX + name, with_for_update=True)
        if row is None:
            raise NotFound(f"no audit export consumer named {name[:MAX_NAME]!r}")
        position = int(_saved(row).closed or 0)
        db.delete(row)
        AuditLog.record(
            db,
            "audit_consumer:delete",
            caller=caller,
            target_type="audit_consumer",
            target_name=name,
            client_addr=client_addr,
            details={"position": position, "last_seen": row.updated_at.isoformat()},
        )
