"""Sessions and their recordings: list, show, events, verify the hash chain."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from jitgate.api.deps import Caller, GatewayDep, PageDep
from jitgate.api.schemas import PageOut
from jitgate.errors import Forbidden, InvalidInput, NotFound
from jitgate.identity.principal import Authenticated, Role
from jitgate.recording.log import read_events, verify_chain
from jitgate.server.gateway import Gateway
from jitgate.store.models import SessionRow

router = APIRouter(prefix="/api/v1", tags=["sessions"])


class SessionOut(BaseModel):
    id: str
    protocol: str
    connection: str
    identity: str
    actor: str | None
    auth_method: str
    client_addr: str | None
    client_program: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    bytes_in: int
    bytes_out: int
    counts: dict[str, Any]

    @classmethod
    def of(cls, row: SessionRow) -> SessionOut:
        return cls(
            id=row.id,
            protocol=row.protocol,
            connection=row.connection_name,
            identity=row.identity_name,
            actor=row.actor_name,
            auth_method=row.auth_method,
            client_addr=row.client_addr,
            client_program=row.client_program,
            started_at=row.started_at,
            ended_at=row.ended_at,
            end_reason=row.end_reason,
            bytes_in=row.bytes_in,
            bytes_out=row.bytes_out,
            counts=dict(row.counts or {}),
        )


def _may_see_all(who: Authenticated) -> bool:
    return who.has_role(Role.AUDITOR) or who.has_role(Role.ADMIN)


def _session(gw: Gateway, who: Authenticated, session_id: str) -> SessionRow:
    with gw.store.session() as db:
        row = db.get(SessionRow, session_id)
    if row is None:
        raise NotFound(f"no session {session_id[:40]!r}")
    if not _may_see_all(who) and row.identity_id != who.principal.id:
        raise Forbidden("you may only see your own sessions")
    return row


def _recording(gw: Gateway, row: SessionRow) -> Path:
    if not row.recording_path:
        raise NotFound("this session has no recording")
    path = (gw.paths.recordings / row.recording_path).resolve()
    if gw.paths.recordings.resolve() not in path.parents or not path.exists():
        raise NotFound("the recording of this session is not available")
    return path


@router.get("/sessions", response_model=PageOut[SessionOut])
def list_sessions(
    gw: GatewayDep,
    who: Caller,
    page: PageDep,
    identity: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    connection: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    open: Annotated[bool | None, Query(description="only open (true) or ended (false)")] = None,
) -> PageOut[SessionOut]:
    stmt = select(SessionRow).order_by(SessionRow.started_at.desc(), SessionRow.id.desc())
    if not _may_see_all(who):
        stmt = stmt.where(SessionRow.identity_id == who.principal.id)
    if identity:
        stmt = stmt.where(SessionRow.identity_name == identity)
    if actor:
        stmt = stmt.where(SessionRow.actor_name == actor)
    if connection:
        stmt = stmt.where(SessionRow.connection_name == connection)
    if since:
        stmt = stmt.where(SessionRow.started_at >= since)
    if until:
        stmt = stmt.where(SessionRow.started_at < until)
    if open is not None:
        stmt = stmt.where(
            SessionRow.ended_at.is_(None) if open else SessionRow.ended_at.is_not(None)
        )
    if page.cursor:
        with gw.store.session() as db:
            anchor = db.get(SessionRow, page.cursor)
        if anchor is None:
            raise InvalidInput("cursor is not valid")
        stmt = stmt.where(
            (SessionRow.started_at < anchor.started_at)
            | ((SessionRow.started_at == anchor.started_at) & (SessionRow.id < anchor.id))
        )
    with gw.store.session() as db:
        rows = list(db.scalars(stmt.limit(page.limit + 1)))
    items = [SessionOut.of(r) for r in rows[: page.limit]]
    return PageOut(items=items, next_cursor=items[-1].id if len(rows) > page.limit else None)


@router.get("/sessions/{session_id}", response_model=SessionOut)
def get_session(session_id: str, gw: GatewayDep, who: Caller) -> SessionOut:
    return SessionOut.of(_session(gw, who, session_id))


@router.get("/sessions/{session_id}/events")
def session_events(
    session_id: str,
    gw: GatewayDep,
    who: Caller,
    type: Annotated[str | None, Query(max_length=32)] = None,
    decision: Annotated[str | None, Query(max_length=16)] = None,
    q: Annotated[str | None, Query(max_length=256, description="text search")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    path = _recording(gw, _session(gw, who, session_id))
    items = []
    for event in read_events(path):
        if type and event.get("type") != type:
            continue
        if decision and event.get("decision") != decision:
            continue
        if q and q.lower() not in str(event.get("text", "")).lower():
            continue
        items.append(event)
        if len(items) >= limit:
            break
    return {"items": items}


@router.get("/sessions/{session_id}/verify")
def verify_session(session_id: str, gw: GatewayDep, who: Caller) -> dict[str, Any]:
    row = _session(gw, who, session_id)
    ok, line, why = verify_chain(_recording(gw, row), row.id)
    return {"session": row.id, "valid": ok, "first_bad_event": line, "problem": why}
