"""Recording sessions: the index row in the store and the event log on disk.

:class:`Recorder` is gateway-wide; :meth:`Recorder.open` starts a
:class:`SessionRecorder` for one client session. The session recorder is what the
protocol relays report executions to (it implements their ``Observer``): a ``request``
event is written when a statement is seen — before it is forwarded upstream — and a
``result`` event when its answer is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from jitgate.recording.log import EventLog
from jitgate.store.db import Store
from jitgate.store.models import SessionRow, utcnow

if TYPE_CHECKING:
    from jitgate.protocols.postgres.relay import Execution

log = logging.getLogger("jitgate.recording")

#: Longest time a result event waits in memory before it is written.
FLUSH_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class SessionMeta:
    protocol: str
    connection_id: str | None
    connection_name: str
    identity_id: str
    identity_name: str
    actor_id: str | None
    actor_name: str | None
    auth_method: str
    token_id: str | None
    client_addr: str | None
    client_program: str | None


class Recorder:
    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root

    def _path(self, session_id: str, started: datetime) -> Path:
        return self.root / started.strftime("%Y/%m/%d") / f"{session_id}.jsonl"

    async def open(self, meta: SessionMeta) -> SessionRecorder:
        session_id = str(uuid.uuid4())
        started = datetime.now(UTC)
        path = self._path(session_id, started)

        def insert() -> None:
            with self.store.session() as session:
                session.add(
                    SessionRow(
                        id=session_id,
                        protocol=meta.protocol,
                        connection_id=meta.connection_id,
                        connection_name=meta.connection_name,
                        identity_id=meta.identity_id,
                        identity_name=meta.identity_name,
                        actor_id=meta.actor_id,
                        actor_name=meta.actor_name,
                        auth_method=meta.auth_method,
                        token_id=meta.token_id,
                        client_addr=meta.client_addr,
                        client_program=meta.client_program,
                        started_at=started,
                        counts={},
                        bytes_in=0,
                        bytes_out=0,
                        recording_path=str(path.relative_to(self.root)),
                    )
                )

        await asyncio.to_thread(insert)
        log = EventLog(path, session_id)
        recorder = SessionRecorder(self, session_id, log)
        log.append("session.start", {"session": session_id, **dataclasses.asdict(meta)})
        return recorder

    def path_of(self, relative: str) -> Path:
        return self.root / relative


class SessionRecorder:
    def __init__(self, recorder: Recorder, session_id: str, log: EventLog) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.log = log
        self.counts: Counter[str] = Counter()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ Observer

    def started(self, execution: Execution) -> None:
        stmt = execution.statement
        data: dict[str, Any] = {
            "request": execution.seq,
            "via": execution.via,
            "text": execution.text,
            "decision": execution.decision.outcome.value,
            "policies": list(execution.decision.policies),
        }
        if execution.decision.reason:
            data["reason"] = execution.decision.reason
        if stmt is not None:
            data["kind"] = stmt.kind.value
            data["tag"] = stmt.tag
            if stmt.tables_read:
                data["tables_read"] = sorted(stmt.tables_read)
            if stmt.tables_written:
                data["tables_written"] = sorted(stmt.tables_written)
            if stmt.has_where is not None:
                data["has_where"] = stmt.has_where
            if stmt.dangerous:
                data["dangerous"] = list(stmt.dangerous)
        self.counts[execution.decision.outcome.value] += 1
        self.log.append("request", data)

    def finished(self, execution: Execution) -> None:
        data: dict[str, Any] = {"request": execution.seq, "status": execution.status}
        if execution.tag:
            data["command_tag"] = execution.tag
        if execution.rows is not None:
            data["rows"] = execution.rows
        if execution.duration_ms is not None:
            data["duration_ms"] = round(execution.duration_ms, 3)
        if execution.error is not None:
            data["error"] = {"sqlstate": execution.error[0], "message": execution.error[1]}
        masked = getattr(execution, "masked_values", 0)
        if masked:
            data["masked_values"] = masked
        if execution.status in ("error", "skipped"):
            self.counts[execution.status] += 1
        self.log.append("result", data)

    # ------------------------------------------------------------------ terminals

    def terminal(self, stream: str, data: str) -> None:
        """One chunk of a terminal stream as an asciicast v2 frame.

        ``stream`` is ``"o"`` (output the client saw) or ``"i"`` (input it typed); the
        event's ``t`` is seconds since the session started, as asciicast wants it.
        """
        self.log.append(
            "term", {"t": round(time.monotonic() - self._t0, 6), "s": stream, "d": data}
        )
        self.flush_soon()

    def resize(self, cols: int, rows: int) -> None:
        """A terminal window change (asciicast ``"r"`` frame, ``COLSxROWS``)."""
        self.log.append(
            "term", {"t": round(time.monotonic() - self._t0, 6), "s": "r", "d": f"{cols}x{rows}"}
        )
        self.flush_soon()

    # --------------------------------------------------------------------- flush

    def flush(self) -> None:
        """Hand pending events to the kernel (before a request is forwarded)."""
        self.log.flush()

    def flush_soon(self) -> None:
        """Make sure pending result events are written within ``FLUSH_DELAY``."""
        if self._timer is None and self.log.pending:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_DELAY, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        try:
            self.log.flush()
        except OSError as exc:
            log.error("session %s: cannot write its recording: %s", self.session_id, exc)

    # --------------------------------------------------------------------- close

    def event(self, type: str, data: dict[str, Any]) -> None:
        self.log.append(type, data)
        self.log.flush()

    async def close(
        self, reason: str, bytes_in: int, bytes_out: int, *, masked: dict[str, int] | None = None
    ) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError):
            self.log.append(
                "session.end",
                {
                    "reason": reason,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "counts": dict(self.counts),
                    **({"masked": masked} if masked else {}),
                },
            )
        await asyncio.to_thread(self.log.close)
        counts: dict[str, Any] = dict(self.counts)
        if masked:
            counts["masked"] = masked

        def update() -> None:
            with self.recorder.store.session() as session:
                row = session.scalar(select(SessionRow).where(SessionRow.id == self.session_id))
                if row is not None:
                    row.ended_at = utcnow()
                    row.end_reason = reason[:256]
                    row.bytes_in = bytes_in
                    row.bytes_out = bytes_out
                    row.counts = counts

        await asyncio.to_thread(update)
