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
import marshal
import os
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

from jitgate.policy.types import Decision, Outcome
from jitgate.recording.encode import (
    CLOSE,
    EVENT,
    MARSHAL_VERSION,
    OPEN,
    REQUEST,
    RESULT,
    Result,
    SessionEncoder,
    dump_record,
)
from jitgate.recording.handoff import Handoff, resume_log
from jitgate.recording.log import EventLog
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

#: How long closing a session waits for the writer process to close its log.
WRITER_CLOSE_SECONDS = 60.0

_SORTED = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps
_dump_record = marshal.dumps  # (encode.dump_record, without the call: MARSHAL_VERSION)
_time_ns = time.time_ns
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
        self._handoff: Handoff | None = None
        self._writer_retry_at = 0.0

    def _writer(self) -> Handoff | None:
        """The writer process, started when first needed (and again after it died);
        None if it cannot be started (sessions are then recorded inline)."""
        handoff = self._handoff
        if handoff is not None and handoff.alive:
            return handoff
        if time.monotonic() < self._writer_retry_at:
            return None
        try:
            handoff = self._handoff = Handoff.start(self.root)
        except OSError as exc:
            self._handoff = None
            self._writer_retry_at = time.monotonic() + 30.0
            log.error("cannot start the recording writer process, recording inline: %s", exc)
            return None
        return handoff

    def stop(self) -> None:
        """Stop the writer process (after the sessions are closed): it writes what is
        left and exits."""
        if self._handoff is not None:
            self._handoff.stop()
            self._handoff = None

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
        handoff: Handoff | None = None
        if (
            path is not None
            and self.settings.writer == "process"
            and resolved.fsync == "close"
            and meta.protocol == "postgres"
        ):
            handoff = self._writer()
        if path is not None:
            try:
                if handoff is not None:  # the writer opens it: here, only make sure it can be
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
                else:
                    event_log = EventLog(path, session_id)
            except OSError as exc:
                handoff = None
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
            if handoff is not None and path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
                handoff = None
            self._start_failed(meta, session_id, resolved.fail_open, exc)
            failure = exc
        recorder = SessionRecorder(
            self,
            session_id,
            event_log,
            fail_open=resolved.fail_open,
            fsync=resolved.fsync,
            sample=(resolved.sample_rows, resolved.sample_bytes),
            handoff=handoff,
            path=path,
        )
        recorder.unrecorded = failure is not None
        if event_log is not None or handoff is not None:
            start = {"session": session_id, **dataclasses.asdict(meta)}
            start["grant_ids"] = sorted(meta.grant_ids)
            if handoff is not None and path is not None:
                handoff.subscribe(session_id, recorder, path)
                recorder.opened(str(path), _dumps(start, default=str))
            elif event_log is not None:
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


def _result(execution: Execution, rows: list[bytes] | None, truncated: bool = False) -> Result:
    """The RESULT record (:data:`jitgate.recording.encode.Result`) of a finished execution;
    ``rows`` is its sample (None if it is not sampled)."""
    own = description = execution.row_description
    if description is None and execution.source is not None:
        description = execution.source.row_description
    return (
        execution.seq,
        execution.status,
        execution.tag,
        execution.rows,
        execution.started_ns,
        execution.finished_ns,
        execution.error,
        execution.masked_values,
        description,
        execution.result_formats,
        rows,
        truncated,
        rows is not None and (bool(rows) or own is not None),
    )


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


class SessionRecorder:
    """One session's recording, as the relays report it (their ``Observer``).

    Events are encoded here (*inline*: ``log`` is the session's :class:`EventLog`) or,
    when ``handoff`` is given, described as records and handed to the writer process
    (:mod:`jitgate.recording.handoff`), which encodes the same events; if the writer
    dies, the session goes on inline with the log the gateway took over.
    """

    def __init__(
        self,
        recorder: Recorder,
        session_id: str,
        log: EventLog | None,
        *,
        fail_open: bool = False,
        fsync: str = "close",
        sample: tuple[int, int] | None = None,
        handoff: Handoff | None = None,
        path: Path | None = None,
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
        # Results to encode (inline), with the wall-clock time each finished.
        self._done: list[tuple[Result, int]] = []
        # Statement classification and decision → the request event's fixed members.
        self._request_cache: dict[tuple[Any, ...], tuple[bytes, Decision]] = {}
        self._encoder = SessionEncoder(log) if log is not None else None
        # recording.fsync "request": an allowed request's event reaches the disk itself,
        # not only the kernel, before the request goes on (survives an OS crash too).
        self._sync_requests = fsync == "request"
        self._handoff = handoff
        # Copies a marshalled record into the spool ring (None: recording inline).
        self._put = handoff.put_bytes if handoff is not None else None
        self._path = path
        self._seq = 0  # events handed to the writer (their numbers in the log)
        self._writer_error: str | None = None  # the writer cannot write this log

    @property
    def enabled(self) -> bool:
        return self.log is not None or self._handoff is not None

    @property
    def refusing(self) -> bool:
        """The log cannot be written and this session fails closed: refuse new requests."""
        if self.fail_open:
            return False
        if self._handoff is not None:
            return self._writer_error is not None
        return self.log is not None and self.log.failed is not None

    # ------------------------------------------------------------ the writer

    def _hand(self, kind: int, *payload: Any) -> bool:
        """Hand one record to the writer; False when recording inline (no writer, or it
        just died and this session was taken over)."""
        put = self._put
        if put is None:
            return False
        seq = self._seq + 1
        if not put(dump_record((kind, self.session_id, seq, _time_ns(), *payload))):
            return False
        if kind != CLOSE:  # (CLOSE makes no event)
            self._seq = seq
        return True

    def opened(self, path: str, start: bytes) -> None:
        """Hand the session's OPEN record (its ``session.start`` event) to the writer."""
        if not self._hand(OPEN, path, start):  # the writer died just now: inline
            if self.log is None:
                self.log = resume_log(Path(path), self.session_id)
                self._encoder = SessionEncoder(self.log)
            self.log.append("session.start", orjson.loads(start))

    def writer_failed(self, error: str | None) -> None:
        """The writer reports that this session's log cannot be written (or, with None,
        that it can again)."""
        if error is not None and self._writer_error is None:
            self._write_failed(OSError(error))
        self._writer_error = error

    def writer_gone(self, encoder: SessionEncoder) -> None:
        """The writer died; the gateway took over its ring: record inline from now on."""
        self._handoff = self._put = None
        self._writer_error = None
        self.log = encoder.log
        self._encoder = encoder

    # ------------------------------------------------------------------ Observer

    def _fields_of(self, execution: Execution) -> bytes:
        """The request event's members fixed by the statement's classification and its
        decision, as canonical JSON. They are the same every time a statement of the same
        classification is decided the same way (the same decision object: the gate caches
        them), whatever its constants: built once. The key holds exactly what
        :func:`_request_fields` reads."""
        decision = execution.decision
        stmt = execution.statement
        key: tuple[Any, ...] = (
            (id(decision), execution.via)
            if stmt is None
            else (
                id(decision),
                execution.via,
                id(stmt.kind),  # (an Enum member hashes in Python; its id is as unique)
                stmt.tag,
                stmt.tables_read,
                stmt.tables_written,
                stmt.has_where,
                stmt.dangerous,
            )
        )
        cached = self._request_cache.get(key)
        if cached is None or cached[1] is not decision:
            cached = (_dumps(_request_fields(execution), option=_SORTED), decision)
            if len(self._request_cache) >= 512:
                self._request_cache.clear()
            self._request_cache[key] = cached
        return cached[0]

    def started(self, execution: Execution) -> None:
        decision = execution.decision
        # (``_value_``: the member's value without going through Enum's Python property)
        self.counts[decision.outcome._value_] += 1
        if self._handoff is None and self.log is None:
            return
        fields = self._fields_of(execution)
        put = self._put
        seq = self._seq + 1
        if put is not None and put(
            _dump_record(
                (REQUEST, self.session_id, seq, _time_ns(), fields, execution.seq, execution.text),
                MARSHAL_VERSION,
            )
        ):
            self._seq = seq
        else:
            assert self._encoder is not None
            if self._done:
                self._encode_done()
            self._encoder.request(fields, execution.seq, execution.text)
            if decision.outcome is _ALLOW:
                self._allowed_pending = True
        if decision.outcome is _ALLOW and self._sample_rows:
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
        if self._handoff is None and self.log is None:
            return
        if sample is None:
            result = _result(execution, None)
        else:
            result = _result(execution, sample.rows, sample.truncated)
        put = self._put
        seq = self._seq + 1
        if put is not None and put(
            _dump_record((RESULT, self.session_id, seq, _time_ns(), result), MARSHAL_VERSION)
        ):
            self._seq = seq
        else:
            # Encoded later, off the answer's path: before the answer is released
            # (record_results), before the next event, or by the timer of flush_soon.
            self._done.append((result, time.time_ns()))

    def _encode_done(self) -> None:
        """Append the result events of finished executions, in the order they finished."""
        done, self._done = self._done, []
        encoder = self._encoder
        assert encoder is not None
        for result, at_ns in done:
            encoder.result(result, at_ns)

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
        if self._hand(EVENT, type, _dumps(data, default=str)):
            self.counts[outcome.value] += 1
            return
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
        self._term(stream, data)

    def _term(self, stream: str, data: str) -> None:
        frame = {"t": round(time.monotonic() - self._t0, 6), "s": stream, "d": data}
        if self._hand(EVENT, "term", _dumps(frame)) or self.log is None:
            return
        if self._done:
            self._encode_done()
        self.log.append("term", frame)
        self.flush_soon()

    def resize(self, cols: int, rows: int) -> None:
        """A terminal window change (asciicast ``"r"`` frame, ``COLSxROWS``)."""
        self._term("r", f"{cols}x{rows}")

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
        if self._hand(EVENT, type, _dumps(data, default=str)) or self.log is None:
            return
        if self._done:
            self._encode_done()
        self.log.append(type, data)
        self.flush()

    async def _close_in_writer(self) -> bool:
        """Have the writer apply this session's records and close its log, then take the
        log back (to append the end and the seal here); False if the log is lost."""
        handoff = self._handoff
        assert handoff is not None and self._path is not None
        answer = handoff.close_session(self.session_id)
        if not self._hand(CLOSE):
            handoff.forget(self.session_id)
            return True  # the writer died: this session was taken over, self.log is set
        handoff.wake()
        try:
            reply = await asyncio.wait_for(asyncio.shield(answer), WRITER_CLOSE_SECONDS)
        except TimeoutError:
            reply = {"error": "the recording writer did not close the session's log in time"}
        finally:
            handoff.forget(self.session_id)
        self._handoff = self._put = None
        if "error" in reply:
            self._write_failed(OSError(reply["error"]))
            return False
        if reply["seq"] != self._seq or reply.get("lost"):
            self._write_failed(OSError(f"the writer wrote {reply['seq']} of {self._seq} events"))
        try:
            self.log = EventLog.resume(self._path, self.session_id, reply["seq"], reply["head"])
        except OSError as exc:
            self._write_failed(exc)
            return False
        return True

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
        if self._handoff is not None and not await self._close_in_writer():
            state = "failed"
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
