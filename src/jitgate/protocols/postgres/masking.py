"""Masking PostgreSQL results on the wire, sans-IO: RowDescription → plan, DataRow → DataRow.

Theory of operation
-------------------
A RowDescription says, per column, its name, the table OID and attribute number it comes
from (for a plain column reference), the type OID and the format (text or binary).
:func:`plan` turns that into a :class:`PgPlan`: column rules are resolved once per result
shape, and a result whose plan is empty passes through untouched. :func:`rewrite_data_row`
decodes only the cells the plan names, asks the masker, and rebuilds the row with
recomputed lengths. The client always gets a value it can decode:

* text-like cells (text, varchar, char, name, json, jsonb, xml, unknown…) in text format,
  and text, varchar, bpchar, name, json, unknown, jsonb and jsonpath in binary format
  (whose binary form is the text itself, after a version byte for jsonb and jsonpath), get
  the masked text;
* text-format numeric cells get the masker's numeric fallback (NULL, or zeros);
* anything else — other binary cells, dates, UUIDs, arrays, types we do not know — becomes
  NULL when it needs masking, which every client can decode. So does every masked cell of
  a row whose shape was never described (:func:`mask_all_text_cells`).

Where result columns come from (lineage)
----------------------------------------
Column rules (``customers.ssn``) must hold however a column is spelled. For each result
column the gateway combines two sources, and fails closed where neither tells:

* the RowDescription's (table OID, attribute number), which PostgreSQL fills in for a
  plain column reference, resolved by a :class:`ColumnCatalog` to ``schema.table.column``
  (a view column to the columns its definition derives it from, a partition's column to
  its parent's too);
* the statement's own lineage (:mod:`jitgate.sql.lineage`): for ``upper(ssn) AS s`` the
  columns each output expression is computed from, with stars expanded by the catalog.

The catalog is filled per session by a look-up the relay sends on the session's own
upstream leg just before a statement that needs it, at a moment when the server is between
requests (nothing in flight, or right after a Sync), as a named extended-protocol
statement with a named portal, so the client's unnamed statement and portal, its
transaction and its pipeline are untouched. The answer is read and dropped before the
client's own results arrive. DDL, ``SET``, ``ROLLBACK`` and the like invalidate the
catalog; entries are refreshed after :attr:`ColumnCatalog.ttl` seconds.

A column whose origin cannot be told — an OID the catalog does not know, a function that
is not a known built-in, a stretch of a star the gateway cannot map — is *opaque*: every
column rule applies to it. COPY TO rows (text or CSV format, parsed field by field, NULL
written as the COPY's NULL string) follow the same lineage; binary COPY is refused while a
mask profile is active (:func:`copy_refusal`). ErrorResponse/NoticeResponse fields are
masked as text (the ``null`` strategy writes the redaction marker there), and the detail
of an error about a table is masked under that table's column rules (it may quote a row).
"""

from __future__ import annotations

import re
import struct
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from jitgate.masking import ColumnInfo, Masker, Profile, RowPlan, TypeClass
from jitgate.masking.bytefilter import CLASSES, ByteFilter
from jitgate.masking.masker import ColumnPlan, Detection
from jitgate.masking.scanner import Scanner, row_filter
from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.messages import ProtocolViolation
from jitgate.sql import lineage as sql_lineage
from jitgate.sql.lineage import CopyOptions, Lineage, Output
from jitgate.sql.types import CommandKind, Statement

_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!Bi")
_FIELD = struct.Struct("!IhIhih")  # table oid, attnum, type oid, typlen, typmod, format
_NULL_CELL: Final = b"\xff\xff\xff\xff"

# pg_type OIDs (stable, from pg_type.dat).
TEXT_TYPES = frozenset(
    {
        25,
        1043,
        1042,
        19,
        18,
        114,
        3802,
        142,
        705,
        3614,
        4072,  # text…xml, unknown, tsvector, jsonpath
    }
)
#: json and jsonb: masked so that the document stays valid JSON.
JSON_TYPES = frozenset({114, 3802})
NUMERIC_TYPES = frozenset({20, 21, 23, 26, 700, 701, 1700, 790})
#: Types whose binary format is their text (in the client encoding)…
BINARY_TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705, 114})  # text…name, unknown, json
#: …and those whose binary format is a version byte (1) and then their text.
BINARY_VERSIONED_TYPES = frozenset({3802, 4072})  # jsonb, jsonpath


class Codec(IntEnum):
    """How a cell's bytes are read and written when it is masked."""

    TEXT = 0  # text format (any type): the bytes are the text
    BINARY_TEXT = 1  # binary format, the bytes are the text
    BINARY_VERSIONED = 2  # binary format, a version byte 1 and then the text
    OPAQUE = 3  # binary format of another type: only NULL can replace it


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    table_oid: int
    type_oid: int
    format: int
    attnum: int = 0

    def codec(self, result_format: int | None = None) -> Codec:
        fmt = self.format if result_format is None else result_format
        if fmt == 0:
            return Codec.TEXT
        if self.type_oid in BINARY_TEXT_TYPES:
            return Codec.BINARY_TEXT
        if self.type_oid in BINARY_VERSIONED_TYPES:
            return Codec.BINARY_VERSIONED
        return Codec.OPAQUE

    def type_class(self, result_format: int | None = None) -> TypeClass:
        codec = self.codec(result_format)
        if codec is Codec.OPAQUE:
            return TypeClass.OTHER
        if codec is not Codec.TEXT:
            return TypeClass.JSON if self.type_oid in JSON_TYPES else TypeClass.TEXT
        return type_class_of(self.type_oid)


def type_class_of(type_oid: int | None) -> TypeClass:
    """The class of a text-format value of a type (unknown: text)."""
    if type_oid in JSON_TYPES:
        return TypeClass.JSON
    if type_oid is None or type_oid in TEXT_TYPES:
        return TypeClass.TEXT
    if type_oid in NUMERIC_TYPES:
        return TypeClass.NUMERIC
    return TypeClass.OTHER


def parse_row_description(payload: bytes, encoding: str) -> list[Field]:
    if len(payload) < 2:
        raise ProtocolViolation("truncated RowDescription")
    (count,) = _INT16.unpack_from(payload, 0)
    if count < 0:
        raise ProtocolViolation("invalid RowDescription")
    offset = 2
    fields = []
    for _ in range(count):
        end = payload.find(b"\x00", offset)
        if end < 0 or end + 1 + _FIELD.size > len(payload):
            raise ProtocolViolation("truncated RowDescription")
        name = payload[offset:end].decode(encoding, "replace")
        table_oid, attnum, type_oid, _len, _mod, fmt = _FIELD.unpack_from(payload, end + 1)
        fields.append(Field(name, table_oid, type_oid, fmt, attnum))
        offset = end + 1 + _FIELD.size
    if offset != len(payload):
        raise ProtocolViolation("malformed RowDescription")
    return fields


def result_format_for(formats: Sequence[int], index: int) -> int | None:
    """Bind's result-column format codes: none (all text), one (for all), or one each."""
    if not formats:
        return None
    if len(formats) == 1:
        return formats[0]
    return formats[index] if index < len(formats) else 0


# --------------------------------------------------------------------------- DataRow


@dataclass(frozen=True, slots=True)
class PgPlan:
    """A :class:`RowPlan` plus what the wire needs: the row width and each cell's codec.

    ``filter`` is the byte pre-filter of every detecting column's scanner (``None``: some
    scanner has none, cells are decoded and scanned one by one); ``detect`` has, per
    column, its :class:`ColumnPlan` if it is scanned, and ``whole`` lists the columns a
    column rule replaces whole. ``cache`` keeps what short cells became, per column (see
    :func:`row_masker`): a column of unique values (e-mails) does not push out the
    values that repeat down another.
    """

    rows: RowPlan
    width: int
    codecs: Mapping[int, Codec]
    indexes: tuple[int, ...] = ()
    filter: ByteFilter | None = None
    detect: tuple[ColumnPlan | None, ...] = ()
    whole: tuple[ColumnPlan, ...] = ()
    cache: dict[int, dict[bytes, tuple[bytes | None, Mapping[str, int] | None]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def passthrough(self) -> bool:
        return self.rows.passthrough


def plan(
    masker: Masker,
    fields: Sequence[Field],
    columns: Sequence[ColumnInfo] | None = None,
    result_formats: Sequence[int] = (),
) -> PgPlan:
    """The plan for rows of this shape; ``columns`` carries each column's lineage."""
    infos = []
    codecs = {}
    for index, f in enumerate(fields):
        result_format = result_format_for(result_formats, index)
        kind = f.type_class(result_format)
        codecs[index] = f.codec(result_format)
        base = columns[index] if columns is not None else None
        if base is None:
            infos.append(ColumnInfo(f.name, None, kind))
        else:
            infos.append(ColumnInfo(f.name, None, kind, base.sources, base.opaque))
    rows = masker.plan(infos)
    indexes = rows.indexes
    detect: list[ColumnPlan | None] = [None] * len(fields)
    whole = []
    scanners: dict[int, Scanner] = {}
    for column in rows.masked:
        if isinstance(column.action, Detection):
            detect[column.index] = column
            scanners[id(column.action.scanner)] = column.action.scanner
        else:
            whole.append(column)
    found = None
    if scanners:
        found = row_filter(scanners.values())
        if found is None:
            detect = []  # a scanner without a byte filter: the slow path, cell by cell
    return PgPlan(
        rows,
        len(fields),
        {i: codecs[i] for i in indexes},
        indexes,
        found,
        tuple(detect),
        tuple(whole),
    )


_ESCAPE_BYTES: Final = re.compile(rb"\\(?:u[0-9A-Fa-f]{4}|.)", re.DOTALL)
"""A backslash escape in a row's bytes, as :func:`~jitgate.masking.scanner.unescaped`
blanks them (ASCII, so the same bytes in every ASCII-transparent encoding)."""

_CACHED_CELL: Final = 256
"""Longest cell whose outcome a plan keeps: values repeat down a column (a status, a
customer's address on each of their orders), and the same bytes mask the same way."""
_CACHE_SIZE: Final = 4096
"""Most outcomes a plan keeps per column."""


def _spans(payload: bytes, expected: int | None = None) -> list[tuple[int, int]]:
    """(offset of the value, length or -1) of each cell of a DataRow; strict."""
    size = len(payload)
    if size < 2:
        raise ProtocolViolation("truncated DataRow")
    (count,) = _INT16.unpack_from(payload, 0)
    if count < 0 or (expected is not None and count != expected):
        raise ProtocolViolation(
            f"DataRow has {count} columns, the RowDescription {expected}"
            if expected is not None and count >= 0
            else "invalid DataRow"
        )
    spans: list[tuple[int, int]] = []
    offset = 2
    for _ in range(count):
        if offset + 4 > size:
            raise ProtocolViolation("truncated DataRow")
        (length,) = _INT32.unpack_from(payload, offset)
        offset += 4
        if length < -1:
            raise ProtocolViolation("invalid length in DataRow")
        spans.append((offset, length))
        if length > 0:
            offset += length
            if offset > size:
                raise ProtocolViolation("truncated DataRow")
    if offset != size:
        raise ProtocolViolation("malformed DataRow")
    return spans


def _decode(raw: bytes, codec: Codec, encoding: str) -> str:
    if codec is Codec.BINARY_VERSIONED and raw[:1] == b"\x01":
        raw = raw[1:]
    return raw.decode(encoding, "replace")


def _encode(value: str, codec: Codec, encoding: str) -> bytes:
    raw = value.encode(encoding, "replace")
    if codec is Codec.BINARY_VERSIONED:
        raw = b"\x01" + raw
    return _INT32.pack(len(raw)) + raw


def rewrite_data_row(
    payload: bytes, row_plan: PgPlan, masker: Masker, encoding: str
) -> bytes | None:
    """The DataRow payload with masked cells, or ``None`` when nothing changed."""
    if row_plan.detect and encoding in ASCII_TRANSPARENT:
        return mask_data_row(payload, 0, len(payload), row_plan, masker, encoding, None)
    return _rewrite_each(payload, row_plan, masker, encoding)


def _rewrite_each(payload: bytes, row_plan: PgPlan, masker: Masker, encoding: str) -> bytes | None:
    """:func:`rewrite_data_row` by decoding and scanning every planned cell."""
    spans = _spans(payload, row_plan.width)
    cells: list[str | None] = [None] * len(spans)
    codecs = row_plan.codecs
    for index in row_plan.indexes:
        start, length = spans[index]
        if length >= 0:
            codec = codecs[index]
            if codec is Codec.BINARY_VERSIONED and payload[start : start + 1] != b"\x01":
                codecs = {**codecs, index: Codec.OPAQUE}  # a version we cannot read: NULL
            cells[index] = _decode(payload[start : start + length], codec, encoding)
    changes = masker.row_changes(row_plan.rows, cells)
    if not changes:
        return None
    out = [payload[:2]]
    for index, (start, length) in enumerate(spans):
        if index in changes:
            value = changes[index]
            codec = codecs[index]
            if value is None or codec is Codec.OPAQUE:
                out.append(_NULL_CELL)
            else:
                out.append(_encode(value, codec, encoding))
        elif length < 0:
            out.append(_NULL_CELL)
        else:
            out.append(payload[start - 4 : start + length])
    return b"".join(out)


def _ascii_transparent(codec: str) -> bool:
    """Every ASCII character of a text in ``codec`` is its own single byte, and no other
    byte is an ASCII character or part of one: known for UTF-8 (every byte of a multi-byte
    character is ≥ 0x80), checked for single-byte codecs. Other multi-byte codecs (Shift
    JIS, Big5…) are not: their second bytes may be ASCII letters."""
    if codec == "utf-8":
        return True
    try:
        decoded = bytes(range(256)).decode(codec, "replace")
    except LookupError:
        return False
    return len(decoded) == 256 and all(
        char == chr(byte) if byte < 128 else not char.isascii() for byte, char in enumerate(decoded)
    )


ASCII_TRANSPARENT: Final = frozenset(
    codec for codec in {*m.PYTHON_CODECS.values(), "utf-8"} if _ascii_transparent(codec)
)
"""Client codecs in which a row's raw bytes can be searched with a byte filter."""


RowMasker = Callable[[bytes | bytearray, int, int], bytes | None]
"""Masks one DataRow of a result: ``(buffer, start, end)`` of its payload → the new row, or
``None`` if unchanged (see :func:`row_masker`)."""


def mask_data_row(
    buf: bytes | bytearray,
    start: int,
    end: int,
    row_plan: PgPlan,
    masker: Masker,
    encoding: str,
    code: int | None,
) -> bytes | None:
    """The DataRow whose payload is ``buf[start:end]``, masked; ``None`` if unchanged.

    For a plan with ``detect`` (a byte filter) and an encoding in :data:`ASCII_TRANSPARENT`;
    one row of :func:`row_masker`, which a caller with many rows builds once.
    """
    return row_masker(row_plan, masker, encoding, code)(buf, start, end)


def row_masker(row_plan: PgPlan, masker: Masker, encoding: str, code: int | None) -> RowMasker:
    """The masker of one result's DataRows, for a plan with ``detect`` (a byte filter) and an
    encoding in :data:`ASCII_TRANSPARENT`. With ``code`` a masked row is the whole message
    (type byte and length), else the payload.

    Each row is copied once out of the buffer and walked once (strictly: a malformed row
    is a protocol violation) while its class string is made (see
    :mod:`jitgate.masking.bytefilter`: a space goes where each cell's length ends, in place
    of framing); then the filter is searched over the row, and only the cells it hits (and
    the columns a column rule replaces whole) are decoded and handed to the masker. What
    does not change from row to row — the plan's parts, bound methods, each column's cache,
    the list of where cells start — is looked up here, once per result, not per row: the
    walk is most of what a row costs besides the masker.
    """
    width = row_plan.width
    last = width - 1
    cells = range(width)
    found = row_plan.filter
    detect = row_plan.detect
    classes_search = None
    literal = None
    literals_search = None
    if found is not None:
        if found.classes is not None:
            classes_search = found.classes.search
        literal = found.literal
        if literal is None and found.literals is not None:
            literals_search = found.literals.search
    whole = tuple((column.index, column) for column in row_plan.whole)
    codecs = [row_plan.codecs.get(index, Codec.OPAQUE) for index in cells]
    kept = [row_plan.cache.setdefault(index, {}) for index in cells]
    recount = masker.recount
    unpack_count = _INT16.unpack_from
    unpack = _INT32.unpack_from
    # Where each cell's value starts in the row (the same list for every row: the walk
    # writes all of it); a value ends 4 bytes (its successor's length) before the next one
    # starts, the last one at the row's end. NULL and empty cells start where they end.
    starts = [0] * width

    def mask(buf: bytes | bytearray, start: int, end: int) -> bytes | None:
        row = buf[start:end]
        if row.__class__ is not bytes:
            row = bytes(row)
        size = len(row)
        if size < 2:
            raise ProtocolViolation("truncated DataRow")
        (count,) = unpack_count(row, 0)
        if count != width:
            raise ProtocolViolation(
                f"DataRow has {count} columns, the RowDescription {width}"
                if count >= 0
                else "invalid DataRow"
            )
        offset = 2
        try:  # (a length past the row's end: struct.error, the row is truncated)
            if classes_search is None:
                for index in cells:
                    (length,) = unpack(row, offset)
                    offset += 4
                    starts[index] = offset
                    if length > 0:
                        offset += length
                    elif length < -1:
                        raise ProtocolViolation("invalid length in DataRow")
            else:
                classes = bytearray(row).translate(CLASSES)
                for index in cells:
                    (length,) = unpack(row, offset)
                    offset += 4
                    starts[index] = offset
                    classes[offset - 1] = 32  # a space before the value: nothing precedes it
                    if length > 0:
                        offset += length
                    elif length < -1:
                        raise ProtocolViolation("invalid length in DataRow")
        except struct.error:
            raise ProtocolViolation("truncated DataRow") from None
        if offset != size:
            raise ProtocolViolation("truncated DataRow" if offset > size else "malformed DataRow")
        todo: dict[int, ColumnPlan] = {}
        for index, column in whole:
            if (starts[index + 1] - 4 if index + 1 < width else size) > starts[index]:
                todo[index] = column
        if classes_search is not None:
            _hits(classes_search, classes, starts, detect, todo)
            if row.find(b"\\") >= 0:
                # JSON or log escapes: "x\\n4111…" holds a card the scanner finds once
                # the escape is blanked (see scanner.unescaped); so must the filter.
                view = bytearray(classes)
                for escape in _ESCAPE_BYTES.finditer(row):
                    low, high = escape.span()
                    view[low:high] = b" " * (high - low)
                _hits(classes_search, view, starts, detect, todo)
        if literal is not None:
            at = row.find(literal, 2)  # (as _hits, with bytes.find)
            while at >= 0:
                index = bisect_right(starts, at + 4) - 1
                scanned = detect[index]
                if scanned is not None:
                    todo[index] = scanned
                if index == last:
                    break
                at = row.find(literal, starts[index + 1] - 4)
        elif literals_search is not None:
            _hits(literals_search, row, starts, detect, todo)
        if not todo:
            return None
        # The row rebuilt as its cells are masked, in order: what precedes each new cell
        # (from the end of the one before), the cell; then the rest of the row.
        out: list[bytes] = [b""]  # (the message header, if any)
        length = size
        position = 0
        for index in sorted(todo) if len(todo) > 1 else todo:
            value_start = starts[index]
            value_end = starts[index + 1] - 4 if index + 1 < width else size
            raw = row[value_start:value_end]
            if value_end - value_start > _CACHED_CELL:
                cell = _mask_cell(raw, codecs[index], todo[index], masker, encoding)[0]
            else:
                outcomes = kept[index]
                known = outcomes.get(raw)
                if known is None:
                    known = _mask_cell(raw, codecs[index], todo[index], masker, encoding)
                    if len(outcomes) >= _CACHE_SIZE:
                        outcomes.clear()
                    outcomes[raw] = known
                elif known[1] is not None:
                    recount(known[1])
                cell = known[0]
            if cell is not None:
                out.append(row[position : value_start - 4])
                out.append(cell)
                length += len(cell) - (value_end - value_start + 4)
                position = value_end
        if not position:
            return None  # no cell changed
        out.append(row[position:])
        if code is not None:
            out[0] = _HEADER.pack(code, length + 4)
        return b"".join(out)

    return mask


def _hits(
    search: Callable[[bytes | bytearray, int], re.Match[bytes] | None],
    data: bytes | bytearray,
    starts: list[int],
    detect: tuple[ColumnPlan | None, ...],
    todo: dict[int, ColumnPlan],
) -> None:
    """Add to ``todo`` the scanned cells that ``search`` hits in ``data``, a row (its count
    and cells) or its class string.

    A hit belongs to the cell whose value, or the length before it, holds its start: the
    cell with the last value start at most 4 bytes after it. The search goes on after
    that cell, so each cell is looked at once."""
    last = len(starts) - 1
    position = 2
    while (hit := search(data, position)) is not None:
        index = bisect_right(starts, hit.start() + 4) - 1
        column = detect[index]
        if column is not None:
            todo[index] = column
        if index == last:
            return
        position = starts[index + 1] - 4


def _mask_cell(
    raw: bytes, codec: Codec, column: ColumnPlan, masker: Masker, encoding: str
) -> tuple[bytes | None, Mapping[str, int] | None]:
    """A cell's new bytes (its length first; ``None``: unchanged) and what was masked."""
    if codec is Codec.BINARY_VERSIONED:
        if raw[:1] == b"\x01":
            raw = raw[1:]
        else:
            codec = Codec.OPAQUE  # a version we cannot read: NULL if it needs masking
    new, counts = masker.change(column, raw.decode(encoding, "replace"), candidate=True)
    if counts is None:
        return None, None
    if new is None or codec is Codec.OPAQUE:
        return _NULL_CELL, counts
    return _encode(new, codec, encoding), counts


_UNKNOWN_SHAPE: Final = ColumnInfo("?column?", None, TypeClass.OTHER, (), opaque=True)


def mask_all_text_cells(payload: bytes, masker: Masker, encoding: str) -> bytes | None:
    """A DataRow whose shape is unknown (no RowDescription seen): each cell is read as text
    and, if anything in it needs masking, replaced by NULL — its type and format are not
    known, and NULL is the one value every client decodes. Every column rule applies."""
    spans = _spans(payload)
    out, changed = [payload[:2]], False
    for start, length in spans:
        if length < 0:
            out.append(_NULL_CELL)
            continue
        raw = payload[start : start + length]
        result = masker.mask_text(raw.decode(encoding, "replace"), info=_UNKNOWN_SHAPE)
        if result.changed:
            changed = True
            out.append(_NULL_CELL)
        else:
            out.append(payload[start - 4 : start + length])
    return b"".join(out) if changed else None


# ------------------------------------------------------------------------------ COPY


@dataclass(slots=True)
class CopyPlan:
    """How one COPY … TO STDOUT is masked: its options and each field's column."""

    options: CopyOptions
    columns: tuple[ColumnInfo, ...]
    header_pending: bool = False
    codec: str = "utf-8"


def copy_refusal(statement: Statement | None, lineage: Lineage | None) -> str | None:
    """Why a COPY … TO cannot run while results are masked (None: it can)."""
    if statement is None or statement.kind is not CommandKind.COPY:
        return None
    if statement.copy_direction != "to":
        return None
    copy = lineage.copy if lineage is not None else None
    if copy is None:
        return "the COPY statement could not be read, so its output cannot be masked"
    if copy.format not in ("text", "csv"):
        return (
            f"COPY in {copy.format} format cannot be masked; "
            "use FORMAT text or csv while a mask profile is active"
        )
    return None


def write_refusal(
    statement: Statement, lineage: Lineage, profile: Profile, catalog: ColumnCatalog | None
) -> str | None:
    """Why a statement may not write rows computed from columns masked for this caller
    (None: it may).

    Column rules follow a result's lineage, not its values: ``customers.ssn`` copied into
    another table would come back from there unmasked. So a statement that writes values
    derived from a covered column (:attr:`Lineage.written`) is refused. A table the
    catalog knows is seen as it is (a view as the columns it derives from, a star as its
    columns); any other is judged by its name. Where the values' origin is unknown (an
    unknown function, a write the analysis does not model), every table the statement
    reads that a column rule may cover counts: fail closed. Detector rules follow the
    values themselves, so a profile without column rules refuses nothing here.
    """
    if not statement.tables_copied or not profile.column_rules:
        return None
    into = "a server file" if statement.kind is CommandKind.COPY else "a table"
    pairs: set[SourcePair] = set()
    untraced = lineage.written is None
    for output in lineage.written or ():
        if output.relation is not None:
            pairs |= _written_pairs(sql_lineage.Source(output.relation, "*"), catalog)
        for source in output.sources:
            pairs |= _written_pairs(source, catalog)
        untraced = untraced or output.opaque
    masked = profile.masked_sources(pairs)
    if masked:
        return (
            f"this statement would copy columns that are masked for you ({_pair_names(masked)}) "
            f"into {into}; masking applies to results, not to copies"
        )
    if not untraced:
        return None
    read = {tuple(name.split(".")) for name in statement.tables_copied} | lineage.relations
    covered: set[SourcePair] = set()
    for name in read:
        if profile.masked_sources(_written_pairs(sql_lineage.Source(name, "*"), catalog)):
            covered.add((None, ".".join(name)))
    if not covered:
        return None
    return (
        f"this statement would copy values computed from tables with masked columns "
        f"({_pair_names(covered)}) into {into}, and the gateway cannot tell from which "
        "columns; masking applies to results, not to copies"
    )


def _written_pairs(source: sql_lineage.Source, catalog: ColumnCatalog | None) -> set[SourcePair]:
    """The table columns one source stands for: through the catalog when it knows the
    relation, else as the statement names it (a column known only by position: all)."""
    if not source.relation:
        return {(None, source.column or "*")}
    named: SourcePair = (".".join(source.relation), source.column or "*")
    if catalog is None or catalog.find(source.relation) is None:
        return {named}
    resolved = catalog.source(source, None, 0)
    return {*resolved.sources, named} if resolved.opaque else set(resolved.sources)


def _pair_names(pairs: Iterable[SourcePair]) -> str:
    return ", ".join(
        sorted({column if table is None else f"{table}.{column}" for table, column in pairs})
    )


def parse_copy_out_response(payload: bytes) -> tuple[int, int]:
    """(overall format, number of columns) of a CopyOutResponse."""
    if len(payload) < 3:
        raise ProtocolViolation("truncated CopyOutResponse")
    overall = payload[0]
    (count,) = _INT16.unpack_from(payload, 1)
    if count < 0 or len(payload) != 3 + 2 * count:
        raise ProtocolViolation("malformed CopyOutResponse")
    return overall, count


def copy_plan(
    options: CopyOptions | None,
    count: int,
    columns: Sequence[ColumnInfo] | None,
    client_codec: str,
) -> CopyPlan:
    options = options or CopyOptions()
    codec = m.python_codec(options.encoding) if options.encoding else client_codec
    if columns is None or len(columns) != count:
        columns = [
            ColumnInfo(f"column{i + 1}", None, TypeClass.TEXT, (), True) for i in range(count)
        ]
    return CopyPlan(options, tuple(columns), options.header, codec)


def mask_copy_data(payload: bytes, copy: CopyPlan, masker: Masker) -> bytes | None:
    """A COPY … TO STDOUT message (text or CSV rows) with masked fields, or None."""
    text = payload.decode(copy.codec, "surrogateescape")
    csv = copy.options.format == "csv"
    rows = _csv_rows(text, copy.options) if csv else _text_rows(text)
    out: list[str] = []
    changed = False
    for row, ending in rows:
        if copy.header_pending:
            copy.header_pending = False
            out.append(row + ending)
            continue
        new = _mask_copy_row(row, csv, copy, masker)
        if new is None:
            out.append(row + ending)
        else:
            changed = True
            out.append(new + ending)
    if not changed:
        return None
    return "".join(out).encode(copy.codec, "surrogateescape")


def _mask_copy_row(row: str, csv: bool, copy: CopyPlan, masker: Masker) -> str | None:
    options = copy.options
    raw_fields = _csv_fields(row, options) if csv else _text_fields(row, options.delimiter)
    columns = copy.columns
    if len(raw_fields) != len(columns):  # not the shape we expected: every rule applies
        columns = tuple(_UNKNOWN_COPY for _ in raw_fields)
    changed = False
    pieces: list[str] = []
    for (raw, value), column in zip(raw_fields, columns, strict=True):
        if value is not None and value:
            result = masker.mask_text(value, info=column)
            if result.changed:
                changed = True
                pieces.append(_copy_field(result.value, options, csv))
                continue
        pieces.append(raw)
    return options.delimiter.join(pieces) if changed else None


_UNKNOWN_COPY: Final = ColumnInfo("?column?", None, TypeClass.TEXT, (), opaque=True)


def _text_rows(text: str) -> list[tuple[str, str]]:
    """Text-format rows (newlines inside values are escaped, so a newline ends a row)."""
    lines = text.split("\n")
    rows = [(line, "\n") for line in lines[:-1]]
    if lines[-1]:
        rows.append((lines[-1], ""))
    return rows


def _text_fields(row: str, delimiter: str) -> list[tuple[str, str | None]]:
    """(raw, value) per field of a text-format row; value None is SQL NULL (``\\N``)."""
    fields: list[tuple[str, str | None]] = []
    start = 0
    index = 0
    size = len(row)
    while index < size:
        char = row[index]
        if char == "\\":
            index += 2
            continue
        if char == delimiter:
            fields.append(_text_field(row[start:index]))
            start = index + 1
        index += 1
    fields.append(_text_field(row[start:]))
    return fields


_TEXT_ESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TEXT_UNESCAPES: Final = {
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _text_field(raw: str) -> tuple[str, str | None]:
    if raw == "\\N":
        return raw, None
    if "\\" not in raw:
        return raw, raw
    out: list[str] = []
    index = 0
    size = len(raw)
    while index < size:
        char = raw[index]
        if char != "\\" or index + 1 >= size:
            out.append(char)
            index += 1
            continue
        nxt = raw[index + 1]
        if nxt in _TEXT_ESCAPES:
            out.append(_TEXT_ESCAPES[nxt])
            index += 2
        elif nxt in "01234567":
            digits = raw[index + 1 : index + 4]
            count = 0
            while count < len(digits) and digits[count] in "01234567":
                count += 1
            out.append(chr(int(digits[:count], 8) & 0xFF))
            index += 1 + count
        elif nxt == "x" and index + 2 < size and raw[index + 2] in "0123456789abcdefABCDEF":
            digits = raw[index + 2 : index + 4]
            count = 1 if len(digits) < 2 or digits[1] not in "0123456789abcdefABCDEF" else 2
            out.append(chr(int(digits[:count], 16)))
            index += 2 + count
        else:
            out.append(nxt)
            index += 2
    return raw, "".join(out)


def _copy_field(value: str | None, options: CopyOptions, csv: bool) -> str:
    if value is None:
        return options.null
    if csv:
        quote, escape = options.quote, options.escape
        needs = (
            value == options.null
            or value == "\\."
            or any(c in value for c in (options.delimiter, quote, escape, "\r", "\n"))
        )
        if not needs:
            return value
        body = "".join(escape + c if c in (quote, escape) else c for c in value)
        return quote + body + quote
    out = []
    for char in value:
        escaped = _TEXT_UNESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char == options.delimiter:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _csv_rows(text: str, options: CopyOptions) -> list[tuple[str, str]]:
    """CSV rows; a newline inside a quoted value does not end a row."""
    rows: list[tuple[str, str]] = []
    quote, escape = options.quote, options.escape
    start = 0
    index = 0
    size = len(text)
    quoted = False
    while index < size:
        char = text[index]
        if quoted:
            if (
                char == escape
                and escape != quote
                and index + 1 < size
                and text[index + 1] in (quote, escape)
            ):
                index += 2
                continue
            if char == quote:
                if quote == escape and index + 1 < size and text[index + 1] == quote:
                    index += 2
                    continue
                quoted = False
        elif char == quote:
            quoted = True
        elif char == "\n":
            end = index - 1 if index > start and text[index - 1] == "\r" else index
            rows.append((text[start:end], text[end : index + 1]))
            start = index + 1
        index += 1
    if start < size:
        rows.append((text[start:], ""))
    return rows


def _csv_fields(row: str, options: CopyOptions) -> list[tuple[str, str | None]]:
    """(raw, value) per CSV field; an unquoted field equal to the NULL string is NULL."""
    delimiter, quote, escape = options.delimiter, options.quote, options.escape
    fields: list[tuple[str, str | None]] = []
    index = 0
    size = len(row)
    while True:
        start = index
        value: list[str] = []
        was_quoted = False
        while index < size and row[index] != delimiter:
            char = row[index]
            if char == quote:
                was_quoted = True
                index += 1
                while index < size:
                    char = row[index]
                    if (
                        char == escape
                        and index + 1 < size
                        and row[index + 1] in (quote, escape)
                        and (escape != quote or row[index + 1] == quote)
                    ):
                        value.append(row[index + 1])
                        index += 2
                        continue
                    if char == quote:
                        index += 1
                        break
                    value.append(char)
                    index += 1
                continue
            value.append(char)
            index += 1
        raw = row[start:index]
        text = "".join(value)
        fields.append((raw, None if not was_quoted and raw == options.null else text))
        if index >= size:
            break
        index += 1  # the delimiter
    return fields


# --------------------------------------------------------------------- error fields

_MASKED_FIELDS = ("M", "D", "H", "W", "q")


def mask_error_fields(
    payload: bytes,
    masker: Masker,
    encoding: str,
    table_scope: Callable[[str | None, str], ColumnInfo | None] | None = None,
) -> dict[str, str] | None:
    """ErrorResponse/NoticeResponse fields with row values masked (``Key (email)=(…)``).

    Error text cannot hold SQL NULL: the ``null`` strategy writes the redaction marker.
    When the error names a table (field ``t``), ``table_scope(schema, table)`` says what
    its columns are, and the detail — which may quote a row of it (``Failing row contains
    (…)``) — is masked under that table's column rules too.
    """
    fields = m.parse_error_fields(payload, encoding)
    scope: ColumnInfo | None = None
    table = fields.get("t")
    if table and table_scope is not None and masker.needs_lineage:
        scope = table_scope(fields.get("s"), table)
    changed = False
    for code in _MASKED_FIELDS:
        value = fields.get(code)
        if value:
            result = masker.mask_text(value, info=scope if code == "D" else None, nullable=False)
            if result.changed and result.value is not None:
                fields[code] = result.value
                changed = True
    return fields if changed else None


# ------------------------------------------------------------------ column catalog

Name = tuple[str, ...]
SourcePair = tuple[str | None, str]

#: Statements after which the catalog may be stale (names, columns, views, search_path).
_CATALOG_SAFE_KINDS: Final = frozenset(
    {
        CommandKind.SELECT,
        CommandKind.INSERT,
        CommandKind.UPDATE,
        CommandKind.DELETE,
        CommandKind.MERGE,
        CommandKind.COPY,
        CommandKind.SHOW,
        CommandKind.EXPLAIN,
        CommandKind.EMPTY,
        CommandKind.CURSOR,
        CommandKind.PREPARE,
        CommandKind.EXECUTE,
        CommandKind.DEALLOCATE,
        CommandKind.LISTEN,
        CommandKind.NOTIFY,
        CommandKind.LOCK,
        CommandKind.TRANSACTION,
    }
)


def changes_catalog(statement: Statement) -> bool:
    """Whether, after this statement, names may resolve differently (fail closed)."""
    if statement.kind not in _CATALOG_SAFE_KINDS:
        return True
    if statement.kind is CommandKind.TRANSACTION:
        return statement.tag == "ROLLBACK"
    return "set_config" in statement.functions


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where one result column comes from, resolved through the catalog."""

    sources: frozenset[SourcePair]
    opaque: bool = False
    type_oid: int | None = None


_OPAQUE: Final = Resolved(frozenset(), True)
_MAX_VIEW_DEPTH: Final = 8


@dataclass(slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str
    view_sql: str | None = None
    columns: dict[int, tuple[str, int]] = field(default_factory=dict)  # attnum → name, type
    ancestors: list[str] = field(default_factory=list)
    depends: set[int] = field(default_factory=set)
    fetched: float = 0.0
    _view: tuple[Resolved, ...] | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_view(self) -> bool:
        return self.kind in ("v", "m")

    def ordered(self) -> list[tuple[str, int]]:
        return [self.columns[attnum] for attnum in sorted(self.columns)]

    def column_pairs(self, column: str) -> frozenset[SourcePair]:
        return frozenset({(self.qualified, column), *((a, column) for a in self.ancestors)})


@dataclass(slots=True)
class CatalogLookup:
    """One look-up in flight: the names asked for and the rows read so far."""

    names: tuple[Name, ...]
    generation: int
    statement: bytes
    rows: list[list[str | None]] = field(default_factory=list)
    error: str | None = None
    overflow: bool = False


_LOOKUP_SQL: Final = """\
WITH RECURSIVE req(name, rel) AS (
  SELECT n, pg_catalog.to_regclass(n)::pg_catalog.oid
  FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n
), rels(rel, depth) AS (
  SELECT rel, 0 FROM req WHERE rel IS NOT NULL
  UNION
  SELECT d.refobjid, r.depth + 1
  FROM rels AS r
  JOIN pg_catalog.pg_rewrite AS w ON w.ev_class = r.rel
  JOIN pg_catalog.pg_depend AS d
    ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = w.oid
   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.rel
  WHERE r.depth < 8
), wanted AS (
  SELECT DISTINCT rel FROM rels
), parents(rel, parent, depth) AS (
  SELECT i.inhrelid, i.inhparent, 1
  FROM pg_catalog.pg_inherits AS i JOIN wanted AS w ON w.rel = i.inhrelid
  UNION
  SELECT p.rel, i.inhparent, p.depth + 1
  FROM parents AS p JOIN pg_catalog.pg_inherits AS i ON i.inhrelid = p.parent
  WHERE p.depth < 8
)
SELECT 'r'::pg_catalog.text, q.name, c.oid::pg_catalog.text, n.nspname::pg_catalog.text,
       c.relname::pg_catalog.text, c.relkind::pg_catalog.text,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM wanted AS w
JOIN pg_catalog.pg_class AS c ON c.oid = w.rel
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN req AS q ON q.rel = c.oid
UNION ALL
SELECT 'a', NULL, a.attrelid::pg_catalog.text, a.attnum::pg_catalog.text,
       a.attname::pg_catalog.text, a.atttypid::pg_catalog.text, NULL
FROM pg_catalog.pg_attribute AS a JOIN wanted AS w ON w.rel = a.attrelid
WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'd', NULL, x.ev_class::pg_catalog.text, d.refobjid::pg_catalog.text, NULL, NULL, NULL
FROM wanted AS w
JOIN pg_catalog.pg_rewrite AS x ON x.ev_class = w.rel
JOIN pg_catalog.pg_depend AS d
  ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = x.oid
 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> x.ev_class
UNION ALL
SELECT 'p', NULL, p.rel::pg_catalog.text, n.nspname::pg_catalog.text,
       c.relname::pg_catalog.text, NULL, NULL
FROM (SELECT DISTINCT rel, parent FROM parents) AS p
JOIN pg_catalog.pg_class AS c ON c.oid = p.parent
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
UNION ALL
SELECT 'n', q.name, NULL, NULL, NULL, NULL, NULL FROM req AS q WHERE q.rel IS NULL
"""

_TEXT_ARRAY_OID: Final = 1009


def quote_name(parts: Name) -> str:
    """``("public", "Customers")`` → ``"public"."Customers"`` (what to_regclass reads)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def _array_literal(items: Iterable[str]) -> str:
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def lookup_messages(lookup: CatalogLookup, encoding: str) -> bytes:
    """Parse, Bind, Execute, Close (portal and statement), Sync: the look-up, on its own."""
    name = lookup.statement
    value = _array_literal(quote_name(n) for n in lookup.names).encode(encoding, "replace")
    parse = m.build_parse(name, _LOOKUP_SQL.encode("ascii"), (_TEXT_ARRAY_OID,))
    bind = m.message(
        m.BIND,
        name + b"\x00" + name + b"\x00"
        + struct.pack("!hhhi", 1, 0, 1, len(value)) + value
        + struct.pack("!hh", 1, 0),
    )  # fmt: skip
    execute = m.message(m.EXECUTE, name + b"\x00" + struct.pack("!i", 0))
    close_portal = m.message(m.CLOSE, b"P" + name + b"\x00")
    close_statement = m.message(m.CLOSE, b"S" + name + b"\x00")
    return parse + bind + execute + close_portal + close_statement + m.message(m.SYNC)


def data_row_texts(payload: bytes, encoding: str) -> list[str | None]:
    return [
        None if length < 0 else payload[start : start + length].decode(encoding, "replace")
        for start, length in _spans(payload)
    ]


class ColumnCatalog:
    """Per session: relations by OID and by the names statements used, from look-ups.

    ``generation`` counts invalidations; an execution may use the catalog only if no
    invalidation happened since it was sent. Sans-IO: the clock is injectable.
    """

    ttl: float = 60.0
    max_relations: int = 2048
    max_names_per_lookup: int = 64
    max_rows_per_lookup: int = 20000

    def __init__(self, clock: Callable[[], float] = time.monotonic, nonce: str = "0") -> None:
        self._clock = clock
        self._nonce = nonce
        self.lookups = 0  # look-ups sent and not yet answered
        self.generation = 0
        self._relations: dict[int, Relation] = {}
        self._names: dict[Name, tuple[tuple[int, ...], float]] = {}
        self._in_flight: set[Name] = set()  # asked for by a look-up not yet answered
        self._lookups = 0

    # -- look-ups ---------------------------------------------------------------------

    def invalidate(self) -> None:
        if self._relations or self._names:
            self._relations.clear()
            self._names.clear()
        self._in_flight.clear()
        self.generation += 1

    def wanted(self, names: Iterable[Name]) -> list[Name]:
        """The names that need a look-up (never looked up, or looked up too long ago)."""
        now = self._clock()
        out = []
        for name in names:
            if not name or len(name) > 2 or not all(name):
                continue  # catalog.schema.table and odd names: never resolved (opaque)
            known = self._names.get(name)
            if (known is None or now - known[1] > self.ttl) and name not in self._in_flight:
                out.append(name)
        return sorted(set(out))[: self.max_names_per_lookup]

    def start_lookup(self, names: Sequence[Name]) -> CatalogLookup:
        self._lookups += 1
        self.lookups += 1
        self._in_flight.update(names)
        statement = f"jitgate_columns_{self._nonce}_{self._lookups}".encode("ascii")
        return CatalogLookup(tuple(names), self.generation, statement)

    def add_row(self, lookup: CatalogLookup, payload: bytes, encoding: str) -> None:
        if len(lookup.rows) >= self.max_rows_per_lookup:
            lookup.overflow = True
            return
        row = data_row_texts(payload, encoding)
        if len(row) != 7:
            raise ProtocolViolation("unexpected row in the column look-up")
        lookup.rows.append(row)

    def finish(self, lookup: CatalogLookup) -> None:
        """Apply a completed look-up (dropped if the catalog was invalidated meanwhile)."""
        self.lookups -= 1
        if lookup.generation != self.generation:
            return
        self._in_flight.difference_update(lookup.names)
        now = self._clock()
        if lookup.error is not None or lookup.overflow:
            for failed in lookup.names:  # unknown (opaque) until the TTL: no retry each time
                self._names[failed] = ((), now)
            return
        relations: dict[int, Relation] = {}
        requested: dict[str, list[int]] = {}
        missing: list[str] = []
        rows = lookup.rows
        for row in rows:
            kind, name, oid_text, a, b, c, d = row
            if kind == "r" and oid_text and a is not None and b is not None and c:
                oid = int(oid_text)
                relations.setdefault(oid, Relation(oid, a, b, c, d, fetched=now))
                if name is not None:
                    requested.setdefault(name, []).append(oid)
            elif kind == "n" and name is not None:
                missing.append(name)
        for row in rows:
            kind, _name, oid_text, a, b, c, _d = row
            relation = relations.get(int(oid_text)) if oid_text else None
            if relation is None:
                continue
            if kind == "a" and a and b is not None and c:
                relation.columns[int(a)] = (b, int(c))
            elif kind == "d" and a:
                relation.depends.add(int(a))
            elif kind == "p" and a is not None and b is not None:
                relation.ancestors.append(f"{a}.{b}")
        if len(self._relations) + len(relations) > self.max_relations:
            self._relations.clear()
            self._names.clear()
        self._relations.update(relations)
        by_text = {quote_name(n): n for n in lookup.names}
        for text, oids in requested.items():
            asked = by_text.get(text)
            if asked is not None:
                self._names[asked] = (tuple(sorted(set(oids))), now)
        for text in missing:
            asked = by_text.get(text)
            if asked is not None:
                self._names[asked] = ((), now)

    # -- resolution -------------------------------------------------------------------

    def relation(self, oid: int) -> Relation | None:
        return self._relations.get(oid)

    def find(self, name: Name, within: set[int] | None = None) -> Relation | None:
        """The relation a name (as a statement wrote it) stands for; None if unknown."""
        if within is None:
            known = self._names.get(name)
            if known is None or len(known[0]) != 1:
                return None
            return self._relations.get(known[0][0])
        candidates = [self._relations[o] for o in within if o in self._relations]
        if len(name) == 1:
            found = [r for r in candidates if r.name == name[0]]
        else:
            found = [r for r in candidates if (r.schema, r.name) == name[-2:]]
        return found[0] if len(found) == 1 else None

    def find_qualified(self, schema: str | None, table: str) -> Relation | None:
        found = [
            r
            for r in self._relations.values()
            if r.name == table and (schema is None or r.schema == schema)
        ]
        return found[0] if len(found) == 1 else None

    def origin(self, oid: int, attnum: int) -> Resolved | None:
        """A RowDescription's (table OID, attribute number), resolved (None: unknown)."""
        relation = self._relations.get(oid)
        if relation is None:
            return None
        column = relation.columns.get(attnum)
        if column is None:
            return None  # a system column, or a column added since the look-up
        if relation.is_view:
            view = self.view_columns(relation, 0)
            position = sorted(relation.columns).index(attnum)
            if view is None or position >= len(view):
                return _OPAQUE
            resolved = view[position]
            return Resolved(resolved.sources, resolved.opaque, column[1])
        return Resolved(relation.column_pairs(column[0]), False, column[1])

    def view_columns(self, relation: Relation, depth: int) -> tuple[Resolved, ...] | None:
        if relation._view is not None:
            return relation._view
        if depth > _MAX_VIEW_DEPTH or relation.view_sql is None:
            return None
        lineage = sql_lineage.result_lineage(relation.view_sql.strip().rstrip(";"))
        if lineage.outputs is None:
            return None
        columns = self.columns(lineage.outputs, len(relation.columns), relation.depends, depth + 1)
        if columns is None:
            return None
        relation._view = tuple(columns)
        return relation._view

    def source(self, source: sql_lineage.Source, within: set[int] | None, depth: int) -> Resolved:
        if not source.relation:
            return Resolved(frozenset({(None, source.column)}))
        relation = self.find(source.relation, within)
        if relation is None:
            return Resolved(frozenset({(".".join(source.relation), source.column or "*")}), True)
        ordered = relation.ordered()
        if relation.is_view:
            view = self.view_columns(relation, depth)
            if view is None:
                return Resolved(frozenset({(relation.qualified, "*")}), True)
            if source.column == "*":
                return _merge(view)
            index = _column_index(ordered, source)
            if index is None or index >= len(view):
                return Resolved(frozenset({(relation.qualified, source.column)}), True)
            return Resolved(view[index].sources, view[index].opaque, ordered[index][1])
        if source.column == "*":
            pairs: set[SourcePair] = set()
            for name, _type in ordered:
                pairs |= relation.column_pairs(name)
            return Resolved(frozenset(pairs or {(relation.qualified, "*")}))
        index = _column_index(ordered, source)
        if index is None:
            return Resolved(relation.column_pairs(source.column or "*"))
        name, type_oid = ordered[index]
        return Resolved(relation.column_pairs(name), False, type_oid)

    def output(self, output: Output, within: set[int] | None, depth: int) -> Resolved:
        pieces = [self.source(s, within, depth) for s in output.sources]
        merged = _merge(pieces)
        type_oid = pieces[0].type_oid if output.direct and len(pieces) == 1 else None
        return Resolved(merged.sources, merged.opaque or output.opaque, type_oid)

    def columns(
        self,
        outputs: Sequence[Output],
        count: int | None,
        within: set[int] | None = None,
        depth: int = 0,
    ) -> list[Resolved] | None:
        """One :class:`Resolved` per result column, or None if the shape cannot be mapped."""
        segments: list[list[Resolved] | Resolved] = []  # a Resolved alone: unknown width
        for output in outputs:
            if output.width == 1:
                segments.append([self.output(output, within, depth)])
            elif output.relation is not None:
                relation = self.find(output.relation, within)
                if relation is None:
                    pair = (".".join(output.relation), "*")
                    segments.append(Resolved(frozenset({pair}), True))
                elif relation.is_view:
                    view = self.view_columns(relation, depth)
                    if view is None:
                        segments.append(Resolved(frozenset({(relation.qualified, "*")}), True))
                    else:
                        types = [t for _n, t in relation.ordered()]
                        segments.append(
                            [Resolved(v.sources, v.opaque, types[i]) for i, v in enumerate(view)]
                        )
                else:
                    segments.append(
                        [
                            Resolved(relation.column_pairs(n), False, t)
                            for n, t in relation.ordered()
                        ]
                    )
            else:
                sources = [self.source(s, within, depth) for s in output.sources]
                merged = _merge(sources)
                segments.append(Resolved(merged.sources, merged.opaque or output.opaque))
        return _map_segments(segments, count)


def _column_index(ordered: Sequence[tuple[str, int]], source: sql_lineage.Source) -> int | None:
    if source.position:
        return source.position - 1 if source.position <= len(ordered) else None
    for index, (name, _type) in enumerate(ordered):
        if name == source.column:
            return index
    return None


def _merge(pieces: Iterable[Resolved]) -> Resolved:
    sources: set[SourcePair] = set()
    opaque = False
    for piece in pieces:
        sources |= piece.sources
        opaque = opaque or piece.opaque
    return Resolved(frozenset(sources), opaque)


def _map_segments(
    segments: Sequence[list[Resolved] | Resolved], count: int | None
) -> list[Resolved] | None:
    """Known stretches map one to one from both ends; what is between them shares all."""
    unknown = [i for i, s in enumerate(segments) if isinstance(s, Resolved)]
    if not unknown:
        flat = [r for s in segments for r in s]  # type: ignore[union-attr]
        return flat if count is None or len(flat) == count else None
    if count is None:
        return None
    first, last = unknown[0], unknown[-1]
    prefix = [r for s in segments[:first] for r in s]  # type: ignore[union-attr]
    suffix = [r for s in segments[last + 1 :] for r in s]  # type: ignore[union-attr]
    middle = count - len(prefix) - len(suffix)
    if middle < 0:
        return None
    pieces: list[Resolved] = []
    for segment in segments[first : last + 1]:
        pieces.extend([segment] if isinstance(segment, Resolved) else segment)
    shared = _merge(pieces)
    return [*prefix, *([shared] * middle), *suffix]


def describe_columns(
    fields: Sequence[Field], lineage: Lineage | None, catalog: ColumnCatalog | None
) -> list[ColumnInfo]:
    """Each result column's lineage, from the RowDescription and the statement."""
    mapped: list[Resolved] | None = None
    if lineage is not None and lineage.outputs is not None and catalog is not None:
        mapped = catalog.columns(lineage.outputs, len(fields))
    elif lineage is not None and lineage.outputs is not None:
        mapped = ColumnCatalog().columns(lineage.outputs, len(fields))  # all relations opaque
    infos = []
    for index, f in enumerate(fields):
        lineage_column = mapped[index] if mapped is not None else None
        sources: set[SourcePair] = set()
        if f.table_oid:
            origin = catalog.origin(f.table_oid, f.attnum) if catalog is not None else None
            if origin is None:
                opaque = True  # a column of a relation we could not look up: a view?
            else:
                sources |= origin.sources
                opaque = origin.opaque
            if lineage_column is not None:
                sources |= lineage_column.sources
        elif lineage_column is not None:
            sources |= lineage_column.sources
            opaque = lineage_column.opaque
        else:
            opaque = True
        infos.append(
            ColumnInfo(f.name, None, TypeClass.TEXT, tuple(sorted(sources, key=str)), opaque)
        )
    return infos


def describe_copy_columns(
    lineage: Lineage | None, count: int, catalog: ColumnCatalog | None
) -> list[ColumnInfo] | None:
    if lineage is None or lineage.outputs is None:
        return None
    mapped = (catalog or ColumnCatalog()).columns(lineage.outputs, count)
    if mapped is None:
        return None
    names = _output_names(lineage.outputs, count)
    return [
        ColumnInfo(
            names[i],
            None,
            type_class_of(column.type_oid),
            tuple(sorted(column.sources, key=str)),
            column.opaque,
        )
        for i, column in enumerate(mapped)
    ]


def _output_names(outputs: Sequence[Output], count: int) -> list[str]:
    names = [o.name or f"column{i + 1}" for i, o in enumerate(outputs) if o.width == 1]
    if len(names) == count:
        return names
    return [f"column{i + 1}" for i in range(count)]


def table_scope(
    catalog: ColumnCatalog | None,
) -> Callable[[str | None, str], ColumnInfo | None]:
    """For an error about ``schema.table``: a column standing for all of that table's
    columns (unknown table: opaque, every rule applies)."""

    def scope(schema: str | None, table: str) -> ColumnInfo:
        relation = catalog.find_qualified(schema, table) if catalog is not None else None
        if relation is None:
            return ColumnInfo("detail", None, TypeClass.TEXT, (), opaque=True)
        pairs: set[SourcePair] = set()
        for name, _type in relation.ordered():
            pairs |= relation.column_pairs(name)
        if relation.is_view:
            return ColumnInfo("detail", None, TypeClass.TEXT, (), opaque=True)
        return ColumnInfo("detail", None, TypeClass.TEXT, tuple(sorted(pairs, key=str)))

    return scope
