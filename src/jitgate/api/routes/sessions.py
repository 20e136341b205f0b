"""Sessions and their recordings: list and search, events, live tail, verify.

``GET /sessions/{id}/verify`` checks the hash chain *and* the Ed25519 seal against the
public keys of every gateway node (``GET /api/v1/keys``; the seal's ``kid`` picks one) and
names the first altered event.
``GET /sessions/{id}/tail`` streams the events of a session as server-sent events while
it is open (each event's ``id`` is its ``seq``; reconnect with ``Last-Event-ID``).
``POST /sessions/{id}/lost`` declares a closed session's recording lost for good (admin
only, only while it cannot be read, with a reason): the audit export then stops waiting
for it and delivers a ``recording.lost`` record in its place (see
:mod:`jitgate.recording.export`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from jitgate.api.deps import Admin, AdminOrAuditor, Caller, ClientAddr, GatewayDep, PageDep
from jitgate.api.schemas import PageOut
from jitgate.audit.log import AuditLog
from jitgate.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from jitgate.identity.principal import Authenticated, Role
from jitgate.recording.export import GONE, LOST, LOST_ACTION
from jitgate.recording.keys import known as known_keys
from jitgate.recording.s3 import ObjectStoreError
from jitgate.recording.seal import StoredSeal, verify_recording
from jitgate.recording.storage import RecordingUnavailable, iter_events
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
    grant_ids: list[str] = []
    recording: str | None = None  # ok, failed, off, deleted, lost…
    recording_location: str | None = None  # s3://bucket/key once uploaded
    signed: bool = False
    legal_hold: bool = False
    events: int | None = None

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
            grant_ids=list(row.grant_ids or []),
            recording=row.recording_state,
            recording_location=row.recording_location,
            signed=row.seal_signature is not None,
            legal_hold=bool(row.legal_hold),
            events=row.event_count,
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


def _recording(gw: Gateway, row: SessionRow) -> Iterator[bytes]:
    """The recording's lines, from the data dir or from object storage."""
    try:
        return gw.recording_storage.lines(row)
    except RecordingUnavailable as exc:
        raise NotFound(str(exc)) from None
    except ObjectStoreError as exc:
        raise Unavailable(f"the recording cannot be fetched just now: {exc}") from None


class SessionPageOut(PageOut[SessionOut]):
    """A page of sessions. A search (``q``, ``decision``) looks through at most
    :data:`SEARCH_WINDOW` sessions per request: ``scanned`` says how many it looked at and
    ``truncated`` that it stopped at that limit; ``next_cursor`` then goes on from the
    last session looked at (a page may be short, or empty, and still have a cursor)."""

    scanned: int | None = None
    truncated: bool = False


@router.get("/sessions", response_model=SessionPageOut)
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
    decision: Annotated[
        str | None, Query(max_length=16, description="with at least one request so decided")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=256, description="text search in requests and output")
    ] = None,
) -> SessionPageOut:
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
    if decision is None and q is None:
        with gw.store.session() as db:
            rows = list(db.scalars(stmt.limit(page.limit + 1)))
        items = [SessionOut.of(r) for r in rows[: page.limit]]
        more = len(rows) > page.limit
        return SessionPageOut(items=items, next_cursor=items[-1].id if more else None)
    if decision is not None and decision not in _OUTCOMES:
        raise InvalidInput(f"decision must be one of {', '.join(_OUTCOMES)}")
    # Filters that need the counts or the recordings: scan a bounded window of candidates.
    matched: list[SessionRow] = []
    scanned = 0
    last: SessionRow | None = None
    with gw.store.session() as db:
        for row in db.scalars(stmt.limit(SEARCH_WINDOW)):
            if len(matched) == page.limit:
                more = True  # one more candidate: the page is full, go on after it
                break
            scanned += 1
            last = row
            if decision and not _has_decision(gw, row, decision):
                continue
            if q and not _recording_mentions(gw, row, q):
                continue
            matched.append(row)
        else:
            more = False
    truncated = not more and scanned == SEARCH_WINDOW
    cursor = last.id if (more or truncated) and last is not None else None
    return SessionPageOut(
        items=[SessionOut.of(r) for r in matched],
        next_cursor=cursor,
        scanned=scanned,
        truncated=truncated,
    )


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


#: How many sessions one search request may look through (newest first).
SEARCH_WINDOW = 2000


#: The event fields text search looks at: statements and typed lines (``text``), terminal
#: output (``d``), reasons, SSH exec commands, SFTP/scp paths (``path``, ``to``) and
#: port-forward hosts.
SEARCHED_FIELDS = ("text", "d", "reason", "command", "path", "to", "host")


def _searchable(event: dict[str, Any]) -> Iterable[str]:
    for key in SEARCHED_FIELDS:
        value = event.get(key)
        if isinstance(value, str):
            yield value
    error = event.get("error")
    if isinstance(error, dict):
        yield str(error.get("message", ""))
    sample = event.get("sample")
    if isinstance(sample, dict):
        yield orjson.dumps(sample).decode()


def _matches(event: dict[str, Any], needle: str) -> bool:
    return any(needle in text.lower() for text in _searchable(event))


#: The decisions a session's ``counts`` may hold.
_OUTCOMES = ("allow", "deny", "review")


def _has_decision(gw: Gateway, row: SessionRow, decision: str) -> bool:
    """Whether one of the session's requests was so decided: from its counts, or — for a
    session that counts none (an SSH session) — from the decisions in its recording."""
    counts = row.counts or {}
    if counts.get(decision):
        return True
    if any(counts.get(outcome) for outcome in _OUTCOMES):
        return False
    try:
        lines = _recording(gw, row)
    except (NotFound, Unavailable):
        return False
    return any(event.get("decision") == decision for event in iter_events(lines))


def _recording_mentions(gw: Gateway, row: SessionRow, q: str) -> bool:
    try:
        lines = _recording(gw, row)
    except (NotFound, Unavailable):
        return False
    needle = q.lower()
    return any(_matches(event, needle) for event in iter_events(lines))


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
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    after: Annotated[int | None, Query(ge=0, description="events after this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    lines = _recording(gw, _session(gw, who, session_id))
    items = []
    needle = q.lower() if q else None
    for event in iter_events(lines):
        if after is not None and event.get("seq", 0) <= after:
            continue
        if type and event.get("type") != type:
            continue
        if decision and event.get("decision") != decision:
            continue  # a statement sent to review: its "review" event says decision review
        if needle and not _matches(event, needle):
            continue
        if since or until:
            at = datetime.fromisoformat(str(event.get("at")))
            since, until = _aware(since), _aware(until)
            if (since and at < since) or (until and at >= until):
                continue
        items.append(event)
        if len(items) >= limit:
            break
    return {"items": items}


@router.get("/sessions/{session_id}/tail")
async def tail_session(
    session_id: str,
    gw: GatewayDep,
    who: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    timeout: Annotated[float, Query(gt=0, le=86400)] = 3600,
) -> StreamingResponse:
    """Server-sent events: the session's events as they are written, until it closes."""
    row = _session(gw, who, session_id)
    path = gw.recording_storage.local_path(row)
    fetched: list[bytes] = []
    if path is None or not path.exists():  # not found, or closed and uploaded
        fetched.append(await asyncio.to_thread(_fetch, gw, row))
    start = after if after is not None else _event_id(last_event_id)
    return StreamingResponse(
        _tail(gw, row, start, timeout, fetched),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_id(header: str | None) -> int:
    """The ``Last-Event-ID`` a reconnecting client sends: the ``seq`` it saw last."""
    if not header:
        return 0
    try:
        seq = int(header)
    except ValueError:
        seq = -1
    if seq < 0:
        raise InvalidInput("Last-Event-ID is not an event id of this stream")
    return seq


def _fetch(gw: Gateway, row: SessionRow) -> bytes:
    try:
        return gw.recording_storage.read(row)
    except RecordingUnavailable as exc:
        raise NotFound(str(exc)) from None
    except ObjectStoreError as exc:
        raise Unavailable(f"the recording cannot be fetched just now: {exc}") from None


def _read_from(gw: Gateway, row: SessionRow, offset: int, fetched: list[bytes]) -> bytes:
    """Up to 1 MiB of the recording from ``offset``: from the local file while it is
    there, else (uploaded since) from object storage, fetched once into ``fetched``."""
    path = gw.recording_storage.local_path(row)
    if not fetched and path is not None:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                return fh.read(1 << 20)
        except FileNotFoundError:
            pass
    if not fetched:
        fetched.append(gw.recording_storage.read(row))
    return fetched[0][offset : offset + (1 << 20)]


async def _tail(
    gw: Gateway, row: SessionRow, after: int, timeout: float, fetched: list[bytes]
) -> AsyncIterator[bytes]:
    session_id = row.id
    deadline = time.monotonic() + timeout
    offset = 0
    partial = b""
    last_beat = time.monotonic()
    ended = False
    while time.monotonic() < deadline:
        chunk = await asyncio.to_thread(_read_from, gw, row, offset, fetched)
        offset += len(chunk)
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        finished = False
        for line in lines:
            if not line.strip():
                continue
            event = orjson.loads(line)
            if event.get("seq", 0) <= after:
                continue
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (
                event["seq"],
                str(event.get("type", "event")).encode(),
                line,
            )
            finished = finished or event.get("type") == "seal"
        if finished:
            return
        if not chunk:
            if ended:
                return  # read once more after the session ended: nothing was left
            if await asyncio.to_thread(_has_ended, gw, session_id):
                ended = True
                continue
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(TAIL_POLL)


def _has_ended(gw: Gateway, session_id: str) -> bool:
    with gw.store.session() as db:
        ended = db.scalar(select(SessionRow.ended_at).where(SessionRow.id == session_id))
    return ended is not None


#: How often the live tail looks for new events.
TAIL_POLL = 0.1


@router.get("/sessions/{session_id}/verify")
def verify_session(session_id: str, gw: GatewayDep, who: Caller) -> dict[str, Any]:
    """Check the hash chain and the seal's Ed25519 signature; name the first bad event."""
    row = _session(gw, who, session_id)
    keys = known_keys(gw.store, gw.signing_key)  # every node's, past and present
    stored = StoredSeal(row.seal_digest, row.seal_signature, row.seal_key_id, row.event_count)
    result = verify_recording(
        _recording(gw, row), row.id, keys, stored=stored, open_session=row.ended_at is None
    )
    return result.as_dict()


class LegalHoldIn(BaseModel):
    hold: bool


@router.put("/sessions/{session_id}/legal-hold", response_model=SessionOut)
def set_legal_hold(
    session_id: str, body: LegalHoldIn, gw: GatewayDep, who: AdminOrAuditor, addr: ClientAddr
) -> SessionOut:
    """Put a session's recording under legal hold (retention never deletes it), or release it."""
    with gw.store.session() as db:
        row = db.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"no session {session_id[:40]!r}")
        row.legal_hold = body.hold
        AuditLog.record(
            db,
            "session:legal_hold" if body.hold else "session:legal_hold_release",
            caller=who,
            target_type="session",
            target_name=session_id,
            client_addr=addr,
        )
        db.flush()
        return SessionOut.of(row)


class LostIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


@router.post("/sessions/{session_id}/lost", response_model=SessionOut)
def mark_lost(
    session_id: str, body: LostIn, gw: GatewayDep, who: Admin, addr: ClientAddr
) -> SessionOut:
    """Declare the recording of a closed session lost: it cannot be read (its node is gone
    with its disk, its object was removed) and never will be. Refused while it can be read.
    The audit export stops waiting for it and sends a ``recording.lost`` record instead;
    the declaration, its reason and the path the recording had go to the audit log."""
    with gw.store.session() as db:
        row = db.get(SessionRow, session_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no session {session_id[:40]!r}")
        if row.ended_at is None:
            raise Conflict("the session is still open (a stopped gateway's sessions are "
                           "closed when it starts again)")  # fmt: skip
        if row.recording_state == LOST:
            raise Conflict("the recording is already marked lost")
        if not row.recording_path or row.recording_state in GONE:
            raise Conflict(f"the session has no recording to lose ({row.recording_state})")
        try:
            readable = gw.recording_storage.readable(row)
        except ObjectStoreError as exc:
            raise Unavailable(f"cannot tell whether the recording is there: {exc}") from None
        if readable:
            raise Conflict("the recording can be read: it is not lost")
        details = {"reason": body.reason, "path": row.recording_path}
        if row.recording_location:
            details["location"] = row.recording_location
        if row.node_id:
            details["node"] = row.node_id
        row.recording_state = LOST
        row.recording_path = None  # nothing for retention or the uploader to look for
        AuditLog.record(
            db,
            LOST_ACTION,
            caller=who,
            target_type="session",
            target_name=session_id,
            client_addr=addr,
            details=details,
        )
        db.flush()
        return SessionOut.of(row)
