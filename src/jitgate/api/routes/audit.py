"""The administrative audit log and the audit export stream, for auditors and admins, and
the named consumers of that stream, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from jitgate.api.deps import Admin, AdminOrAuditor, ClientAddr, GatewayDep, PageDep
from jitgate.api.schemas import AuditConsumerOut, AuditEventOut, PageOut
from jitgate.audit.log import AuditLog
from jitgate.errors import InvalidInput
from jitgate.recording import consumers
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
    who: AdminOrAuditor,
    addr: ClientAddr,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    consumer: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """The audit export stream after ``cursor``: administrative events, then the events
    of closed session recordings. Pass the returned ``cursor`` back for the next page,
    once what this page returned is kept.

    A named ``consumer`` is registered on its first request, and ``cursor`` is taken as
    what it has delivered: retention keeps every recording it has not passed."""
    try:
        position = Cursor.decode(cursor)
    except ValueError:
        raise InvalidInput("cursor is not valid") from None
    if consumer is not None:
        name = consumers.check_consumer_name(consumer)
        consumers.seen(gw.store, name, position, caller=who, client_addr=addr)
    source = StoreSource(gw.store, gw.paths.recordings, storage=gw.recording_storage)
    records, after = source.fetch(position, limit)
    return {"items": records, "cursor": after.encode()}


@router.get("/audit/consumers", response_model=PageOut[AuditConsumerOut])
def list_consumers(gw: GatewayDep, _who: Admin) -> PageOut[AuditConsumerOut]:
    """The named consumers of the export API that retention waits for: each one's
    position (the close number below which it has every session) and when it was last
    seen."""
    return PageOut(items=[AuditConsumerOut.of(c) for c in consumers.consumers(gw.store)])


@router.delete("/audit/consumers/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_consumer(name: str, gw: GatewayDep, who: Admin, addr: ClientAddr) -> None:
    """Forget a consumer: retention no longer waits for it (written to the audit log)."""
    consumers.remove(gw.store, name, caller=who, client_addr=addr)
