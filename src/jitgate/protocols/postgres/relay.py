"""The relay phase of a PostgreSQL session, sans-IO: bytes in, bytes out.

Theory of operation
-------------------
After both handshakes, the gateway sits between a client and one upstream backend and
sees two byte streams. :class:`Relay` frames both (``Byte1 type, Int32 length``) and
forwards them, looking closely at only the messages that matter:

* client ``Query`` and ``Parse`` carry SQL. Every statement is classified (cached by text
  and fingerprint) and passed to the *gate* (policy). An allowed statement is forwarded
  byte for byte. A denied one is **replaced** by a statement that makes the upstream fail
  at exactly that point: ``SELECT 'jitgate-denied-<nonce>'::pg_catalog.int4``. The upstream
  raises ``invalid input syntax`` during parse analysis — before anything of it runs —
  then does what PostgreSQL always does after an error: the rest of a multi-statement
  Query is skipped, an explicit transaction becomes failed, extended-protocol messages are
  discarded until Sync. When that ErrorResponse comes back carrying our nonce, it is
  rewritten to SQLSTATE 42501 with the policy's reason. So ordering, pipelining and
  transaction semantics are PostgreSQL's own, and the session stays usable.
* ``Bind``/``Execute``/``Close`` keep the map from portals to prepared statements, so each
  execution is attributed to its SQL text in the audit trail. A named statement counts as
  prepared once the server confirms it (``ParseComplete``): a Parse that fails — a duplicate
  name, a refused statement — leaves the previous meaning of the name alone, as PostgreSQL
  does. Until then a Bind in the same pipeline refers to the pending Parse.
* SQL text and names are in the session's ``client_encoding`` (followed through
  ParameterStatus); text that is not valid in it is refused like a statement the parser
  cannot understand (SQLSTATE 22021), never guessed at.
* backend ``CommandComplete``/``EmptyQueryResponse``/``PortalSuspended``/``ErrorResponse``
  and ``ReadyForQuery`` close executions in order: a FIFO of *expectations* mirrors the
  requests in flight (PostgreSQL answers strictly in order), and an error discards the
  expectations up to the next Sync, as the server does.
* A single-statement ``Parse`` that policy sends to *review* is forwarded (preparing runs
  nothing) and the review happens at ``Execute``, when the ``Bind`` parameters are known:
  an approval covers that exact statement with those parameter values, once.
* ``FunctionCall`` (fast-path, by function OID) is allowed only for the large-object
  functions libpq uses; any other OID is unknown and is denied the same way.
* In copy-in mode the server ignores ``Sync`` and ``Flush``. libpq sends a Sync right after
  the Execute of an extended-protocol ``COPY … FROM STDIN`` (before it knows it is a COPY)
  and another one after CopyDone; only the second is answered. So when CopyInResponse
  arrives, the Syncs the client sent between that request and its CopyDone/CopyFail are
  dropped from the FIFO. Every expectation carries the number of CopyDone/CopyFail
  messages the client had sent before it, which tells exactly which Syncs those are.

Both directions are bounded: a message longer than ``max_message`` from the client, or one
from the upstream that would have to be buffered, is a protocol violation (the adapter
answers with a FATAL ErrorResponse and closes both legs). Large backend
``DataRow``/``CopyData`` messages that need no masking are streamed through without
buffering.
"""

from __future__ import annotations

import contextlib
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, Protocol

from jitgate.masking import ColumnInfo, Masker
from jitgate.policy.types import Decision, Outcome
from jitgate.protocols.postgres import masking as pgmask
from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.sql import lineage as sql_lineage
from jitgate.sql.lexing import has_escapable_backslash
from jitgate.sql.postgres import executed_as, prepared_query
from jitgate.sql.types import Classification, CommandKind, Statement

_HEADER = struct.Struct("!BI")
#: Bytes being framed: the data just received, or a leg's buffer holding a partial message.
Buffer = bytes | bytearray
_UINT32 = struct.Struct("!I")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")

#: Fast-path functions libpq's large-object API calls (pg_proc OIDs, stable across versions).
LARGE_OBJECT_FUNCTIONS = {
    715: "lo_create", 952: "lo_open", 953: "lo_close", 954: "loread", 955: "lowrite",
    956: "lo_lseek", 957: "lo_creat", 958: "lo_tell", 964: "lo_unlink", 1004: "lo_truncate",
    3170: "lo_lseek64", 3171: "lo_tell64", 3172: "lo_truncate64",
}  # fmt: skip

DENIED_SQLSTATE = "42501"
_NO_MASKING = object()  # an execution's row_plan when its results are not masked
_LOOKUP_ROW: tuple[None, None] = (None, None)  # _row_masking's answer for a look-up's row


class Expect(IntEnum):
    """What the upstream will answer to a request in flight."""

    PARSE = 1
    BIND = 2
    DESCRIBE = 3
    EXECUTE = 4
    CLOSE = 5
    SYNC = 6
    QUERY = 7  # a simple Query or a FunctionCall: answered up to ReadyForQuery
    LOOKUP = 8  # the gateway's own column look-up for masking (see :mod:`.masking`)


@dataclass(slots=True)
class Execution:
    """One statement execution (or refusal), as the audit trail records it."""

    seq: int
    text: str
    statement: Statement | None
    decision: Decision
    via: str  # "query", "extended", "function"
    started_ns: int = field(default_factory=time.monotonic_ns)
    nonce: str | None = None  # for a refused statement: the marker in its stand-in SQL
    finished_ns: int | None = None
    status: str = "running"  # running, ok, error, denied, skipped
    tag: str | None = None
    rows: int | None = None
    error: tuple[str, str] | None = None  # (sqlstate, message)
    # Masking: where this execution's result shape comes from, and its plan once known.
    source: _Prepared | None = None
    result_formats: tuple[int, ...] = ()
    row_description: bytes | None = None
    row_plan: object | None = None
    # Once the DataRow plan is known: (masker, plan) if rows are masked, False if not.
    row_masking: tuple[Masker, pgmask.PgPlan] | Literal[False] | None = None
    masked_values: int = 0
    # The row masker made for ``row_masking``'s plan, and the encoding it was made for.
    row_masker: tuple[pgmask.PgPlan, str, pgmask.RowMasker] | None = None
    catalog_generation: int = -1  # the column catalog's generation when this was sent
    copy_plan: pgmask.CopyPlan | None = None
    # Recording: called with each DataRow body exactly as the client is sent it (after
    # masking) while the recorder wants a sample of this result; None otherwise.
    row_sink: Callable[[bytes], None] | None = None
    # A SQL-level PREPARE / DEALLOCATE / DISCARD ALL: what it does to the session's
    # prepared names once it succeeds (see Relay._track_names).
    names_op: _NameOp | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.finished_ns is None:
            return None
        return (self.finished_ns - self.started_ns) / 1e6


class Observer(Protocol):
    """Receives executions for the audit trail (the recorder implements it)."""

    def started(self, execution: Execution) -> None: ...

    def finished(self, execution: Execution) -> None: ...


@dataclass(slots=True)
class _MaskingState:
    """The relay's masking state: Bind result formats by portal, the column catalog."""

    portal_formats: dict[bytes, tuple[int, ...]] = field(default_factory=dict)
    catalog: pgmask.ColumnCatalog | None = None  # created when a column rule needs it


@dataclass(slots=True)
class _Prepared:
    name: bytes
    text: str
    statement: Statement | None
    decision: Decision
    row_description: bytes | None = None  # from a Describe, for masking its results
    param_types: tuple[int, ...] = ()  # kept for a statement in review (HeldStatement)
    # A review approved at Parse covers the first Execute; later ones are decided again.
    approved_runs: int = 0


class Masking(Protocol):
    """What the relay needs to mask results (see :mod:`.masking` and the session)."""

    def masker(self, profile: str | None) -> Masker | None: ...

    def profile_for(self, decision: Decision) -> str | None: ...


#: The parameters of one Bind: their format codes (as sent) and their values (None for
#: NULL). An approval is for a statement *and* these values.
BindParameters = tuple[tuple[int, ...], tuple[bytes | None, ...]]


@dataclass(frozen=True, slots=True)
class HeldStatement:
    """A statement policy sent to review: the relay stops before it until it is released.

    ``params`` are the Bind parameters of a held Execute; empty for a simple Query (its
    values are in its text); None when they are unknown (a statement prepared as allowed
    that policy sends to review at a later Execute).
    """

    text: str
    statement: Statement
    decision: Decision
    via: str
    params: BindParameters | None = ((), ())
    param_types: tuple[int, ...] = ()  # the type OIDs the Parse gave, if any

    def describe(self, encoding: str = "utf-8", limit: int = 200) -> str:
        """The statement as an approver should see it: its text and parameter values."""
        if self.params is None:
            return f"{self.text}\n-- parameters: not known to the gateway"
        formats, values = self.params
        if not values:
            return self.text
        shown = []
        for i, value in enumerate(values):
            code = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
            oid = self.param_types[i] if i < len(self.param_types) else 0
            if value is None:
                literal = "NULL"
            elif code == 1:
                literal = _binary_literal(oid, value)
            else:
                text = value.decode(encoding, "replace")
                cut = text[:limit] + ("…" if len(text) > limit else "")
                literal = "'" + cut.replace("'", "''") + "'"
            shown.append(f"${i + 1} = {literal}")
        return f"{self.text}\n-- parameters: {', '.join(shown)}"


#: Binary parameter formats an approver is shown as values (by type OID).
_BINARY_NUMBERS = {21: "!h", 23: "!i", 20: "!q", 26: "!I", 700: "!f", 701: "!d"}
_BINARY_TEXT = {25, 1043, 19, 1042}


def _binary_literal(oid: int, value: bytes) -> str:
    number = _BINARY_NUMBERS.get(oid)
    if number is not None and len(value) == struct.calcsize(number):
        return str(struct.unpack(number, value)[0])
    if oid == 16 and len(value) == 1:
        return "true" if value != b"\x00" else "false"
    if oid in _BINARY_TEXT:
        return "'" + value.decode("utf-8", "replace").replace("'", "''") + "'"
    return f"<binary, {len(value)} bytes: {value[:32].hex()}>"


class _Hold(Exception):
    def __init__(self, held: HeldStatement) -> None:
        super().__init__(held.text)
        self.held = held


@dataclass(slots=True)
class _QueryGroup:
    executions: list[Execution]
    index: int = 0


Gate = Callable[[Statement, str], Decision]
#: A SQL-level prepared statement: the PREPARE's text and the statement it prepares.
_SqlPrepared = tuple[str, Statement]
#: ("prepare", name, prepared) or ("deallocate", name or None for all, None).
_NameOp = tuple[str, str | None, _SqlPrepared | None]
_NAME_KINDS = frozenset({CommandKind.PREPARE, CommandKind.DEALLOCATE, CommandKind.SESSION})
_RUN_KINDS = frozenset({CommandKind.PREPARE, CommandKind.EXECUTE})
_PLAIN_EXCLUDED = _NAME_KINDS | _RUN_KINDS  # statements Relay._on_plain_query leaves alone
UNKNOWN_PREPARED = "builtin:unknown-prepared-statement"


def _runs(stmt: Statement) -> bool:
    """Whether a statement is decided by :meth:`Relay._decide_run`: a PREPARE, or one that
    runs a prepared statement by name (EXECUTE, also under EXPLAIN ANALYZE, and
    CREATE TABLE ... AS EXECUTE, whose kind is the outer statement's)."""
    return stmt.kind in _RUN_KINDS or (
        stmt.prepared_name is not None and stmt.kind is not CommandKind.DEALLOCATE
    )


Classifier = Callable[[str], Classification]

#: What the server will answer, with what it concerns, and how many CopyDone/CopyFail
#: messages the client had sent before it (see "copy-in mode" above).
_Expectation = tuple[Expect, object, int]

_UNDECODABLE = "invalid byte sequence for encoding"
_SCS_OFF = (
    "jitgate: a backslash in a '...' string is refused while standard_conforming_strings "
    "is off or may be changing (requests in flight): the gateway could not read it as the "
    "server would; use E'...' strings or parameters, or SET standard_conforming_strings = on"
)


class Relay:
    # Slots: the relay's attributes are read for every message, and a slotted attribute
    # load stays fast however many there are (see also _MaskingState).
    __slots__ = (
        "_classify",
        "_client_buf",
        "_copy_ends",
        "_denials",
        "_expect",
        "_gate",
        "_marker",
        "_marker_bytes",
        "_masks",
        "_name_ops",
        "_observer",
        "_pending",
        "_portal_params",
        "_portals",
        "_prepared",
        "_released",
        "_scs_off",
        "_seq",
        "_server_buf",
        "_server_skip",
        "_sql_prepared",
        "_syncs_ignored",
        "bytes_from_client",
        "bytes_from_server",
        "encoding",
        "held",
        "in_copy_in",
        "masking",
        "max_message",
        "terminated",
        "transaction_status",
        "upstream_fatal",
    )

    def __init__(
        self,
        *,
        classify: Classifier,
        gate: Gate,
        observer: Observer,
        max_message: int = 64 << 20,
        client_encoding: str = "UTF8",
        standard_conforming_strings: str = "on",
        masking: Masking | None = None,
    ) -> None:
        self._classify = classify
        self._gate = gate
        self._observer = observer
        self.max_message = max_message
        self._client_buf = bytearray()
        self._server_buf = bytearray()
        self._server_skip = 0  # bytes of a streamed backend message still to pass through
        self._expect: deque[_Expectation] = deque()
        self._prepared: dict[bytes, _Prepared] = {}  # confirmed by ParseComplete
        self._pending: dict[bytes, _Prepared] = {}  # Parse sent, not yet answered
        self._portals: dict[bytes, _Prepared] = {}
        self._denials: dict[str, tuple[Execution, Decision]] = {}
        self._marker = f"jitgate-denied-{secrets.token_hex(6)}-"
        self._marker_bytes = self._marker.encode()
        self._seq = 0
        self._copy_ends = 0  # CopyDone/CopyFail messages the client has sent
        self._syncs_ignored = False  # the server is in copy-in mode for an extended COPY
        self.encoding = m.python_codec(client_encoding)
        # Off, the server reads a backslash in '...' as an escape; the parser does not.
        self._scs_off = standard_conforming_strings == "off"
        self.transaction_status = m.IDLE
        self.terminated = False
        self.upstream_fatal = False  # the upstream sent a FATAL (or PANIC) ErrorResponse
        self.bytes_from_client = 0
        self.bytes_from_server = 0
        self.in_copy_in = False
        self.held: HeldStatement | None = None
        self._released: dict[tuple[int, str], Decision] = {}
        self.masking = masking
        self._masks = _MaskingState()
        # Bind parameters of portals whose statement is in review (see HeldStatement).
        self._portal_params: dict[bytes, BindParameters] = {}
        # SQL-level prepared statements (PREPARE name AS …), by name, once the server
        # confirmed them; and the PREPARE/DEALLOCATE executions still in flight.
        self._sql_prepared: dict[str, _SqlPrepared] = {}
        self._name_ops: list[Execution] = []

    # ------------------------------------------------------------ held statements

    def release(self, decision: Decision) -> bytes:
        """Decide the held statement (allow or deny) and go on; returns bytes for upstream.

        The held message is processed again from the buffer with ``decision`` in place of
        the review; other statements of the same message are decided as before.
        """
        held = self.held
        if held is None:
            raise RuntimeError("nothing is held")
        if decision.outcome is Outcome.REVIEW:
            raise ValueError("a held statement is released with allow or deny")
        self.held = None
        self._released[(held.statement.start, held.text)] = decision
        return self.client_data(b"")

    def _decide(
        self,
        stmt: Statement,
        text: str,
        via: str,
        params: BindParameters | None = ((), ()),
        param_types: tuple[int, ...] = (),
    ) -> Decision:
        decision = self._gate(stmt, text)
        if decision.outcome is Outcome.REVIEW:
            released = self._released.get((stmt.start, text))
            if released is None:
                raise _Hold(HeldStatement(text, stmt, decision, via, params, param_types))
            return released
        return decision

    def _decide_execute(
        self, prepared: _Prepared, portal: bytes
    ) -> tuple[Statement | None, Decision]:
        """Decide an Execute of a prepared statement again, as policy stands now.

        Parse decided once; a policy or grant change since then applies to the next
        Execute (the gate answers a repeated statement from its cache). A statement in
        review is held here, with the parameters its portal was bound with; a one-time
        approval given at Parse (a multi-statement Parse, which PostgreSQL refuses
        anyway) is spent by the first Execute.
        """
        stmt = prepared.statement
        if stmt is None:
            return stmt, prepared.decision
        if _runs(stmt):
            params = self._portal_params.get(portal)
            return self._decide_run(stmt, prepared.text, "extended", params, prepared.param_types)
        decision = self._gate(stmt, prepared.text)
        if decision.outcome is not Outcome.REVIEW:
            return stmt, decision
        if prepared.approved_runs > 0:
            prepared.approved_runs -= 1
            return stmt, prepared.decision
        params = self._portal_params.get(portal)
        return stmt, self._decide(stmt, prepared.text, "extended", params, prepared.param_types)

    # ------------------------------------------------- SQL-level PREPARE / EXECUTE

    def _decide_run(
        self,
        stmt: Statement,
        text: str,
        via: str,
        params: BindParameters | None = ((), ()),
        param_types: tuple[int, ...] = (),
        *,
        hold: bool = True,
        earlier: Sequence[_NameOp] = (),
    ) -> tuple[Statement, Decision]:
        """Decide a PREPARE, or a statement that runs a prepared one, as what it runs.

        PREPARE runs nothing: one policy sends to review is prepared, and reviewed when it
        is executed (a denied one is refused at once). ``EXECUTE name`` is decided as the
        statement the session prepared under that name, ``CREATE TABLE t AS EXECUTE name``
        as that statement writing ``t`` (:func:`executed_as`); returned is what runs (in
        the statement's place), which the execution is recorded with. While a PREPARE or
        DEALLOCATE of the name is in flight, the name may end up meaning any of them:
        each is decided, and the most restrictive decision stands (``earlier``: those
        of the same message, not sent yet). A name the gateway has not seen prepared is
        refused (fail closed).
        """
        if stmt.kind is CommandKind.PREPARE:
            decision = self._gate(stmt, text)
            if decision.outcome is Outcome.REVIEW:
                reason = f"{decision.reason}; decided when it is executed"
                decision = Decision(Outcome.ALLOW, reason, None, decision.policies)
            return stmt, decision
        name = stmt.prepared_name or ""
        candidates: list[_SqlPrepared | None] = [self._sql_prepared.get(name)]
        # SQL and the extended protocol share one namespace of prepared statements.
        by_protocol = name.encode(self.encoding, "replace")
        for parsed in (self._prepared.get(by_protocol), self._pending.get(by_protocol)):
            if parsed is None:
                continue
            if parsed.statement is None or _runs(parsed.statement):
                return stmt, Decision.deny(
                    f'prepared statement "{name}" cannot be executed by name through the gateway',
                    UNKNOWN_PREPARED,
                )
            candidates.append((parsed.text, parsed.statement))
        in_flight = [e.names_op for e in self._name_ops if e.names_op is not None]
        for op, op_name, prepared in (*in_flight, *earlier):
            if op == "prepare" and op_name == name:
                candidates.append(prepared)
            elif op == "deallocate" and op_name in (None, name):
                candidates.append(None)
        known = [c for c in candidates if c is not None]
        if not known:
            return stmt, Decision.deny(
                f'prepared statement "{name}" was not prepared through the gateway in this '
                "session, so what EXECUTE would run is unknown",
                UNKNOWN_PREPARED,
            )
        runs = []
        for prepare_text, inner in dict.fromkeys(known):
            run = executed_as(stmt, inner)
            run_text = f"{prepare_text};\n{text}"
            runs.append((run, run_text, self._gate(run, run_text)))
        for outcome in (Outcome.DENY, Outcome.REVIEW):
            for run, run_text, decision in runs:
                if decision.outcome is outcome:
                    if outcome is Outcome.REVIEW and hold:
                        decision = self._decide(run, run_text, via, params, param_types)
                    return run, decision
        return runs[0][0], runs[0][2]

    def _name_op(self, stmt: Statement) -> _NameOp | None:
        """What a PREPARE, DEALLOCATE or DISCARD ALL does to the names once it succeeds."""
        if stmt.kind is CommandKind.PREPARE:
            query = prepared_query(stmt.text)
            inner: Statement | None = None
            if query is not None:
                found = self._classify(query).statements
                inner = found[0] if len(found) == 1 else None
            if inner is None:
                inner = Statement(
                    CommandKind.UNKNOWN, "", query or stmt.text, 0, 0,
                    error="the prepared statement could not be read",
                )  # fmt: skip
            return ("prepare", stmt.prepared_name, (stmt.text, inner))
        if stmt.kind is CommandKind.DEALLOCATE:
            return ("deallocate", stmt.prepared_name, None)
        if stmt.tag == "DISCARD ALL":
            return ("deallocate", None, None)
        return None

    def _names_done(self, execution: Execution) -> None:
        with contextlib.suppress(ValueError):
            self._name_ops.remove(execution)
        if execution.status != "ok" or execution.names_op is None:
            return
        op, name, prepared = execution.names_op
        if op == "prepare" and name is not None and prepared is not None:
            self._sql_prepared[name] = prepared
        elif name is None:  # DEALLOCATE ALL, DISCARD ALL: protocol-level ones too
            self._sql_prepared.clear()
            self._prepared.clear()
        else:
            self._sql_prepared.pop(name, None)
            self._prepared.pop(name.encode(self.encoding, "replace"), None)

    def _bound_by_name(self, name: bytes) -> _Prepared | None:
        """A Bind naming a statement prepared with SQL PREPARE: its executions are decided
        like ``EXECUTE name`` (None: the name is not known as one)."""
        text = name.decode(self.encoding, "replace")
        if text not in self._sql_prepared and not any(
            e.names_op is not None and e.names_op[1] == text for e in self._name_ops
        ):
            return None
        stmt = Statement(
            CommandKind.EXECUTE, "EXECUTE", f"EXECUTE {text}", 0, 0, prepared_name=text
        )
        _run, decision = self._decide_run(stmt, stmt.text, "extended", hold=False)
        return _Prepared(name, stmt.text, stmt, decision)

    # ------------------------------------------------------------ client → upstream

    def client_data(self, data: bytes) -> bytes:
        """Feed bytes from the client; return the bytes to send upstream."""
        self.bytes_from_client += len(data)
        # Framed in place when nothing is buffered (the usual case: whole messages per
        # read), so a run of messages forwarded unchanged is sent without a copy.
        buf: Buffer = self._client_buf
        if buf:
            buf += data
        else:
            buf = data
        out: list[bytes] = []
        pos = 0
        run_start = 0  # start of the current run of messages forwarded unchanged
        size = len(buf)
        limit = self.max_message
        unpack = _HEADER.unpack_from
        handle = self._client_message
        while size - pos >= 5:
            mtype, length = unpack(buf, pos)
            if length < 4 or length > limit:
                raise ProtocolViolation(
                    f"message of {length} bytes exceeds the limit of {limit}"
                    if length > limit
                    else "invalid message length",
                    "54000" if length > limit else "08P01",
                )
            end = pos + 1 + length
            if end > size:
                break
            if self.held is not None:
                break
            try:
                replacement = handle(mtype, buf, pos + 5, end)
            except _Hold as hold:
                self.held = hold.held  # stop here; the message stays in the buffer
                break
            if self._released:
                self._released.clear()
            if replacement is not None:
                if run_start < pos:
                    out.append(bytes(buf[run_start:pos]))
                out.append(replacement)
                run_start = end
            pos = end
        return self._rest(buf, self._client_buf, out, run_start, pos)

    @staticmethod
    def _rest(buf: Buffer, kept: bytearray, out: list[bytes], run_start: int, pos: int) -> bytes:
        """Finish a pass over ``buf``: the last unchanged run goes out, what is left after
        ``pos`` stays in ``kept`` (the buffer itself, or the data just received)."""
        if run_start < pos:
            out.append(bytes(buf[run_start:pos]))  # all of a bytes object: itself, no copy
        if buf is kept:
            del kept[:pos]
        elif pos < len(buf):
            kept += memoryview(buf)[pos:]
        return b"".join(out) if len(out) != 1 else out[0]

    @property
    def client_mid_message(self) -> bool:
        """The client has part of a backend message (a large row streamed through): no
        message of the gateway's may be written to it until that one is complete."""
        return self._server_skip > 0

    @property
    def buffered(self) -> int:
        """Client bytes waiting (behind a held statement, or an incomplete message)."""
        return len(self._client_buf)

    def _client_message(self, mtype: int, buf: Buffer, start: int, end: int) -> bytes | None:
        """Track one client message; return replacement bytes, or None to forward it."""
        if mtype == m.BIND:
            # (the NUL look-ups of _cstring_end, inline: this is the hot path)
            portal_end = buf.find(0, start, end)
            name_nul = buf.find(0, portal_end + 1, end) if portal_end >= 0 else -1
            if name_nul < 0:
                raise ProtocolViolation("unterminated string in message")
            portal = bytes(buf[start:portal_end])
            name = bytes(buf[portal_end + 1 : name_nul])
            prepared = self._pending.get(name) or self._prepared.get(name)
            if prepared is None and name and (self._sql_prepared or self._name_ops):
                prepared = self._bound_by_name(name)
            if prepared is not None:
                self._portals[portal] = prepared
                if prepared.decision.outcome is Outcome.REVIEW:
                    params_at = portal_end + 2 + len(name)
                    self._portal_params[portal] = _bind_parameters(buf, params_at, end)
                elif self._portal_params:
                    self._portal_params.pop(portal, None)
            else:
                self._portals.pop(portal, None)
            lookup = b""
            masking = self.masking
            if masking is not None:
                self._masks.portal_formats[portal] = _bind_result_formats(buf, name_nul + 1, end)
                if (
                    prepared is not None
                    and prepared.statement is not None
                    and prepared.decision.outcome is not Outcome.DENY
                ):
                    masker = masking.masker(masking.profile_for(prepared.decision))
                    if masker is not None and masker.needs_lineage:
                        lookup = self._lookup_before([prepared.statement], [prepared.decision])
            self._expect.append((Expect.BIND, None, self._copy_ends))
            return lookup + bytes(buf[start - 5 : end]) if lookup else None
        if mtype == m.EXECUTE:
            portal_end = buf.find(0, start, end)
            if portal_end < 0:
                raise ProtocolViolation("unterminated string in message")
            portal = bytes(buf[start:portal_end])
            prepared = self._portals.get(portal)
            execution = None
            if prepared is not None:  # allowed at Parse, or in review (decided here)
                run, decision = self._decide_execute(prepared, portal)
                if self.masking is not None:
                    decision = self._mask_decision(run, decision)
                if not decision.allowed:
                    return self._refuse_execute(prepared, decision, run)
                execution = self._start(prepared.text, run, decision, "extended")
                if run is not None and run.kind in _NAME_KINDS:
                    execution.names_op = self._name_op(run)
                    if execution.names_op is not None:
                        self._name_ops.append(execution)
                if self.masking is not None:
                    execution.source = prepared
                    execution.result_formats = self._masks.portal_formats.get(portal, ())
                    if self._masks.catalog is not None:
                        self._track_catalog(prepared.statement)
            self._expect.append((Expect.EXECUTE, execution, self._copy_ends))
            return None
        if mtype == m.SYNC:
            if not self._syncs_ignored:
                self._expect.append((Expect.SYNC, None, self._copy_ends))
            return None
        if mtype == m.DESCRIBE:
            target = None
            if self.masking is not None and end - start >= 2:
                name = bytes(buf[start + 1 : _cstring_end(buf, start + 1, end)])
                if buf[start] == ord("S"):
                    target = self._pending.get(name) or self._prepared.get(name)
                else:
                    target = self._portals.get(name)
            self._expect.append((Expect.DESCRIBE, target, self._copy_ends))
            return None
        if mtype == m.QUERY:
            return self._on_query(bytes(buf[start:end]))
        if mtype == m.PARSE:
            return self._on_parse(bytes(buf[start:end]))
        if mtype == m.CLOSE:
            if end - start < 2:
                raise ProtocolViolation("truncated Close message")
            name = bytes(buf[start + 1 : _cstring_end(buf, start + 1, end)])
            if buf[start] == ord("S"):
                self._prepared.pop(name, None)
                self._pending.pop(name, None)
                if self._sql_prepared:
                    self._sql_prepared.pop(name.decode(self.encoding, "replace"), None)
            else:
                self._portals.pop(name, None)
                self._portal_params.pop(name, None)
            self._expect.append((Expect.CLOSE, None, self._copy_ends))
            return None
        if mtype in (m.COPY_DONE, m.COPY_FAIL):
            self._copy_ends += 1
            self._syncs_ignored = False
            return None
        if mtype in (m.FLUSH, m.COPY_DATA):
            return None
        if mtype == m.FUNCTION_CALL:
            return self._on_function_call(bytes(buf[start:end]))
        if mtype == m.TERMINATE:
            self.terminated = True
            return None
        raise ProtocolViolation(f"invalid frontend message type {mtype!r}")

    def _start(
        self, text: str, statement: Statement | None, decision: Decision, via: str
    ) -> Execution:
        self._seq += 1
        execution = Execution(self._seq, text, statement, decision, via)
        if self._masks.catalog is not None:
            execution.catalog_generation = self._masks.catalog.generation
        self._observer.started(execution)
        return execution

    def _refuse(
        self, text: str, statement: Statement | None, decision: Decision, via: str
    ) -> tuple[Execution, str]:
        """Record a refused statement and return the SQL that fails in its place."""
        if decision.outcome is Outcome.ALLOW:  # defensive: never called for allowed
            raise AssertionError("refusing an allowed statement")
        execution = self._start(text, statement, decision, via)
        execution.status = "denied"
        execution.nonce = f"{self._marker}{execution.seq}"
        self._denials[execution.nonce] = (execution, decision)
        return execution, f"SELECT '{execution.nonce}'::pg_catalog.int4"

    def _decode_sql(self, raw: bytes) -> tuple[str, Classification]:
        """The SQL text in the client encoding, classified; undecodable text is unknown."""
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            text = raw.decode(self.encoding, "replace")
            bad = " ".join(f"0x{b:02x}" for b in raw[exc.start : min(exc.end, exc.start + 4)])
            problem = f"{_UNDECODABLE} {self.encoding!r}: {bad}"
            unknown = Statement(CommandKind.UNKNOWN, "", text, 0, len(text), error=problem)
            return text, Classification((unknown,), unknown=True, error=problem)
        if "\\" in text and (self._scs_off or self._expect) and has_escapable_backslash(text):
            # With standard_conforming_strings off, 'x\' , ' is one string where the
            # parser (PostgreSQL's, with the setting on) sees two: what follows could hide
            # a statement in what the gateway takes for a string. While requests are in
            # flight, one of them may be turning it off (the server says so only in its
            # answer). Other texts read alike either way.
            unknown = Statement(CommandKind.UNKNOWN, "", text, 0, len(text), error=_SCS_OFF)
            return text, Classification((unknown,), unknown=True, error=_SCS_OFF)
        return text, self._classify(text)

    def _on_query(self, payload: bytes) -> bytes | None:
        text, classification = self._decode_sql(m.parse_query(payload))
        statements = classification.statements
        executions: list[Execution] = []
        replacements: list[tuple[int, int, str]] = []
        if not statements:
            statements = (Statement(CommandKind.EMPTY, "", "", 0, len(text)),)
        first = statements[0]
        # Past _PLAIN_EXCLUDED, a prepared name means CREATE TABLE ... AS EXECUTE name.
        plain = first.kind not in _PLAIN_EXCLUDED and first.prepared_name is None
        if plain and len(statements) == 1:
            return self._on_plain_query(payload, text, classification, first)
        runs: list[Statement] = list(statements)
        decisions: list[Decision] = []
        ops: list[_NameOp | None] = []  # what each statement does to prepared names
        for i, stmt in enumerate(statements):
            if _runs(stmt):
                earlier = [op for op in ops if op is not None]
                runs[i], decision = self._decide_run(stmt, stmt.text, "query", earlier=earlier)
            else:
                decision = self._decide(stmt, stmt.text, "query")
            decisions.append(decision)
            ops.append(
                self._name_op(stmt) if stmt.kind in _NAME_KINDS and decision.allowed else None
            )
        lookup = b""
        if self.masking is not None:
            pairs = zip(runs, decisions, strict=True)
            decisions = [self._mask_decision(stmt, decision) for stmt, decision in pairs]
            lookup = (
                self._lookup_for(runs[0], decisions[0])
                if len(runs) == 1
                else self._lookup_before(runs, decisions)
            )
        for stmt, run, decision, op in zip(statements, runs, decisions, ops, strict=True):
            if decision.allowed:
                execution = self._start(stmt.text, run, decision, "query")
                executions.append(execution)
                if op is not None:
                    execution.names_op = op
                    self._name_ops.append(execution)
                if self._masks.catalog is not None:
                    self._track_catalog(stmt)
            else:
                execution, sql = self._refuse(stmt.text, run, decision, "query")
                executions.append(execution)
                replacements.append((stmt.start, stmt.end, sql))
        self._expect.append((Expect.QUERY, _QueryGroup(executions), self._copy_ends))
        if not replacements:
            return lookup + m.message(m.QUERY, payload) if lookup else None
        if classification.error is not None:
            rewritten = replacements[0][2]  # unparseable: nothing of it may reach upstream
        else:
            rewritten = text
            for start, end, sql in reversed(replacements):
                rewritten = rewritten[:start] + sql + rewritten[end:]
        return lookup + m.query(rewritten, self.encoding)

    def _on_plain_query(
        self, payload: bytes, text: str, classification: Classification, stmt: Statement
    ) -> bytes | None:
        """:meth:`_on_query` for the common case, one statement that touches no prepared
        names (the same steps, without the per-statement lists)."""
        decision = self._decide(stmt, stmt.text, "query")
        lookup = b""
        if self.masking is not None:
            decision = self._mask_decision(stmt, decision)
            lookup = self._lookup_for(stmt, decision)
        if decision.allowed:
            execution = self._start(stmt.text, stmt, decision, "query")
            if self._masks.catalog is not None:
                self._track_catalog(stmt)
            self._expect.append((Expect.QUERY, _QueryGroup([execution]), self._copy_ends))
            return lookup + m.message(m.QUERY, payload) if lookup else None
        execution, sql = self._refuse(stmt.text, stmt, decision, "query")
        self._expect.append((Expect.QUERY, _QueryGroup([execution]), self._copy_ends))
        if classification.error is not None:
            rewritten = sql  # unparseable: nothing of it may reach upstream
        else:
            rewritten = text[: stmt.start] + sql + text[stmt.end :]
        return lookup + m.query(rewritten, self.encoding)

    def _on_parse(self, payload: bytes) -> bytes | None:
        parse = m.parse_parse(payload)
        query, classification = self._decode_sql(parse.query)
        statements = classification.statements
        if len(statements) > 1:
            # PostgreSQL refuses several statements in one Parse; let it say so.
            stmt = run = statements[0]
            decision = self._decide(stmt, query, "extended")
            for other in statements[1:]:
                other_decision = self._decide(other, other.text, "extended")
                if not other_decision.allowed:
                    decision = other_decision
        else:
            # One statement: preparing it runs nothing, so one in review is prepared and
            # held at its Execute, where its parameters are known (see _decide_execute).
            stmt = statements[0] if statements else Statement(CommandKind.EMPTY, "", "", 0, 0)
            if _runs(stmt):  # decided again at each Execute; a refusal records what it runs
                run, decision = self._decide_run(stmt, stmt.text, "extended", hold=False)
            else:
                run, decision = stmt, self._gate(stmt, stmt.text)
        name = parse.statement
        if not name:
            # The server drops the unnamed statement before it parses a new one.
            self._prepared.pop(name, None)
        lookup = b""
        if self.masking is not None:
            decision = self._mask_decision(run, decision)
            lookup = self._lookup_for(stmt, decision)
        if decision.allowed or decision.outcome is Outcome.REVIEW:
            prepared = _Prepared(name, query, stmt, decision)
            if decision.outcome is Outcome.REVIEW:
                prepared.param_types = tuple(parse.param_types)
            if self._released:  # decided by an approval just now: good for one Execute
                prepared.approved_runs = 1
            self._pending[name] = prepared
            self._expect.append((Expect.PARSE, prepared, self._copy_ends))
            return lookup + m.message(m.PARSE, payload) if lookup else None
        self._pending.pop(name, None)
        execution, sql = self._refuse(query, run, decision, "extended")
        self._expect.append((Expect.PARSE, execution, self._copy_ends))
        return m.build_parse(name, sql.encode(self.encoding), parse.param_types)

    def _refuse_execute(
        self, prepared: _Prepared, decision: Decision, run: Statement | None
    ) -> bytes:
        """An Execute that policy now refuses: a Parse that fails takes its place.

        The upstream must see a real error, so that an open transaction is aborted and
        the rest of the pipeline up to Sync is skipped exactly as for any failed
        statement; the stand-in Parse names a statement nobody uses and is never created.
        """
        execution, sql = self._refuse(prepared.text, run, decision, "extended")
        self._expect.append((Expect.PARSE, execution, self._copy_ends))
        name = execution.nonce.encode() if execution.nonce else b"jitgate_refused"
        return m.build_parse(name, sql.encode(self.encoding), ())

    def _on_function_call(self, payload: bytes) -> bytes | None:
        (oid,) = _UINT32.unpack_from(payload, 0) if len(payload) >= 4 else (0,)
        name = LARGE_OBJECT_FUNCTIONS.get(oid)
        text = f"<fast-path call of {name or f'function OID {oid}'}>"
        if name is not None:
            decision = Decision.allow("builtin:large-object-fast-path")
            execution = self._start(text, None, decision, "function")
            self._expect.append((Expect.QUERY, _QueryGroup([execution]), self._copy_ends))
            return None
        decision = Decision.deny(
            f"fast-path call of function OID {oid} is not allowed", "builtin:deny-fast-path"
        )
        execution, sql = self._refuse(text, None, decision, "function")
        self._expect.append((Expect.QUERY, _QueryGroup([execution]), self._copy_ends))
        return m.query(sql, self.encoding)

    # ------------------------------------------------------------ upstream → client

    def server_data(self, data: bytes) -> bytes:
        """Feed bytes from the upstream; return the bytes to send to the client."""
        self.bytes_from_server += len(data)
        if self._server_skip >= len(data) and not self._server_buf:
            self._server_skip -= len(data)
            return data
        buf: Buffer = self._server_buf
        if buf:
            buf += data
        else:
            buf = data  # framed in place, as in client_data
        out: list[bytes] = []
        pos = 0
        run_start = 0
        size = len(buf)
        if self._server_skip:
            pos = self._server_skip
            self._server_skip = 0
        limit = self.max_message
        unpack = _HEADER.unpack_from
        handle = self._server_message
        masks = self.masking is not None
        # The masked result whose DataRows are being relayed, with its row masker (see
        # _masked_rows), from the first of them on: until another message comes (which may
        # change the front execution, its plan or the encoding), the next rows need no
        # look-up of their own.
        rows: tuple[Execution, Masker, pgmask.RowMasker] | None = None
        data_row = m.DATA_ROW
        while size - pos >= 5:
            mtype, length = unpack(buf, pos)
            if length < 4:
                raise ProtocolViolation("invalid message length from the upstream")
            end = pos + 1 + length
            if rows is not None:
                if mtype == data_row:
                    # A DataRow of a masked result: as _mask_row, inline (most rows are here).
                    if end > size:  # a row to mask is needed whole (bounded by max_message)
                        if length > limit:
                            raise ProtocolViolation("a result row to mask exceeds the size limit")
                        break
                    result, masker, mask_row = rows
                    result.rows = (result.rows or 0) + 1
                    before = masker.total
                    replacement = mask_row(buf, pos + 5, end)
                    result.masked_values += masker.total - before
                    sink = result.row_sink
                    if replacement is not None:
                        if sink is not None:
                            sink(replacement[5:])
                        if run_start < pos:
                            out.append(bytes(buf[run_start:pos]))
                        out.append(replacement)
                        run_start = end
                    elif sink is not None:
                        sink(bytes(buf[pos + 5 : end]))
                    pos = end
                    continue
                rows = None
            if length > limit and mtype != data_row and mtype != m.COPY_DATA:
                # (rows and COPY data that need no masking are streamed, never buffered)
                raise ProtocolViolation(
                    f"a message of {length} bytes from the upstream exceeds the limit of {limit}"
                )
            if mtype == data_row or mtype == m.COPY_DATA:
                execution = self._front_execution()
                masking = (
                    self._row_masking(mtype, execution)
                    if masks and (execution is None or execution.row_plan is not _NO_MASKING)
                    else None
                )
                if masking is None:
                    if mtype == data_row and execution is not None:
                        execution.rows = (execution.rows or 0) + 1
                        # The recorder's sample takes whole rows only.
                        if execution.row_sink is not None and end <= size:
                            execution.row_sink(bytes(buf[pos + 5 : end]))
                    if end > size:  # stream the rest of a large row through
                        self._server_skip = end - size
                        pos = size
                        break
                    pos = end
                    continue
                if end > size:  # a row to mask is needed whole (bounded by max_message)
                    if length > limit:
                        raise ProtocolViolation("a result row to mask exceeds the size limit")
                    break
                rows = self._masked_rows(mtype, masking, execution)
                if rows is not None:
                    continue  # this row again, on the fast path above
                replacement = self._mask_row(mtype, masking, buf, pos, end)
                if replacement is not None:
                    if run_start < pos:
                        out.append(bytes(buf[run_start:pos]))
                    out.append(replacement)
                    run_start = end
                pos = end
                continue
            if end > size:
                break
            replacement = handle(mtype, buf, pos + 5, end)
            if replacement is not None:
                if run_start < pos:
                    out.append(bytes(buf[run_start:pos]))
                out.append(replacement)
                run_start = end
            pos = end
        return self._rest(buf, self._server_buf, out, run_start, pos)

    # ----------------------------------------------------------------- masking

    def _mask_decision(self, statement: Statement | None, decision: Decision) -> Decision:
        """Refuse what masking cannot handle while a profile applies: binary COPY, and
        copies of masked columns into tables or server files (column rules follow
        results, not copies: :func:`.masking.write_refusal`)."""
        if statement is None or decision.outcome is Outcome.DENY:
            return decision
        if statement.kind is not CommandKind.COPY and not statement.tables_copied:
            return decision
        assert self.masking is not None
        masker = self.masking.masker(self.masking.profile_for(decision))
        if masker is None:
            return decision
        lineage = sql_lineage.result_lineage(statement.text)
        reason = pgmask.copy_refusal(statement, lineage) or pgmask.write_refusal(
            statement, lineage, masker.profile, self._masks.catalog
        )
        if reason is None:
            return decision
        return Decision.deny(reason, "builtin:masking")

    def _column_catalog(self) -> pgmask.ColumnCatalog:
        if self._masks.catalog is None:
            self._masks.catalog = pgmask.ColumnCatalog(nonce=secrets.token_hex(4))
        return self._masks.catalog

    def _track_catalog(self, statement: Statement | None) -> None:
        """A statement that may change what names mean makes the catalog stale."""
        catalog = self._masks.catalog
        if catalog is not None and statement is not None and pgmask.changes_catalog(statement):
            catalog.invalidate()

    def _lookup_for(self, statement: Statement | None, decision: Decision) -> bytes:
        """:meth:`_lookup_before` for one statement, short when its rules need no lineage."""
        if statement is None or decision.outcome is Outcome.DENY:
            return b""
        assert self.masking is not None
        masker = self.masking.masker(self.masking.profile_for(decision))
        if masker is None or not masker.needs_lineage:
            return b""
        return self._lookup_before([statement], [decision])

    def _lookup_before(
        self, statements: Sequence[Statement | None], decisions: Sequence[Decision]
    ) -> bytes:
        """A column look-up to send before these statements, if a rule needs one and the
        server is between requests (see :mod:`.masking`); registers its expectation."""
        assert self.masking is not None
        needed: set[tuple[str, ...]] = set()
        for statement, decision in zip(statements, decisions, strict=True):
            if statement is None or decision.outcome is Outcome.DENY:
                continue
            masker = self.masking.masker(self.masking.profile_for(decision))
            if masker is None or not masker.needs_lineage:
                continue
            needed |= sql_lineage.result_lineage(statement.text).relations
        if not needed:
            return b""
        catalog = self._column_catalog()
        for statement in statements:  # a later statement of this message changes names
            if statement is not None and pgmask.changes_catalog(statement):
                return b""
        names = catalog.wanted(needed)
        if not names or not self._between_requests():
            return b""
        lookup = catalog.start_lookup(names)
        self._expect.append((Expect.LOOKUP, lookup, self._copy_ends))
        return pgmask.lookup_messages(lookup, self.encoding)

    def _between_requests(self) -> bool:
        """Whether a message sent now is read by the server outside any client request."""
        if self.in_copy_in or self._syncs_ignored:
            return False
        if not self._expect:
            return self.transaction_status != m.FAILED_TRANSACTION
        if self._expect[-1][0] not in (Expect.SYNC, Expect.QUERY, Expect.LOOKUP):
            return False
        for _kind, item, _ends in self._expect:  # nothing in flight may start a COPY FROM
            executions = item.executions if isinstance(item, _QueryGroup) else [item]
            for execution in executions:
                statement = execution.statement if isinstance(execution, Execution) else None
                if (
                    statement is not None
                    and statement.kind is CommandKind.COPY
                    and statement.copy_direction != "to"
                ):
                    return False
        return True

    def _lookup_message(self, mtype: int, buf: Buffer, start: int, end: int) -> bytes | None:
        """A message answering the column look-up in front: b"" drops it (None: not ours)."""
        _kind, lookup, _ends = self._expect[0]
        assert isinstance(lookup, pgmask.CatalogLookup)
        if mtype == m.READY_FOR_QUERY:
            self.transaction_status = buf[start] if end > start else m.IDLE
            self._expect.popleft()
            self._column_catalog().finish(lookup)
            return b""
        if mtype == m.ERROR_RESPONSE:
            fields = m.parse_error_fields(bytes(buf[start:end]), self.encoding)
            lookup.error = fields.get("M", "error")
            if fields.get("S") in ("FATAL", "PANIC"):
                self._expect.popleft()
                self._column_catalog().finish(lookup)
                return None  # the session ends: the client gets the server's own error
            if fields.get("C") == "25P02":  # a failed transaction: the client's fails too
                return b""
            return m.notice_response(
                "jitgate: the column look-up for masking failed; columns are masked whole",
                severity="WARNING",
                sqlstate="01000",
                detail=lookup.error,
                encoding=self.encoding,
            )
        if mtype in (m.PARSE_COMPLETE, m.BIND_COMPLETE, m.CLOSE_COMPLETE, m.COMMAND_COMPLETE):
            return b""
        if mtype in (m.NO_DATA, m.ROW_DESCRIPTION, m.EMPTY_QUERY_RESPONSE, m.PORTAL_SUSPENDED):
            return b""
        return None  # NoticeResponse, ParameterStatus, NotificationResponse: the client's

    def _on_row_description(self, payload: bytes) -> None:
        """Remember a result shape where its rows will look for it."""
        if not self._expect:
            return
        kind, item, _ = self._expect[0]
        if kind is Expect.DESCRIBE and isinstance(item, _Prepared):
            item.row_description = payload
        elif kind is Expect.QUERY:
            execution = self._front_execution()
            if execution is not None:
                execution.row_description = payload
                execution.row_plan = None
                execution.row_masking = None

    def _on_copy_out(self, payload: bytes) -> None:
        """COPY … TO STDOUT starts: plan how its rows are masked."""
        execution = self._front_execution()
        if execution is None:
            return
        assert self.masking is not None
        masker = self.masking.masker(self.masking.profile_for(execution.decision))
        overall, count = pgmask.parse_copy_out_response(payload)
        if masker is None:
            execution.row_plan = _NO_MASKING
            return
        if overall != 0:  # refused when decided; never forward what cannot be masked
            raise ProtocolViolation("binary COPY output cannot be masked")
        statement = execution.statement
        lineage = sql_lineage.result_lineage(statement.text) if statement is not None else None
        columns = None
        if masker.needs_lineage:
            columns = pgmask.describe_copy_columns(lineage, count, self._catalog_for(execution))
        elif lineage is not None and lineage.copy is not None:
            columns = [ColumnInfo(f"column{i + 1}") for i in range(count)]
        execution.copy_plan = pgmask.copy_plan(
            lineage.copy if lineage is not None else None, count, columns, self.encoding
        )

    def _catalog_for(self, execution: Execution) -> pgmask.ColumnCatalog | None:
        """The catalog, if nothing changed names since the execution was sent."""
        catalog = self._masks.catalog
        if catalog is None or catalog.generation != execution.catalog_generation:
            return None
        return catalog

    def _row_masking(
        self, mtype: int, execution: Execution | None
    ) -> tuple[Masker | None, object] | None:
        """The masker and plan for the front execution's rows (``execution``, from
        :meth:`_front_execution`), or None to pass them through."""
        assert self.masking is not None
        catalog = self._masks.catalog
        if catalog is not None and catalog.lookups and self._expect[0][0] is Expect.LOOKUP:
            return _LOOKUP_ROW  # (lookups > 0: its expectation is in the FIFO)
        if execution is None:
            return None
        if execution.row_plan is _NO_MASKING:
            return None
        known = execution.row_masking
        if known is not None and mtype == m.DATA_ROW:
            # The plan for this shape, worked out at its first row.
            return known if isinstance(known, tuple) else None
        masker = self.masking.masker(self.masking.profile_for(execution.decision))
        if masker is None:
            execution.row_plan = _NO_MASKING
            return None
        if mtype == m.COPY_DATA:
            if execution.copy_plan is None:  # no CopyOutResponse seen: every rule applies
                execution.copy_plan = pgmask.copy_plan(None, 0, None, self.encoding)
            return masker, execution.copy_plan
        if execution.row_plan is None:
            description = execution.row_description
            if description is None and execution.source is not None:
                description = execution.source.row_description
            if description is None:
                # Rows with no known shape (no Describe seen): cells to mask become NULL.
                return masker, None
            fields = pgmask.parse_row_description(description, self.encoding)
            columns = None
            if masker.needs_lineage:
                statement = execution.statement
                lineage = sql_lineage.result_lineage(statement.text) if statement else None
                columns = pgmask.describe_columns(fields, lineage, self._catalog_for(execution))
            row_plan = pgmask.plan(masker, fields, columns, execution.result_formats)
            execution.row_plan = row_plan
            execution.row_masking = False if row_plan.passthrough else (masker, row_plan)
        if getattr(execution.row_plan, "passthrough", False):
            return None
        return masker, execution.row_plan

    def _mask_row(
        self,
        mtype: int,
        masking: tuple[Masker | None, object],
        buf: Buffer,
        pos: int,
        end: int,
    ) -> bytes | None:
        """The message at ``buf[pos:end]`` (a DataRow or CopyData of a masked result) as the
        client gets it: None if unchanged, b"" to drop it. Counts the row, gives the
        recorder its sample."""
        if masking is _LOOKUP_ROW:
            _kind, lookup, _ = self._expect[0]
            assert isinstance(lookup, pgmask.CatalogLookup)
            self._column_catalog().add_row(lookup, bytes(buf[pos + 5 : end]), self.encoding)
            return b""
        masker, row_plan = masking
        assert masker is not None
        execution = self._front_execution()
        before = masker.total
        masked: bytes | None
        if mtype == m.COPY_DATA:
            assert isinstance(row_plan, pgmask.CopyPlan)
            masked = pgmask.mask_copy_data(bytes(buf[pos + 5 : end]), row_plan, masker)
        else:
            if execution is not None:
                execution.rows = (execution.rows or 0) + 1
            if row_plan is None:
                masked = pgmask.mask_all_text_cells(
                    bytes(buf[pos + 5 : end]), masker, self.encoding
                )
            else:
                assert isinstance(row_plan, pgmask.PgPlan)
                masked = pgmask.rewrite_data_row(
                    bytes(buf[pos + 5 : end]), row_plan, masker, self.encoding
                )
        replacement = None if masked is None else m.message(mtype, masked)
        if mtype == m.DATA_ROW:
            self._masked_row(execution, masker.total - before, replacement, buf, pos, end)
        elif execution is not None:
            execution.masked_values += masker.total - before
        return replacement

    def _masked_rows(
        self, mtype: int, masking: tuple[Masker | None, object], execution: Execution | None
    ) -> tuple[Execution, Masker, pgmask.RowMasker] | None:
        """For a DataRow of a result masked on the fast path (a byte filter, an
        ASCII-transparent encoding): its execution, masker and row masker, the latter made
        once per plan and encoding. None for any other row: :meth:`_mask_row` takes it."""
        masker, row_plan = masking  # (a look-up's row has no plan, nor has COPY data a PgPlan)
        if (
            mtype != m.DATA_ROW
            or not isinstance(row_plan, pgmask.PgPlan)
            or not row_plan.detect
            or self.encoding not in pgmask.ASCII_TRANSPARENT
        ):
            return None
        assert execution is not None and masker is not None
        known = execution.row_masker
        if known is None or known[0] is not row_plan or known[1] != self.encoding:
            mask_row = pgmask.row_masker(row_plan, masker, self.encoding, m.DATA_ROW)
            known = execution.row_masker = (row_plan, self.encoding, mask_row)
        return execution, masker, known[2]

    @staticmethod
    def _masked_row(
        execution: Execution | None,
        masked: int,
        replacement: bytes | None,
        buf: Buffer,
        pos: int,
        end: int,
    ) -> None:
        """Account a DataRow of a masked result: values masked, the recorder's sample."""
        if execution is None:
            return
        execution.masked_values += masked
        if execution.row_sink is not None:
            sample = bytes(buf[pos + 5 : end]) if replacement is None else replacement[5:]
            execution.row_sink(sample)

    def _masked_fields(self, payload: bytes) -> dict[str, str] | None:
        """ErrorResponse/NoticeResponse fields with values masked; None if none changed."""
        assert self.masking is not None
        execution = self._front_execution()
        profile = (
            self.masking.profile_for(execution.decision)
            if execution is not None
            else self.masking.profile_for(Decision.allow())
        )
        masker = self.masking.masker(profile)
        if masker is None:
            return None
        catalog = self._catalog_for(execution) if execution is not None else self._masks.catalog
        scope = pgmask.table_scope(catalog)
        return pgmask.mask_error_fields(payload, masker, self.encoding, scope)

    def _mask_notification(self, payload: bytes) -> bytes | None:
        """A NotificationResponse with its payload masked (the session's default profile:
        a notification belongs to no statement of this session)."""
        assert self.masking is not None
        masker = self.masking.masker(self.masking.profile_for(Decision.allow()))
        if masker is None:
            return None
        channel_end = payload.find(b"\x00", 4)
        text_end = payload.find(b"\x00", channel_end + 1)
        if len(payload) < 4 or channel_end < 0 or text_end < 0:
            raise ProtocolViolation("malformed NotificationResponse from the upstream")
        text = payload[channel_end + 1 : text_end].decode(self.encoding, "replace")
        result = masker.mask_text(text, nullable=False)
        if not result.changed or result.value is None:
            return None
        body = payload[: channel_end + 1] + result.value.encode(self.encoding, "replace")
        return m.message(m.NOTIFICATION_RESPONSE, body + b"\x00")

    def _front_execution(self) -> Execution | None:
        if not self._expect:
            return None
        kind, item, _ = self._expect[0]
        if kind is Expect.QUERY:
            assert isinstance(item, _QueryGroup)
            if item.index < len(item.executions):
                return item.executions[item.index]
            return None
        if kind is Expect.EXECUTE:
            return item if isinstance(item, Execution) else None
        return None

    def _server_message(self, mtype: int, buf: Buffer, start: int, end: int) -> bytes | None:
        catalog = self._masks.catalog
        if catalog is not None and catalog.lookups and self._expect[0][0] is Expect.LOOKUP:
            answer = self._lookup_message(mtype, buf, start, end)
            if answer is not None:
                return answer
        if mtype == m.READY_FOR_QUERY:
            self.transaction_status = buf[start] if end > start else m.IDLE
            self._on_ready()
            return None
        if mtype == m.COMMAND_COMPLETE:
            tag = bytes(buf[start : end - 1]).decode("ascii", "replace")
            self._complete(tag)
            return None
        if mtype == m.ROW_DESCRIPTION:
            if self.masking is not None:
                self._on_row_description(bytes(buf[start:end]))
            if self._expect and self._expect[0][0] is Expect.DESCRIBE:
                self._expect.popleft()
            return None
        if mtype == m.ERROR_RESPONSE:
            payload = bytes(buf[start:end])
            # Masked before anything of it is recorded (the error's message) or sent, and
            # under the profile of the statement it ends.
            masked = self._masked_fields(payload) if self.masking is not None else None
            replacement = self._on_error(payload, masked)
            if replacement is None and masked is not None:
                replacement = m.encode_error_fields(masked, mtype, self.encoding)
            return replacement
        if mtype == m.NOTICE_RESPONSE and self.masking is not None:
            masked = self._masked_fields(bytes(buf[start:end]))
            return None if masked is None else m.encode_error_fields(masked, mtype, self.encoding)
        if mtype == m.NOTIFICATION_RESPONSE and self.masking is not None:
            return self._mask_notification(bytes(buf[start:end]))
        if mtype == m.COPY_OUT_RESPONSE and self.masking is not None:
            self._on_copy_out(bytes(buf[start:end]))
            return None
        if mtype == m.PARSE_COMPLETE:
            if self._expect and self._expect[0][0] is Expect.PARSE:
                _kind, item, _ = self._expect.popleft()
                if isinstance(item, _Prepared):
                    self._confirm(item)
                else:
                    self._drop(item)
            return None
        if mtype in (m.BIND_COMPLETE, m.CLOSE_COMPLETE, m.NO_DATA):
            self._pop_simple(mtype)
            return None
        if mtype == m.EMPTY_QUERY_RESPONSE:
            self._complete("")
            return None
        if mtype == m.PORTAL_SUSPENDED:
            self._complete("(suspended)")
            return None
        if mtype == m.FUNCTION_CALL_RESPONSE:
            self._complete("FUNCTION CALL")
            return None
        if mtype == m.COPY_IN_RESPONSE:
            self.in_copy_in = True
            self._ignore_syncs_in_copy()
            return None
        if mtype == m.PARAMETER_STATUS:
            name_end = _cstring_end(buf, start, end)
            name = bytes(buf[start:name_end])
            if name == b"client_encoding":
                value = bytes(buf[name_end + 1 : _cstring_end(buf, name_end + 1, end)])
                self.encoding = m.python_codec(value.decode("ascii", "replace"))
            elif name == b"standard_conforming_strings":
                value = bytes(buf[name_end + 1 : _cstring_end(buf, name_end + 1, end)])
                self._scs_off = value == b"off"
        return None

    def _ignore_syncs_in_copy(self) -> None:
        """The server ignores the Syncs the client sends until its CopyDone/CopyFail."""
        if not self._expect:
            return
        front = self._expect.popleft()
        ends = front[2]
        kept = [e for e in self._expect if e[0] is not Expect.SYNC or e[2] != ends]
        self._expect = deque([front, *kept])
        if self._copy_ends == ends:  # the client is still sending its copy data
            self._syncs_ignored = True

    def _confirm(self, prepared: _Prepared) -> None:
        if self._pending.get(prepared.name) is prepared:
            del self._pending[prepared.name]
        self._prepared[prepared.name] = prepared

    def _drop(self, item: object) -> None:
        """A request that failed or was skipped: forget what it would have created."""
        if isinstance(item, _Prepared):
            if self._pending.get(item.name) is item:
                del self._pending[item.name]
            if not item.name:
                self._prepared.pop(item.name, None)
        elif isinstance(item, Execution):
            self._finish(item, "skipped")
        elif isinstance(item, _QueryGroup):  # a Query sent before Sync is discarded too
            for execution in item.executions[item.index :]:
                self._finish(execution, "skipped")
            item.index = len(item.executions)

    def _pop_simple(self, mtype: int) -> None:
        if not self._expect:
            return
        kind = self._expect[0][0]
        if (
            (mtype == m.BIND_COMPLETE and kind is Expect.BIND)
            or (mtype == m.CLOSE_COMPLETE and kind is Expect.CLOSE)
            or (mtype in (m.NO_DATA, m.ROW_DESCRIPTION) and kind is Expect.DESCRIBE)
        ):
            self._expect.popleft()

    def _complete(self, tag: str) -> None:
        self.in_copy_in = False
        self._syncs_ignored = False
        if not self._expect:
            return
        kind, item, _ = self._expect[0]
        if kind is Expect.QUERY:
            assert isinstance(item, _QueryGroup)
            if item.index < len(item.executions):
                self._finish(item.executions[item.index], "ok", tag)
                item.index += 1
            return
        if kind is Expect.EXECUTE:
            self._expect.popleft()
            if isinstance(item, Execution):
                self._finish(item, "ok", tag)

    def _finish(
        self,
        execution: Execution,
        status: str,
        tag: str | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        if execution.finished_ns is not None:
            return
        execution.finished_ns = time.monotonic_ns()
        if execution.nonce is not None:
            self._denials.pop(execution.nonce, None)
        if execution.status != "denied":
            execution.status = status
        execution.tag = tag
        if tag:  # the rows a CommandComplete tag counts (m.command_tag_rows, inline)
            head, _, tail = tag.rpartition(" ")
            if head and tail.isdigit():
                execution.rows = int(tail)
        if error is not None and execution.error is None:
            execution.error = error
        if execution.names_op is not None:
            self._names_done(execution)
        self._observer.finished(execution)

    def _on_error(self, payload: bytes, masked: dict[str, str] | None = None) -> bytes | None:
        """Close the request an ErrorResponse answers; ``masked``: its fields as masked
        (what the recording keeps). Returns the denial's own error, for a refused one."""
        fields = m.parse_error_fields(payload, self.encoding)
        replacement = None
        denied: tuple[Execution, Decision] | None = None
        if self._marker_bytes in payload:
            message = fields.get("M", "")
            start = message.find(self._marker)
            if start >= 0:
                nonce = message[start:].split('"', 1)[0]
                denied = self._denials.pop(nonce, None)
        if denied is not None:
            execution, decision = denied
            replacement, error_pair = _denial_error(execution, decision, self.encoding)
            self._finish(execution, "denied", None, error_pair)
        fatal = fields.get("S") in ("FATAL", "PANIC")
        self.upstream_fatal = self.upstream_fatal or fatal
        error = (fields.get("C", ""), (masked or fields).get("M", ""))
        self._fail_front(error, fatal=fatal)
        return replacement

    def _fail_front(self, error: tuple[str, str], *, fatal: bool) -> None:
        """An ErrorResponse ends the front request; the rest up to Sync is skipped."""
        self.in_copy_in = False
        self._syncs_ignored = False
        if not self._expect:
            return
        kind, item, _ = self._expect[0]
        if kind is Expect.QUERY:
            assert isinstance(item, _QueryGroup)
            if item.index < len(item.executions):
                self._finish(item.executions[item.index], "error", None, error)
                for skipped in item.executions[item.index + 1 :]:
                    self._finish(skipped, "skipped")
                item.index = len(item.executions)
            return
        if kind is Expect.SYNC:
            return
        self._expect.popleft()
        if isinstance(item, Execution):
            self._finish(item, "error", None, error)
        else:
            self._drop(item)
        # Extended protocol: the server now ignores everything up to the next Sync.
        while self._expect and self._expect[0][0] is not Expect.SYNC:
            _kind, later, _ = self._expect.popleft()
            self._drop(later)

    def _on_ready(self) -> None:
        while self._expect:
            kind, item, _ = self._expect.popleft()
            if kind is Expect.QUERY:
                assert isinstance(item, _QueryGroup)
                for leftover in item.executions[item.index :]:
                    self._finish(leftover, "skipped")
                break
            if kind is Expect.SYNC:
                break
            self._drop(item)
        if self.transaction_status == m.IDLE:
            # Outside a transaction no portal survives (protocol portals are never WITH HOLD).
            if self._portals:
                self._portals.clear()
            if self._portal_params:
                self._portal_params.clear()

    def close(self) -> None:
        """The session ended: whatever is still in flight is recorded as interrupted."""
        while self._expect:
            _kind, item, _ = self._expect.popleft()
            pending = item.executions[item.index :] if isinstance(item, _QueryGroup) else [item]
            for execution in pending:
                if isinstance(execution, Execution):
                    self._finish(execution, "error", None, ("08006", "session ended"))


def _bind_result_formats(buf: Buffer, offset: int, end: int) -> tuple[int, ...]:
    """The result-column format codes at the end of a Bind message (offset: after names)."""
    try:
        (nformats,) = _INT16.unpack_from(buf, offset)
        offset += 2 + 2 * nformats
        (nparams,) = _INT16.unpack_from(buf, offset)
        offset += 2
        for _ in range(nparams):
            (length,) = _INT32.unpack_from(buf, offset)
            offset += 4 + max(length, 0)
        (nresults,) = _INT16.unpack_from(buf, offset)
        offset += 2
        if offset + 2 * nresults > end:
            raise ProtocolViolation("truncated Bind message")
        return struct.unpack_from(f"!{nresults}h", buf, offset) if nresults else ()
    except struct.error:
        raise ProtocolViolation("truncated Bind message") from None


def _bind_parameters(buf: Buffer, offset: int, end: int) -> BindParameters:
    """The parameter format codes and values of a Bind message (offset: after names)."""
    try:
        (nformats,) = _INT16.unpack_from(buf, offset)
        formats = struct.unpack_from(f"!{nformats}h", buf, offset + 2) if nformats else ()
        offset += 2 + 2 * nformats
        (nparams,) = _INT16.unpack_from(buf, offset)
        offset += 2
        values: list[bytes | None] = []
        for _ in range(nparams):
            (length,) = _INT32.unpack_from(buf, offset)
            offset += 4
            if length < 0:
                values.append(None)
                continue
            if offset + length > end:
                raise ProtocolViolation("truncated Bind message")
            values.append(bytes(buf[offset : offset + length]))
            offset += length
        return tuple(formats), tuple(values)
    except struct.error:
        raise ProtocolViolation("truncated Bind message") from None


def _cstring_end(buf: Buffer, start: int, end: int) -> int:
    nul = buf.find(0, start, end)
    if nul < 0:
        raise ProtocolViolation("unterminated string in message")
    return nul


def _denial_error(
    execution: Execution, decision: Decision, encoding: str
) -> tuple[bytes, tuple[str, str]]:
    """The ErrorResponse a client sees for a refused statement.

    A statement the parser could not understand is answered like PostgreSQL answers a
    syntax error (42601, same parser, same message; 22021 for text that is not valid in the
    client encoding); anything else is 42501 with the policy's reason.
    """
    statement = execution.statement
    detail = f"Decided by {', '.join(decision.policies)}." if decision.policies else None
    if statement is not None and statement.kind is CommandKind.UNKNOWN and statement.error:
        sqlstate = (
            "22021"
            if statement.error.startswith(_UNDECODABLE)
            else DENIED_SQLSTATE
            if statement.error == _SCS_OFF
            else "42601"
        )
        return (
            m.error_response(
                sqlstate,
                statement.error,
                detail="jitgate: statement not understood, so not run.",
                encoding=encoding,
            ),
            (sqlstate, statement.error),
        )
    reason = decision.reason or "denied by policy"
    return (
        m.error_response(DENIED_SQLSTATE, f"jitgate: {reason}", detail=detail, encoding=encoding),
        (DENIED_SQLSTATE, reason),
    )
