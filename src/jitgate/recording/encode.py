"""Turning what a relay reported into a session's events: the records of the hand-off.

A gateway-side :class:`~jitgate.recording.recorder.SessionRecorder` describes each thing
to record as a small tuple of plain values — a *record* — and either encodes it at once
(inline) or hands it to the writer process (:mod:`jitgate.recording.handoff`), which
encodes it there. Either way :class:`SessionEncoder` makes the same event of it, so a
recording's bytes do not depend on where it was encoded.

Records (``kind, session id, event seq, at_ns, *payload``):

* ``OPEN``: ``path, session.start data (JSON)`` — the session's first event.
* ``REQUEST``: ``fields (canonical JSON of the members fixed by the statement's
  classification and decision), request number, text``.
* ``RESULT``: the :data:`Result` tuple below.
* ``EVENT``: ``type, data (JSON)`` — anything else (reviews, grants, terminal frames).
* ``CLOSE``: the session is over; its log is closed and handed back.

``event seq`` is the number the record's event gets in the session's log: a log that has
it already (a record applied twice after a crash) skips it.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

import orjson

from jitgate.recording.log import EventLog, EventShape

OPEN, REQUEST, RESULT, EVENT, CLOSE = range(5)

#: A finished execution: (request, status, tag, rows, started_ns, finished_ns, error,
#: masked values, RowDescription bytes, result formats, sample rows or None, sample
#: truncated, sampled). ``error`` is (sqlstate, message) or None; ``sampled`` says the
#: result event has a ``sample`` member.
Result = tuple[
    int,
    str,
    "str | None",
    "int | None",
    int,
    "int | None",
    "tuple[str, str] | None",
    int,
    "bytes | None",
    "tuple[int, ...]",
    "list[bytes] | None",
    bool,
    bool,
]


#: The marshal format version of records: 0 has no back-references, so marshalling a
#: small record allocates no table of them (the default, 4, is twice as slow here).
MARSHAL_VERSION = 0


def dump_record(record: tuple[Any, ...]) -> bytes:
    return marshal.dumps(record, MARSHAL_VERSION)


def load_record(data: bytes) -> tuple[Any, ...]:
    """A record as :func:`dump_record` made it. Records come only from the gateway
    process itself, through a 0600 file in its data dir (never from a client)."""
    record: tuple[Any, ...] = marshal.loads(data)  # noqa: S302 - see above
    return record


_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_FIELD_TAIL = 18  # RowDescription: table oid, attnum, type oid, typlen, typmod, format

# The members of a request event that change from one statement to the next.
_REQUEST_VARIABLE = ("request", "text")
_INT = frozenset({"request", "rows", "masked_values"})
_SORTED = orjson.OPT_SORT_KEYS  # nested members are canonical JSON too
_dumps = orjson.dumps


def columns_of(payload: bytes, encoding: str = "utf-8") -> tuple[list[str], list[int]]:
    """Column names and formats of a RowDescription body ([] if it does not parse)."""
    try:
        (count,) = _INT16.unpack_from(payload, 0)
        offset, names, formats = 2, [], []
        for _ in range(count):
            end = payload.index(b"\x00", offset)
            names.append(payload[offset:end].decode(encoding, "replace"))
            formats.append(_INT16.unpack_from(payload, end + 1 + _FIELD_TAIL - 2)[0])
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


class SessionEncoder:
    """Appends the events of one session's records to its :class:`EventLog`.

    Events of a kind seen before are filled into a cached :class:`EventShape` (the bytes
    are those of encoding the event whole, see :mod:`jitgate.recording.log`).
    """

    __slots__ = ("_columns", "_requests", "_results", "log")

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._columns: dict[bytes, tuple[list[str], list[int]]] = {}
        self._requests: dict[bytes, tuple[EventShape | None, dict[str, Any]]] = {}
        self._results: dict[tuple[Any, ...], EventShape | None] = {}

    def apply(self, record: tuple[Any, ...]) -> None:
        """Append the event of one record (not OPEN/CLOSE), unless the log has it."""
        kind, _session, seq, at_ns = record[:4]
        if seq <= self.log.seq:
            return  # applied before (a drain after a crash)
        if kind == REQUEST:
            self.request(record[4], record[5], record[6], at_ns)
        elif kind == RESULT:
            self.result(record[4], at_ns)
        elif kind == EVENT:
            self.log.append(record[4], orjson.loads(record[5]), at_ns)
        else:
            raise ValueError(f"record of unknown kind {kind!r}")

    def request(self, fields: bytes, request: int, text: str, at_ns: int | None = None) -> None:
        cached = self._requests.get(fields)
        if cached is None:
            members = orjson.loads(fields)
            try:
                shape: EventShape | None = EventShape("request", members, _REQUEST_VARIABLE, _INT)
            except ValueError:
                shape = None
            if len(self._requests) >= 512:
                self._requests.clear()
            cached = self._requests[fields] = (shape, members)
        shape = cached[0]
        if shape is not None:
            self.log.append_shaped(shape, (request, _dumps(text)), at_ns)
        else:
            data = dict(cached[1])
            data["request"] = request
            data["text"] = text
            self.log.append("request", data, at_ns)

    def _known_columns(self, description: bytes) -> tuple[list[str], list[int]]:
        cache = self._columns
        known = cache.get(description)
        if known is None:
            if len(cache) >= 256:
                cache.clear()
            known = cache[description] = columns_of(description)
        return known

    def sample(
        self,
        description: bytes | None,
        result_formats: tuple[int, ...],
        rows: list[bytes],
        truncated: bool,
    ) -> dict[str, Any]:
        """The ``sample`` member of a result event: its rows as the client saw them."""
        columns: list[str] = []
        formats: list[int] | tuple[int, ...] = []
        if description:
            columns, formats = self._known_columns(description)
        formats = result_formats or formats
        if any(formats):
            cells = [_cells(row, formats, "utf-8") for row in rows]
        else:  # all text (the usual case)
            cells = [_text_cells(row, "utf-8") for row in rows]
        out: dict[str, Any] = {"rows": cells}
        if columns:
            out["columns"] = columns
        if truncated:
            out["truncated"] = True
        return out

    def result(self, result: Result, at_ns: int | None = None) -> None:
        (request, status, tag, rows, started_ns, finished_ns, error, masked, description,
         result_formats, sample, truncated, sampled) = result  # fmt: skip
        if error is not None or not tag or finished_ns is None:
            self._whole(result, at_ns)  # not of a common shape
            return
        key = (description, status, tag, rows is not None, masked > 0, sampled)
        shape = self._results[key] if key in self._results else self._result_shape(key)
        if shape is None:
            self._whole(result, at_ns)
            return
        values: list[Any] = [request, _dumps(round((finished_ns - started_ns) / 1e6, 3))]
        if rows is not None:
            values.append(rows)
        if masked:
            values.append(masked)
        if sampled:
            member = self.sample(description, result_formats, sample or [], truncated)
            values.append(_dumps(member, option=_SORTED))
        self.log.append_shaped(shape, values, at_ns)

    def _whole(self, result: Result, at_ns: int | None) -> None:
        """Append a result event encoded whole."""
        (request, status, tag, rows, started_ns, finished_ns, error, masked, description,
         result_formats, sample, truncated, sampled) = result  # fmt: skip
        data: dict[str, Any] = {"request": request, "status": status}
        if tag:
            data["command_tag"] = tag
        if rows is not None:
            data["rows"] = rows
        if finished_ns is not None:
            data["duration_ms"] = round((finished_ns - started_ns) / 1e6, 3)
        if error is not None:
            data["error"] = {"sqlstate": error[0], "message": error[1]}
        if masked:
            data["masked_values"] = masked
        if description:
            columns = self._known_columns(description)[0]
            if columns:
                data["columns"] = columns
        if sampled:
            data["sample"] = self.sample(description, result_formats, sample or [], truncated)
        self.log.append("result", data, at_ns)

    def _result_shape(self, key: tuple[Any, ...]) -> EventShape | None:
        """The :class:`EventShape` of the result events ``key`` describes, or None if
        they cannot have one (they are then encoded whole)."""
        description, status, tag, has_rows, has_masked, sampled = key
        fixed: dict[str, Any] = {"status": status, "command_tag": tag}
        if description:
            names = self._known_columns(description)[0]
            if names:
                fixed["columns"] = names
        fields = ("request", "duration_ms")
        fields += ("rows",) * has_rows + ("masked_values",) * has_masked + ("sample",) * sampled
        shape: EventShape | None
        try:
            shape = EventShape("result", fixed, fields, _INT)
        except ValueError:
            shape = None
        if len(self._results) >= 256:
            self._results.clear()
        self._results[key] = shape
        return shape
