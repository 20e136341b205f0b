"""The administrative audit log and the audit export stream, for auditors and admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from jitgate.api.deps import AdminOrAuditor, GatewayDep, PageDep
from jitgate.api.schemas import AuditEventOut, PageOut
from jitgate.audit.log import AuditLog
from jitgate.errors import InvalidInput
from jitgate.recording.export import Cursor, StoreSource

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", response_model=PageOut[AuditEventOut])
def list_audit(
    gw: GatewayDep,
    _who: AdminOrAuditor,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    target: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
) -> PageOut[AuditEventOut]:
    try:
        after = int(page.cursor) if page.cursor else None
    except ValueError:
        raise InvalidInput("cursor is not valid") from None
    with gw.store.session() as session:
        events = AuditLog.query(
            session,
            after_id=after,
            limit=page.limit + 1,
            action=action,
            actor=actor,
            target_name=target,
            since=since,
            until=until,
        )
    items = [AuditEventOut.of(e) for e in events[: page.limit]]
    return PageOut(items=items, next_cursor=str(items[-1].id) if len(events) > page.limit else None)


@router.get("/audit/export")
def export_audit(
    gw: GatewayDep,
    _who: AdminOrAuditor,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """The audit export stream after ``cursor``: administrative events, then the events
    of closed session recordings. Pass the returned ``cursor`` back for the next page."""
    try:
        position = Cursor.decode(cursor)
    except ValueError:
        raise InvalidInput("cursor is not valid") from None
    source = StoreSource(gw.store, gw.paths.recordings, storage=gw.recording_storage)
    records, after = source.fetch(position, limit)
    return {"items": records, "cursor": after.encode()}
