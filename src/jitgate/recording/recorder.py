"""Recording sessions: the index row in the store and the event log on disk.

:class:`Recorder` is gateway-wide; :meth:`Recorder.open` starts a
:class:`SessionRecorder` for one client session. The session recorder is what the
protocol relays report executions to (it implements their ``Observer``): a ``request``
event is written when a statement is seen — before it is forwarded upstream — and a
``result`` event when its answer is complete, with a capped sample of the result rows
*as the client received them* (after masking; see :class:`RowSample`).

Failure mode: when the event log cannot be written, a recorder that *fails closed* (the
default) raises from :meth:`SessionRecorder.flush` — the adapter then forwards nothing —
and reports :attr:`SessionRecorder.refusing` so that the statements that follow are
refused with a protocol error. Relays that decide requests of their own kind (SSH) report
them through :meth:`SessionRecorder.decided`, which raises the same way for an allowed
request whose event cannot be written. A recorder that *fails open* (``on_failure: open`` in the
``recording`` settings or ``recording_on_failure: open`` in a connection's options) logs
every failure at ERROR and lets traffic through; the bytes not written are retried at the
next flush. The same setting decides when the recording cannot even be opened at
session start (:class:`RecordingFailed`: the adapter refuses the session in its protocol;
fail open: logged at ERROR, the session goes on unrecorded, ``recording_state`` ``failed``).
At close the log gets a ``session.end`` and a signed ``seal`` event
(:mod:`jitgate.recording.seal`) and the session row the seal's digest and signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from jitgate.policy.types import Outcome
from jitgate.recording.log import EventLog, EventShape
from jitgate.recording.options import resolve
from jitgate.recording.seal import SEAL_TYPE, make_seal
from jitgate.store.db import Store
from jitgate.store.models import SessionRow, utcnow

if TYPE_CHECKING:
    from jitgate.config import RecordingSettings
    from jitgate.identity.signing import SigningKey
    from jitgate.protocols.postgres.relay import Execution

log = logging.getLogger("jitgate.recording")

#: How long closing a session keeps retrying a recording write that fails (disk full…).
CLOSE_RETRY_SECONDS = 2.0

#: Longest time a result event waits in memory before it is written.
FLUSH_DELAY = 0.05

_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_FIELD_TAIL = 18  # RowDescription: table oid, attnum, type oid, typlen, typmod, format

# The members of a request event that change from one statement to the next (the rest
# is encoded once per kind of statement: see SessionRecorder.started).
_REQUEST_VARIABLE = ("request", "text")
_INT = frozenset({"request", "rows", "masked_values"})
_SORTED = orjson.OPT_SORT_KEYS  # nested members are canonical JSON too
_dumps = orjson.dumps
_ALLOW = Outcome.ALLOW


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
    grant_ids: tuple[str, ...] = ()
    client_port: int | None = None


class RecordingFailed(OSError):
    """A session's recording cannot be opened and its connection fails closed."""


class Recorder:
    def __init__(
        self,
        store: Store,
        root: Path,
        *,
        signing_key: SigningKey | None = None,
        settings: RecordingSettings | None = None,
    ) -> None:
        from jitgate.config import RecordingSettings

        self.store = store
        self.root = root
        self.signing_key = signing_key
        self.settings = settings or RecordingSettings()
        self.created_at = utcnow()  # sessions older than this belong to an earlier process

    def _path(self, session_id: str, started: datetime) -> Path:
        return self.root / started.strftime("%Y/%m/%d") / f"{session_id}.jsonl"

    async def open(
        self, meta: SessionMeta, *, options: Mapping[str, Any] | None = None
    ) -> SessionRecorder:
        """Start recording a session. ``options`` are the connection's options, which may
        turn recording off, choose what happens when it fails, when it syncs, how much of
        each result it keeps, and put its sessions under legal hold (see
        :mod:`jitgate.recording.options`)."""
        resolved = resolve(options, self.settings, connection=meta.connection_name)
        enabled = resolved.enabled
        session_id = str(uuid.uuid4())
        started = datetime.now(UTC)
        path = self._path(session_id, started) if enabled else None
        event_log: EventLog | None = None
        failure: Exception | None = None
        if path is not None:
            try:
                event_log = EventLog(path, session_id)
            except OSError as exc:
                failure, path = exc, None
                self._start_failed(meta, session_id, resolved.fail_open, exc)

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
                        recording_path=str(path.relative_to(self.root)) if path else None,
                        grant_ids=sorted(meta.grant_ids),
                        recording_state="failed" if failure else "ok" if enabled else "off",
                        legal_hold=resolved.legal_hold,
                    )
                )

        try:
            await asyncio.to_thread(insert)
        except Exception as exc:
            if event_log is not None:  # a recording no index row points to: not kept
                with contextlib.suppress(OSError):
                    event_log.close()
                    event_log.path.unlink()
                event_log = None
            self._start_failed(meta, session_id, resolved.fail_open, exc)
            failure = exc
        recorder = SessionRecorder(
            self,
            session_id,
            event_log,
            fail_open=resolved.fail_open,
            fsync=resolved.fsync,
            sample=(resolved.sample_rows, resolved.sample_bytes),
        )
        recorder.unrecorded = failure is not None
        if event_log is not None:
            start = {"session": session_id, **dataclasses.asdict(meta)}
            start["grant_ids"] = sorted(meta.grant_ids)
            event_log.append("session.start", start)
        return recorder

    def _start_failed(
        self, meta: SessionMeta, session_id: str, fail_open: bool, exc: Exception
    ) -> None:
        """The recording (or its index row) cannot be opened: raise when the connection
        fails closed, else say loudly that the session goes on unrecorded."""
        if not fail_open:
            log.error(
                "session %s (connection %s, %s from %s): cannot open its recording, the "
                "session is refused (fail closed): %s",
                session_id,
                meta.connection_name,
                meta.identity_name,
                meta.client_addr,
                exc,
            )
            raise RecordingFailed(f"cannot open the session's recording: {exc}") from exc
        log.error(
            "RECORDING FAILURE (fail-open): session %s (connection %s, %s from %s) cannot be "
            "recorded and goes on UNRECORDED: %s",
            session_id,
            meta.connection_name,
            meta.identity_name,
            meta.client_addr,
            exc,
        )

    def path_of(self, relative: str) -> Path:
        return self.root / relative


class RowSample:
    """The first rows of one result, as sent to the client, within a row and byte cap.

    The relay hands it each ``DataRow`` body *after* masking (``Execution.row_sink``);
    it keeps whole rows only, and stops asking for more once a cap is reached.
    """

    __slots__ = ("execution", "max_rows", "room", "rows", "truncated")

    def __init__(self, execution: Execution, max_rows: int, max_bytes: int) -> None:
        self.execution = execution
        self.max_rows = max_rows
        self.room = max_bytes  # bytes that may still be kept
        self.rows: list[bytes] = []
        self.truncated = False

    def add(self, payload: bytes) -> None:
        rows = self.rows
        if len(rows) < self.max_rows:
            room = self.room - len(payload)
            if room >= 0:
                rows.append(payload)
                self.room = room
                return
        self.truncated = True
        self.execution.row_sink = None

    def render(
        self, cache: dict[bytes, tuple[list[str], list[int]]], encoding: str = "utf-8"
    ) -> dict[str, Any]:
        execution = self.execution
        description = execution.row_description
        if description is None and execution.source is not None:
            description = execution.source.row_description
        columns: list[str] = []
        formats: list[int] | tuple[int, ...] = []
        if description:
            known = cache.get(description)
            if known is None:
                if len(cache) >= 256:
                    cache.clear()
                known = cache[description] = _columns(description, encoding)
            columns, formats = known
        formats = execution.result_formats or formats
        rows = []
        if any(formats):
            for row in self.rows:
                rows.append(_cells(row, formats, encoding))
        else:  # all text (the usual case)
            for row in self.rows:
                rows.append(_text_cells(row, encoding))
        out: dict[str, Any] = {"rows": rows}
        if columns:
            out["columns"] = columns
        if self.truncated:
            out["truncated"] = True
        return out


def _request_fields(execution: Execution) -> dict[str, Any]:
    """The parts of a request event that depend on the statement and its decision only."""
    stmt = execution.statement
    decision = execution.decision
    data: dict[str, Any] = {
        "via": execution.via,
        "decision": decision.outcome.value,
        "policies": list(decision.policies),
    }
    if decision.reason:
        data["reason"] = decision.reason
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
    return data


def _columns(payload: bytes, encoding: str) -> tuple[list[str], list[int]]:
    try:
        (count,) = _INT16.unpack_from(payload, 0)
        offset, names, formats = 2, [], []
        for _ in range(count):
            end = payload.index(b"\x00", offset)
            names.append(payload[offset:end].decode(encoding, "replace"))
            formats.append(struct.unpack_from("!h", payload, end + 1 + _FIELD_TAIL - 2)[0])
            offset = end + 1 + _FIELD_TAIL
        return names, formats
    except (struct.error, ValueError):
        return [], []


def _cells(payload: bytes, formats: list[int] | tuple[int, ...], encoding: str) -> list[str | None]:
    cells: list[str | None] = []
    try:
        (count,) = _INT16.unpack_from(payload, 0)
        offset = 2
        for index in range(count):
            (length,) = _INT32.unpack_from(payload, offset)
            offset += 4
            if length < 0:
                cells.append(None)
                continue
            raw = payload[offset : offset + length]
            offset += length
            fmt = formats[index] if index < len(formats) else (formats[0] if formats else 0)
            cells.append(raw.decode(encoding, "replace") if fmt == 0 else "\\x" + raw.hex())
    except struct.error:
        cells.append("<truncated row>")
    return cells


def _text_cells(payload: bytes, encoding: str) -> list[str | None]:
    """:func:`_cells` of a row whose values are all in text format."""
    cells: list[str | None] = []
    offset = 2
    try:
        for _ in range(_INT16.unpack_from(payload, 0)[0]):
            length = _INT32.unpack_from(payload, offset)[0]
            offset += 4
            if length < 0:
                cells.append(None)
            else:
                cells.append(payload[offset : offset + length].decode(encoding, "replace"))
                offset += length
    except struct.error:
        cells.append("<truncated row>")
    return cells


class SessionRecorder:
    def __init__(
        self,
        recorder: Recorder,
        session_id: str,
        log: EventLog | None,
        *,
        fail_open: bool = False,
        fsync: str = "close",
        sample: tuple[int, int] | None = None,
    ) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.log = log
        self.fail_open = fail_open
        self.counts: Counter[str] = Counter()
        self.write_failures = 0
        self.unrecorded = False  # recording failed to open, the session went on (fail open)
        self._allowed_pending = False  # an allowed request's event is not written yet
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = time.monotonic()
        settings = recorder.settings
        rows, size = sample or (settings.sample_rows, settings.sample_bytes)
        self._sample_rows = rows if size else 0  # rows and bytes of results kept, at most
        self._sample_bytes = size
        self._samples: dict[int, RowSample] = {}
        # Results to encode, with the wall-clock time each finished (its event's "at").
        self._done: list[tuple[Execution, RowSample | None, int]] = []
        self._request_cache: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]] = {}
        self._columns_cache: dict[bytes, tuple[list[str], list[int]]] = {}
        self._result_shapes: dict[tuple[Any, ...], EventShape] = {}
        # recording.fsync "request": an allowed request's event reaches the disk itself,
        # not only the kernel, before the request goes on (survives an OS crash too).
        self._sync_requests = fsync == "request"

    @property
    def enabled(self) -> bool:
        return self.log is not None

    @property
    def refusing(self) -> bool:
        """The log cannot be written and this session fails closed: refuse new requests."""
        return self.log is not None and self.log.failed is not None and not self.fail_open

    # ------------------------------------------------------------------ Observer

    def started(self, execution: Execution) -> None:
        decision = execution.decision
        self.counts[decision.outcome.value] += 1
        if self.log is None:
            return
        stmt = execution.statement
        # What a request event says of its statement is the same every time a statement
        # of the same classification is decided the same way (the same decision object:
        # the gate caches them), whatever its constants: build it once. The fields in the
        # key are exactly those _request_fields reads.
        key: tuple[Any, ...] = (
            (id(decision), execution.via)
            if stmt is None
            else (
                id(decision),
                execution.via,
                stmt.kind,
                stmt.tag,
                stmt.tables_read,
                stmt.tables_written,
                stmt.has_where,
                stmt.dangerous,
            )
        )
        cached = self._request_cache.get(key)
        if cached is None or cached[1] is not decision:
            fields = _request_fields(execution)
            try:
                shape: EventShape | None = EventShape("request", fields, _REQUEST_VARIABLE, _INT)
            except ValueError:
                shape = None
            cached = (shape, decision, fields)
            if len(self._request_cache) >= 512:
                self._request_cache.clear()
            self._request_cache[key] = cached
        if self._done:
            self._encode_done()
        shape = cached[0]
        if shape is not None:
            self.log.append_shaped(shape, (execution.seq, _dumps(execution.text)))
        else:
            data = cached[2].copy()
            data["request"] = execution.seq
            data["text"] = execution.text
            self.log.append("request", data)
        if decision.outcome is _ALLOW:
            self._allowed_pending = True
            if self._sample_rows:
                sample = RowSample(execution, self._sample_rows, self._sample_bytes)
                execution.row_sink = sample.add
                self._samples[execution.seq] = sample

    def finished(self, execution: Execution) -> None:
        status = execution.status
        if status == "error" or status == "skipped":
            self.counts[status] += 1
        masked = execution.masked_values
        if masked:
            self.counts["masked_values"] += masked
        sample = self._samples.pop(execution.seq, None) if self._samples else None
        if self.log is not None:
            # Encoded later, off the answer's path: before the next event, or by the timer
            # of flush_soon.
            self._done.append((execution, sample, time.time_ns()))

    def _encode_done(self) -> None:
        """Append the result events of finished executions, in the order they finished."""
        done, self._done = self._done, []
        log = self.log
        assert log is not None
        shapes = self._result_shapes
        for execution, sample, at_ns in done:
            tag = execution.tag
            finished_ns = execution.finished_ns
            if execution.error is not None or not tag or finished_ns is None:
                self._encode_result(execution, sample, at_ns)  # not of a common shape
                continue
            # A result with a command tag and a duration, without error: its shape, so
            # its fixed members, is decided by what follows.
            description = execution.row_description
            sampled = sample is not None and (bool(sample.rows) or description is not None)
            if description is None and execution.source is not None:
                description = execution.source.row_description
            rows = execution.rows
            masked = execution.masked_values
            key = (description, execution.status, tag, rows is not None, masked > 0, sampled)
            shape = shapes.get(key)
            if shape is None:
                shape = self._result_shape(key)
                if shape is None:
                    self._encode_result(execution, sample, at_ns)
                    continue
            values = [execution.seq, _dumps(round((finished_ns - execution.started_ns) / 1e6, 3))]
            if rows is not None:
                values.append(rows)
            if masked:
                values.append(masked)
            if sampled:
                assert sample is not None
                values.append(_dumps(sample.render(self._columns_cache), option=_SORTED))
            log.append_shaped(shape, values, at_ns)

    def _encode_result(self, execution: Execution, sample: RowSample | None, at_ns: int) -> None:
        """Append the result event of ``execution``, encoded whole."""
        assert self.log is not None
        data: dict[str, Any] = {"request": execution.seq, "status": execution.status}
        if execution.tag:
            data["command_tag"] = execution.tag
        if execution.rows is not None:
            data["rows"] = execution.rows
        if execution.finished_ns is not None:
            data["duration_ms"] = round((execution.finished_ns - execution.started_ns) / 1e6, 3)
        if execution.error is not None:
            data["error"] = {"sqlstate": execution.error[0], "message": execution.error[1]}
        if execution.masked_values:
            data["masked_values"] = execution.masked_values
        columns = self._result_columns(execution)
        if columns:
            data["columns"] = columns
        if sample is not None and (sample.rows or execution.row_description is not None):
            data["sample"] = sample.render(self._columns_cache)
        self.log.append("result", data, at_ns)

    def _result_shape(self, key: tuple[Any, ...]) -> EventShape | None:
        """The :class:`EventShape` of the result events ``key`` describes (see
        _encode_done), or None if they cannot have one (they are then encoded whole)."""
        description, status, tag, has_rows, has_masked, sampled = key
        fixed: dict[str, Any] = {"status": status, "command_tag": tag}
        if description:
            known = self._columns_cache.get(description)
            if known is None:
                known = _columns(description, "utf-8")
            if known[0]:
                fixed["columns"] = known[0]
        fields = ("request", "duration_ms")
        fields += ("rows",) * has_rows + ("masked_values",) * has_masked + ("sample",) * sampled
        try:
            shape = EventShape("result", fixed, fields, _INT)
        except ValueError:
            return None
        if len(self._result_shapes) >= 256:
            self._result_shapes.clear()
        self._result_shapes[key] = shape
        return shape

    def _result_columns(self, execution: Execution) -> list[str]:
        """The names of the result's columns (from its RowDescription), if it has rows."""
        description = execution.row_description
        if description is None and execution.source is not None:
            description = execution.source.row_description
        if not description:
            return []
        known = self._columns_cache.get(description)
        if known is None:
            if len(self._columns_cache) >= 256:
                self._columns_cache.clear()
            known = self._columns_cache[description] = _columns(description, "utf-8")
        return known[0]

    # ------------------------------------------------------------ other relays

    def decided(self, type: str, data: dict[str, Any], outcome: Outcome) -> None:
        """A request decided by a relay without :class:`Execution` objects (SSH: a channel
        request, a typed line, a file operation, a port forward): counted under its
        outcome (and under ``review`` too when ``data`` has the ``review`` it went
        through) and written at once, before the caller forwards it.

        Raises OSError when the request is allowed, its event cannot be written and this
        session fails closed: the caller must not forward it. The event is kept for the next
        write, followed by a ``request.refused`` event that names it, and counts as denied.
        """
        if "review" in data:  # it went to review first; ``outcome`` is how that ended
            self.counts[Outcome.REVIEW.value] += 1
        log = self.log
        if log is None:
            self.counts[outcome.value] += 1
            return
        if self._done:
            self._encode_done()
        seq = log.append(type, data)
        try:
            log.flush()
        except OSError as exc:
            self._write_failed(exc)
            if outcome is Outcome.ALLOW and not self.fail_open:
                self.counts[Outcome.DENY.value] += 1
                log.append(
                    "request.refused", {"event": seq, "reason": "its event could not be written"}
                )
                raise OSError(exc.errno, exc.strerror) from None
        self.counts[outcome.value] += 1

    # ------------------------------------------------------------------ terminals

    def terminal(self, stream: str, data: str) -> None:
        """One chunk of a terminal stream as an asciicast v2 frame.

        ``stream`` is ``"o"`` (output the client saw) or ``"i"`` (input it typed); the
        event's ``t`` is seconds since the session started, as asciicast wants it.
        """
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        self.log.append(
            "term", {"t": round(time.monotonic() - self._t0, 6), "s": stream, "d": data}
        )
        self.flush_soon()

    def resize(self, cols: int, rows: int) -> None:
        """A terminal window change (asciicast ``"r"`` frame, ``COLSxROWS``)."""
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        self.log.append(
            "term", {"t": round(time.monotonic() - self._t0, 6), "s": "r", "d": f"{cols}x{rows}"}
        )
        self.flush_soon()

    # --------------------------------------------------------------------- flush

    def flush(self) -> None:
        """Hand pending events to the kernel (before a request is forwarded).

        Raises OSError when the log cannot be written, this session fails closed and an
        allowed request is among the pending events (refusals and results may wait).
        """
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        if not self.log.pending:
            return
        failed = self._write_pending()
        if failed is not None and not self.fail_open and self._allowed_pending:
            raise failed  # an allowed request whose event is not on disk: it must not go on

    @property
    def results_waiting(self) -> bool:
        """Results finished and not yet in the log (see :meth:`record_results`)."""
        return bool(self._done)

    def record_results(self) -> None:
        """Append the finished results and hand them to the kernel: called before the
        answer that ends them (CommandComplete, ErrorResponse…) is released to the
        client, so a recording never misses a result the client saw.

        If the log cannot be written, the events stay pending (written with the next
        write that succeeds) and a session that fails closed refuses its next requests,
        as for any failed write; the statement has run, so its answer goes on.
        """
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        if not self.log.pending or self.log.failed is not None:
            return  # (a failed log is retried by the next request or flush_soon's timer)
        self._write_pending()

    def _write_pending(self) -> OSError | None:
        """Hand the pending events to the kernel (synced when an allowed request waits and
        the connection asks for it); the error when the write failed."""
        assert self.log is not None
        try:
            if self._sync_requests and self._allowed_pending:
                self.log.sync()
            else:
                self.log.flush()
        except OSError as exc:
            self._write_failed(exc)
            return exc
        self._allowed_pending = False
        return None

    def _write_failed(self, exc: OSError) -> None:
        # The log keeps the error (log.failed), but not its traceback: that would keep the
        # frames of whoever wrote alive, and with them, say, views of a relay's buffers.
        exc.with_traceback(None)
        self.write_failures += 1
        if self.fail_open:
            log.error(
                "RECORDING FAILURE (fail-open): session %s is not being recorded, traffic "
                "continues unrecorded: %s",
                self.session_id,
                exc,
            )
        else:
            log.error(
                "session %s: cannot write its recording, refusing its requests: %s",
                self.session_id,
                exc,
            )

    def flush_soon(self) -> None:
        """Write pending events, and encode finished results, within ``FLUSH_DELAY``
        (or earlier, when the next request is flushed)."""
        if self.log is None:
            return
        if self._timer is None and (self._done or self.log.pending):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_DELAY, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        try:
            self.log.flush()
        except OSError as exc:
            self._write_failed(exc)

    # --------------------------------------------------------------------- close

    def event(self, type: str, data: dict[str, Any]) -> None:
        if type == "review":  # a request sent to review (its outcome is counted when it runs)
            self.counts[Outcome.REVIEW.value] += 1
        if self.log is None:
            return
        if self._done:
            self._encode_done()
        self.log.append(type, data)
        self.flush()

    async def close(
        self, reason: str, bytes_in: int, bytes_out: int, *, masked: dict[str, int] | None = None
    ) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts: dict[str, Any] = dict(self.counts)
        if masked:
            counts["masked"] = masked
        seal: dict[str, Any] | None = None
        state = "failed" if self.unrecorded else "off"
        event_log = self.log
        if event_log is not None:
            state = "ok"
            if self._done:
                self._encode_done()
            event_log.append(
                "session.end",
                {
                    "reason": reason,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "counts": dict(self.counts),
                    **({"masked": masked} if masked else {}),
                },
            )
            key = self.recorder.signing_key
            if key is not None:
                seal = make_seal(key, self.session_id, event_log.seq, event_log.head)
                event_log.append(SEAL_TYPE, dict(seal))
            try:
                await asyncio.to_thread(event_log.close, CLOSE_RETRY_SECONDS)
            except OSError as exc:
                self._write_failed(exc)
                state, seal = "failed", None
            if self.write_failures or event_log.lost:
                state = "failed"

        def update() -> None:
            with self.recorder.store.session() as session:
                row = session.scalar(select(SessionRow).where(SessionRow.id == self.session_id))
                if row is not None:
                    row.ended_at = utcnow()
                    row.end_reason = reason[:256]
                    row.bytes_in = bytes_in
                    row.bytes_out = bytes_out
                    row.counts = counts
                    row.recording_state = state
                    if event_log is not None:
                        row.event_count = event_log.seq
                    if seal is not None:
                        row.seal_digest = seal["digest"]
                        row.seal_signature = seal["signature"]
                        row.seal_key_id = seal["kid"]

        await asyncio.to_thread(update)
