"""Exporting the audit trail as a JSON Lines stream, at least once, resumable.

Theory of operation
-------------------
The stream has two parts, each with its own position in one *cursor*:

* ``admin`` — administrative audit events (``connection:create``…), in id order;
* ``session`` — the events of every closed session recording, sessions in the order
  they were closed (``close_seq``), each session's events in ``seq`` order. The close
  order is not the order of ``ended_at``: a session a stopped gateway left open is closed
  when it is recovered, with the ``ended_at`` of its last write, and still comes after
  the cursor. Close numbers are handed out in commit order (see
  :mod:`jitgate.store.closing`), so a session closed while the export reads is never
  passed over either.

:class:`Exporter` repeats: fetch a batch after the cursor → hand it to the sink, which
returns only when the batch is acknowledged (file written and fsynced, TCP send done,
webhook answered 2xx) → save the batch's end cursor. A crash between delivery and saving
repeats at most that one batch; nothing is ever skipped. A closed session whose
recording cannot be read yet (its file is on another node's disk and not uploaded, or
the object store is down) is *waited for*: the export stops before it and tries again
next round (:attr:`StoreSource.waiting` names it); only a recording that retention
deleted, or one that was never kept, is passed over. A recording that will never be
readable again (the node that held it is gone with its disk) stops the export until an
administrator marks it lost (``jitgate sessions lost SESSION --reason …``): the export
then delivers one ``recording.lost`` record in its place — the gap is in the stream for
every receiver to see, with who declared it and why — and goes on. Every record carries
``export_id`` (``admin:<id>``, ``<session>:<seq>`` or ``<session>:lost``) so a receiver
can drop repeats.

Two exporters sharing one cursor in the store (two gateway nodes with the same
``recording.export_to``) would deliver everything twice. The cursor row therefore holds
a *lease*: an exporter takes it for a round (when it is free or expired, see
:data:`LEASE_SECONDS`) and gives it back at the end; each save of the cursor first
checks, in the same transaction, that the lease is still its own (and renews it). An
exporter that lost its lease stops without saving (:class:`LeaseLost`): the batch it
delivered may come again from the new holder (at least once), never a gap, and the
cursor never moves back. A cursor file is locked (``flock``) for the same reason.

Retention deletes only what this export has passed (:mod:`jitgate.recording.retention`).
An exporter reading through the API (:class:`APISource`) keeps its cursor where the
gateway cannot see it; named (``consumer``), it tells the gateway its cursor with each
request, and retention waits for it too (:mod:`jitgate.recording.consumers`).

Sinks: ``file:PATH``, ``stdout``, ``syslog://HOST:PORT`` (RFC 5424 over UDP),
``syslog+tcp://HOST:PORT`` (RFC 5424, octet-counted framing of RFC 6587) and ``https://``
webhooks (``http://`` only to loopback) signed like approver notifications:
``X-Jitgate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``. A
webhook sink needs its secret: without one it refuses to start (an unsigned stream of
audit events could be forged by anyone who can reach the receiver).

UDP syslog is *not* at least once: a datagram is "delivered" when the kernel sends it,
and nothing tells the exporter whether it arrived, so a receiver that is down or a
dropped packet loses records and the cursor moves on all the same. Use ``syslog+tcp``
(acknowledged by TCP, resent from the cursor after a failure), a file or a webhook where
the trail must be complete. A UDP message is at most :data:`MAX_UDP_MESSAGE` bytes: a
longer record is sent shortened to fit (see :func:`fit_record`), still one valid JSON
object, with ``"truncated"`` naming the fields cut.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jitgate.access.notify import sign
from jitgate.audit.log import AuditLog
from jitgate.recording.storage import RecordingStorage, RecordingUnavailable, iter_events
from jitgate.store.db import Store
from jitgate.store.models import ExportCursorRow, SessionRow

Record = dict[str, Any]

log = logging.getLogger("jitgate.recording")

#: Recording states with nothing to export (deleted by retention, or never kept).
GONE = frozenset({"deleted", "off"})
#: The state of a recording an administrator declared lost (see :func:`mark_lost`).
LOST = "lost"
#: The audit log action that declares a recording lost.
LOST_ACTION = "session:recording_lost"
#: A cursor's ``seq`` once the ``recording.lost`` record of its session has gone out.
LOST_SEQ = 1 << 62
#: How long an exporter's lease on a cursor in the store lasts without being renewed.
LEASE_SECONDS = 60.0


class LeaseLost(OSError):
    """Another exporter holds the cursor's lease now: this one must not save it."""


# ---------------------------------------------------------------------- cursor


@dataclass
class Cursor:
    admin: int = 0
    closed: int | None = 0  # close_seq of the session being / last exported (None: legacy)
    session: str | None = None
    seq: int = 0  # last exported event of that session
    ended_at: str | None = None  # what cursors said before close_seq (legacy, read only)

    def encode(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "ended_at" or v is not None}
        body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        return base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            closed = data.get("closed")
            session = data.get("session")
            return cls(
                admin=int(data.get("admin", 0)),
                closed=int(closed) if closed is not None else (None if session else 0),
                session=session,
                seq=int(data.get("seq", 0)),
                ended_at=data.get("ended_at") if closed is None else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError("export cursor is not valid") from exc


# ---------------------------------------------------------------------- source


@dataclass
class StoreSource:
    """Reads the stream from the store and the recordings directory."""

    store: Store
    recordings: Path
    storage: RecordingStorage | None = None  # where recordings are read (default: local)
    waiting: str | None = field(default=None, init=False)  # the session the export waits for

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = RecordingStorage(self.recordings, self.store)

    def fetch(self, cursor: Cursor, limit: int) -> tuple[list[Record], Cursor]:
        records: list[Record] = []
        after = Cursor(**cursor.__dict__)
        with self.store.session() as db:
            for event in AuditLog.query(db, after_id=after.admin or None, limit=limit):
                records.append(
                    {
                        "export_id": f"admin:{event.id}",
                        "source": "admin",
                        "id": event.id,
                        "at": event.at.isoformat(),
                        "action": event.action,
                        "outcome": event.outcome,
                        "actor": event.actor,
                        "on_behalf_of": event.on_behalf_of,
                        "target_type": event.target_type,
                        "target_name": event.target_name,
                        "client_addr": event.client_addr,
                        "details": dict(event.details),
                    }
                )
                after.admin = event.id
        if len(records) >= limit:
            return records, after
        self._sessions(after, records, limit)
        return records, after

    def _legacy(self, after: Cursor) -> None:
        """Turn a cursor of the ``(ended_at, session)`` order into a close number: sessions
        closed before the upgrade were numbered in that order."""
        with self.store.session() as db:
            current = db.get(SessionRow, after.session) if after.session else None
            if current is not None and current.close_seq is not None:
                after.closed = current.close_seq
            else:
                stmt = select(func.max(SessionRow.close_seq))
                if after.ended_at is not None and after.session is not None:
                    stmt = stmt.where(
                        tuple_(SessionRow.ended_at, SessionRow.id)
                        <= tuple_(datetime.fromisoformat(after.ended_at), after.session)
                    )
                after.closed = int(db.scalar(stmt) or 0)
                after.session, after.seq = None, 0
        after.ended_at = None

    def _sessions(self, after: Cursor, records: list[Record], limit: int) -> None:
        if after.closed is None:
            self._legacy(after)
        if after.session is not None:
            with self.store.session() as db:
                current = db.get(SessionRow, after.session)
            if (
                current is not None
                and current.close_seq == after.closed
                and not self._read(current, after, records, limit)
            ):
                return
        while len(records) < limit:
            stmt = (
                select(SessionRow)
                .where(SessionRow.close_seq > (after.closed or 0))
                .order_by(SessionRow.close_seq)
                .limit(50)
            )
            with self.store.session() as db:
                rows = list(db.scalars(stmt))
                db.expunge_all()
            if not rows:
                return
            for row in rows:
                assert row.close_seq is not None
                after.closed, after.session, after.seq = row.close_seq, row.id, 0
                if not self._read(row, after, records, limit):
                    return

    def _read(self, row: SessionRow, after: Cursor, records: list[Record], limit: int) -> bool:
        """Append the session's events after ``after.seq``; False when the batch is full
        or the recording cannot be read yet (the cursor then stays on the session)."""
        if row.recording_state == LOST:
            return self._lost(row, after, records, limit)
        if not row.recording_path or row.recording_state in GONE:
            return True
        try:  # a failure of the object store is raised: the export is retried
            assert self.storage is not None
            lines = self.storage.lines(row)
        except RecordingUnavailable as exc:
            if self.waiting != row.id:
                log.warning(
                    "audit export waits for the recording of session %s (closed %s): %s; "
                    "if it will never be readable, mark it lost (jitgate sessions lost)",
                    row.id,
                    row.ended_at,
                    exc,
                )
            self.waiting = row.id
            return False
        self.waiting = None
        for event in iter_events(lines):
            seq = int(event.get("seq", 0))
            if seq <= after.seq:
                continue
            if len(records) >= limit:
                return False
            records.append(
                {
                    "export_id": f"{row.id}:{seq}",
                    "source": "session",
                    "session": row.id,
                    "connection": row.connection_name,
                    "identity": row.identity_name,
                    "actor": row.actor_name,
                    **event,
                }
            )
            after.seq = seq
        return True

    def _lost(self, row: SessionRow, after: Cursor, records: list[Record], limit: int) -> bool:
        """The ``recording.lost`` record that stands for a lost recording's events (those
        after ``after.seq``: the export may have delivered some before it was lost)."""
        if after.seq >= LOST_SEQ:
            return True
        if len(records) >= limit:
            return False
        with self.store.session() as db:
            found = AuditLog.query(db, action=LOST_ACTION, target_name=row.id, limit=1)
        declared = found[0] if found else None
        records.append(
            {
                "export_id": f"{row.id}:lost",
                "source": "session",
                "session": row.id,
                "connection": row.connection_name,
                "identity": row.identity_name,
                "actor": row.actor_name,
                "type": "recording.lost",
                "after_seq": after.seq,
                "events": row.event_count,
                "declared_at": declared.at.isoformat() if declared else None,
                "declared_by": declared.actor if declared else None,
                "reason": declared.details.get("reason") if declared else None,
            }
        )
        after.seq = LOST_SEQ
        return True


class APISource:
    """Reads the stream through the REST API (``GET /api/v1/audit/export``).

    With a ``consumer`` name, each request tells the server the cursor this exporter has
    saved, and retention keeps what it has not passed (:mod:`jitgate.recording.consumers`).
    """

    def __init__(self, request: Callable[..., Any], *, consumer: str | None = None) -> None:
        self._request = request
        self._consumer = consumer

    def fetch(self, cursor: Cursor, limit: int) -> tuple[list[Record], Cursor]:
        params: dict[str, Any] = {"cursor": cursor.encode(), "limit": limit}
        if self._consumer is not None:
            params["consumer"] = self._consumer
        page = self._request("GET", "/api/v1/audit/export", params=params)
        return list(page["items"]), Cursor.decode(page["cursor"])


class Source(Protocol):
    def fetch(self, cursor: Cursor, limit: int) -> tuple[list[Record], Cursor]: ...


# ------------------------------------------------------------------ cursor stores


class CursorStore(Protocol):
    def acquire(self) -> bool:
        """Take the cursor for a round of export; False when another exporter has it."""

    def load(self) -> Cursor: ...

    def save(self, cursor: Cursor) -> None:
        """Keep ``cursor``; raises :class:`LeaseLost` when the cursor is no longer ours."""

    def release(self) -> None: ...


@dataclass
class FileCursor:
    path: Path
    _lock: int | None = field(default=None, init=False, repr=False)

    def acquire(self) -> bool:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock = fd
        return True

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def load(self) -> Cursor:
        try:
            return Cursor.decode(self.path.read_text().strip())
        except FileNotFoundError:
            return Cursor()

    def save(self, cursor: Cursor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as fh:
            fh.write(cursor.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def locked_cursor_row(db: Session, name: str) -> tuple[ExportCursorRow, bool]:
    """The row of the cursor ``name``, created if missing, locked until ``db`` commits;
    and whether this call created it."""
    stmt = select(ExportCursorRow).where(ExportCursorRow.name == name)
    row = db.scalar(stmt.with_for_update())
    created = False
    if row is None:
        try:
            with db.begin_nested():
                db.add(ExportCursorRow(name=name, cursor={}))
            created = True
        except IntegrityError:  # another exporter created it just now
            pass
        row = db.scalar(stmt.with_for_update())
    assert row is not None
    return row, created


@dataclass
class StoreCursor:
    """The cursor in ``export_cursors``, with the lease of the exporter that moves it:
    ``{"cursor": ..., "lease": {"holder": ..., "until": ISO time}}``."""

    store: Store
    name: str
    holder: str = field(default_factory=lambda: str(uuid.uuid4()))
    lease_seconds: float = LEASE_SECONDS

    def _row(self, db: Session) -> ExportCursorRow:
        return locked_cursor_row(db, self.name)[0]

    def _lease(self, row: ExportCursorRow) -> dict[str, Any]:
        lease = (row.cursor or {}).get("lease")
        return lease if isinstance(lease, dict) else {}

    def _take(self, row: ExportCursorRow, cursor: str | None) -> None:
        until = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        data: dict[str, Any] = {"lease": {"holder": self.holder, "until": until.isoformat()}}
        if cursor is not None:
            data["cursor"] = cursor
        row.cursor = data

    def acquire(self) -> bool:
        with self.store.session() as db:
            row = self._row(db)
            lease = self._lease(row)
            holder, until = lease.get("holder"), lease.get("until")
            if holder not in (None, self.holder) and until is not None:
                if datetime.fromisoformat(str(until)) > datetime.now(UTC):
                    return False
                log.warning(
                    "audit export %s: taking over the expired lease of %s", self.name, holder
                )
            self._take(row, (row.cursor or {}).get("cursor"))
        return True

    def release(self) -> None:
        with self.store.session() as db:
            row = self._row(db)
            if self._lease(row).get("holder") == self.holder:
                row.cursor = {k: v for k, v in (row.cursor or {}).items() if k != "lease"}

    def load(self) -> Cursor:
        with self.store.session() as db:
            row = db.get(ExportCursorRow, self.name)
            return Cursor.decode(row.cursor.get("cursor")) if row is not None else Cursor()

    def save(self, cursor: Cursor) -> None:
        with self.store.session() as db:
            row = self._row(db)
            holder = self._lease(row).get("holder")
            if holder != self.holder:  # taken over (and maybe given back) meanwhile
                raise LeaseLost(f"audit export {self.name}: the lease is not ours any more")
            self._take(row, cursor.encode())


# ----------------------------------------------------------------------- sinks


class Sink(Protocol):
    def send(self, records: list[Record]) -> None:
        """Deliver the batch; return only once it is acknowledged, else raise OSError."""

    def close(self) -> None: ...


def _line(record: Record) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)


@dataclass
class FileSink:
    path: Path

    def send(self, records: list[Record]) -> None:
        data = b"".join(_line(r) + b"\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class StdoutSink:
    def send(self, records: list[Record]) -> None:
        out = sys.stdout.buffer
        out.write(b"".join(_line(r) + b"\n" for r in records))
        out.flush()

    def close(self) -> None:
        pass


#: RFC 5424 facility "log audit" (13); severity notice (5) for refusals, info (6) otherwise.
FACILITY = 13
#: Longest syslog message sent over UDP (a datagram's payload is at most 65507 bytes).
MAX_UDP_MESSAGE = 60000


#: What an oversize record keeps whole: what it is, where it is from, what was decided.
_KEPT = frozenset(
    {
        "export_id", "source", "session", "seq", "type", "at", "id", "action", "outcome",
        "decision", "request", "connection", "identity", "actor", "prev", "hash", "truncated",
    }
)  # fmt: skip
_CUT_MARK = "…"


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str))


def fit_record(record: Record, limit: int) -> Record:
    """``record`` shortened so that its JSON is at most ``limit`` bytes.

    A record that fits is returned as it is. Otherwise the result sample goes first, then
    the longest other fields are shortened (text, ending in "…") or left out (lists,
    objects) until it fits; ``"truncated"`` lists the fields cut. The record's ``hash``
    is the original event's: the whole event is in the session's recording.
    """
    if len(_line(record)) <= limit:
        return record
    out = dict(record)
    cut: list[str] = []
    out["truncated"] = cut
    if "sample" in out:
        del out["sample"]
        cut.append("sample")
    shortened: set[str] = set()
    for _ in range(3 * len(out)):  # each round names, shortens or drops one field
        excess = len(_line(out)) - limit
        if excess <= 0:
            break
        sizes = [(_json_size(v), k) for k, v in out.items() if k not in _KEPT]
        if not sizes:
            break  # nothing left to cut: the caller's limit is below the record's core
        size, key = max(sizes)
        if key not in cut:
            cut.append(key)  # named first, so the cut below makes room for the name too
            continue
        value = out[key]
        if isinstance(value, str) and key not in shortened:
            shortened.add(key)
            kept = _prefix(value, size - excess)
            if kept:
                out[key] = kept
                continue
        del out[key]
    return out


def _prefix(text: str, size: int) -> str:
    """The longest start of ``text`` that, marked as cut, is at most ``size`` bytes of JSON
    (escapes count: a control character takes six); "" when not even one character fits."""
    low, high = 0, len(text)
    while low < high:  # the longest n with len(json(text[:n] + mark)) <= size
        middle = (low + high + 1) // 2
        if _json_size(text[:middle] + _CUT_MARK) <= size:
            low = middle
        else:
            high = middle - 1
    return text[:low] + _CUT_MARK if low else ""


def syslog_message(record: Record, hostname: str, *, limit: int | None = None) -> bytes:
    """One RFC 5424 message; with ``limit``, the record is shortened to fit in it."""
    refused = record.get("decision") in ("deny", "review") or record.get("outcome") == "failure"
    pri = FACILITY * 8 + (5 if refused else 6)
    at = str(record.get("at") or datetime.now(UTC).isoformat())
    msgid = str(record.get("type") or record.get("action") or "audit").replace(" ", "_")[:32]
    sd = f'[jitgate@32473 export_id="{_sd_escape(str(record.get("export_id", "")))}"]'
    header = f"<{pri}>1 {at} {hostname[:255]} jitgate {os.getpid()} {msgid} {sd} ".encode()
    if limit is not None:
        record = fit_record(record, limit - len(header))
    return header + _line(record)


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


class SyslogSink:
    def __init__(self, host: str, port: int, *, tcp: bool, timeout: float = 10.0) -> None:
        self.address = (host, port)
        self.tcp = tcp
        self.timeout = timeout
        self.hostname = socket.gethostname() or "-"
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.tcp:
                self._sock = socket.create_connection(self.address, timeout=self.timeout)
            else:
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.settimeout(self.timeout)
        return self._sock

    def send(self, records: list[Record]) -> None:
        try:
            sock = self._socket()
            if self.tcp:
                frames = []
                for record in records:
                    message = syslog_message(record, self.hostname)
                    frames.append(str(len(message)).encode() + b" " + message)
                sock.sendall(b"".join(frames))
            else:
                for record in records:
                    message = syslog_message(record, self.hostname, limit=MAX_UDP_MESSAGE)
                    sock.sendto(message, self.address)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class WebhookSink:
    url: str
    secret: bytes
    timeout: float = 10.0
    _client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout)

    def send(self, records: list[Record]) -> None:
        body = b"".join(_line(r) + b"\n" for r in records)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-ndjson",
            "X-Jitgate-Event": "audit.export",
            "X-Jitgate-Timestamp": timestamp,
        }
        headers["X-Jitgate-Signature"] = sign(self.secret.decode(), timestamp, body)
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise OSError(f"webhook unreachable: {exc}") from exc
        if not response.is_success:
            raise OSError(f"webhook answered HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_sink(target: str, *, secret: bytes | None = None) -> Sink:
    if target == "stdout":
        return StdoutSink()
    if target.startswith("file:"):
        path = Path(target[5:]).expanduser()
        if not target[5:]:
            raise ValueError("file: needs a path")
        return FileSink(path)
    parts = urlsplit(target)
    if parts.scheme in ("syslog", "syslog+udp", "syslog+tcp"):
        if not parts.hostname or not parts.port:
            raise ValueError("syslog export needs syslog://HOST:PORT")
        return SyslogSink(parts.hostname, parts.port, tcp=parts.scheme == "syslog+tcp")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
        if not secret:
            raise ValueError(
                "a webhook export needs a signing secret (recording.export_secret, or the "
                "variable named by --secret-env): receivers must be able to tell its "
                "records from forged ones"
            )
        return WebhookSink(target, secret)
    raise ValueError(
        f"unknown export target {target!r}: use file:PATH, stdout, syslog://HOST:PORT, "
        "syslog+tcp://HOST:PORT or https://URL"
    )


# ---------------------------------------------------------------------- exporter


class Exporter:
    def __init__(self, source: Source, sink: Sink, cursors: CursorStore, *, batch: int = 500):
        self.source = source
        self.sink = sink
        self.cursors = cursors
        self.batch = batch

    def run_once(self, *, max_batches: int | None = None) -> int:
        """Export everything available now; returns the number of records delivered
        (0 when another exporter holds the cursor's lease)."""
        if not self.cursors.acquire():
            return 0
        try:
            return self._rounds(max_batches)
        finally:  # between rounds, any exporter may take the cursor (it reloads it)
            with contextlib.suppress(Exception):
                self.cursors.release()

    def _rounds(self, max_batches: int | None) -> int:
        cursor = self.cursors.load()
        sent = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            records, after = self.source.fetch(cursor, self.batch)
            if records:
                self.sink.send(records)  # raises if not acknowledged: cursor stays put
                sent += len(records)
            if after != cursor:
                self.cursors.save(after)
                cursor = after
            batches += 1
            if len(records) < self.batch:
                break
        return sent
