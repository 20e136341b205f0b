"""Masking PostgreSQL results on the wire, sans-IO: RowDescription → plan, DataRow → DataRow.

A RowDescription says, per column, its name, the table OID, the type OID and the format
(text or binary). :func:`plan` turns that into a :class:`~jitgate.masking.RowPlan`: column
rules are resolved once per result shape, and a result whose plan is empty passes through
untouched. :func:`rewrite_data_row` decodes only the cells the plan names, asks the masker,
and rebuilds the row with recomputed lengths; the client always gets a value it can decode:

* text-format cells of text-like types (text, varchar, char, name, json, jsonb, xml,
  unknown) get the masked text;
* text-format numeric cells get the masker's numeric fallback (NULL, or zeros);
* anything else — binary format, dates, UUIDs, arrays, types we do not know — becomes NULL
  when it needs masking, which every client can decode.

Which table a column comes from is taken from the statement's classification (the table
it reads, when there is exactly one), so a rule for ``customers.ssn`` applies; the table
OID alone would need a catalog lookup on the upstream. COPY text rows and the message
fields of ErrorResponse/NoticeResponse (which can quote row values) are masked as free text.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from jitgate.masking import ColumnInfo, Masker, RowPlan, TypeClass
from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.messages import ProtocolViolation

_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_FIELD = struct.Struct("!IhIhih")  # table oid, attnum, type oid, typlen, typmod, format

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
NUMERIC_TYPES = frozenset({20, 21, 23, 26, 700, 701, 1700, 790})


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    table_oid: int
    type_oid: int
    format: int

    def type_class(self, result_format: int | None = None) -> TypeClass:
        fmt = self.format if result_format is None else result_format
        if fmt != 0:
            return TypeClass.OTHER
        if self.type_oid in TEXT_TYPES:
            return TypeClass.TEXT
        if self.type_oid in NUMERIC_TYPES:
            return TypeClass.NUMERIC
        return TypeClass.OTHER


def parse_row_description(payload: bytes, encoding: str) -> list[Field]:
    if len(payload) < 2:
        raise ProtocolViolation("truncated RowDescription")
    (count,) = _INT16.unpack_from(payload, 0)
    offset = 2
    fields = []
    for _ in range(count):
        end = payload.find(b"\x00", offset)
        if end < 0 or end + 1 + _FIELD.size > len(payload):
            raise ProtocolViolation("truncated RowDescription")
        name = payload[offset:end].decode(encoding, "replace")
        table_oid, _attnum, type_oid, _len, _mod, fmt = _FIELD.unpack_from(payload, end + 1)
        fields.append(Field(name, table_oid, type_oid, fmt))
        offset = end + 1 + _FIELD.size
    return fields


def result_format_for(formats: Sequence[int], index: int) -> int | None:
    """Bind's result-column format codes: none (all text), one (for all), or one each."""
    if not formats:
        return None
    if len(formats) == 1:
        return formats[0]
    return formats[index] if index < len(formats) else 0


def plan(
    masker: Masker, fields: Sequence[Field], table: str | None, result_formats: Sequence[int] = ()
) -> RowPlan:
    columns = [
        ColumnInfo(
            f.name,
            table if f.table_oid else None,
            f.type_class(result_format_for(result_formats, i)),
        )
        for i, f in enumerate(fields)
    ]
    return masker.plan(columns)


def rewrite_data_row(
    payload: bytes, row_plan: RowPlan, masker: Masker, encoding: str
) -> bytes | None:
    """The DataRow payload with masked cells, or ``None`` when nothing changed."""
    if len(payload) < 2:
        raise ProtocolViolation("truncated DataRow")
    (count,) = _INT16.unpack_from(payload, 0)
    wanted = row_plan.indexes
    spans: list[tuple[int, int]] = []  # (offset of the value, length or -1) per column
    offset = 2
    for _ in range(count):
        (length,) = _INT32.unpack_from(payload, offset)
        offset += 4
        spans.append((offset, length))
        if length > 0:
            offset += length
        if offset > len(payload):
            raise ProtocolViolation("truncated DataRow")
    cells: list[str | None] = [None] * count
    for index in wanted:
        if index < count:
            start, length = spans[index]
            if length >= 0:
                cells[index] = payload[start : start + length].decode(encoding, "replace")
    changes = masker.row_changes(row_plan, cells)
    if not changes:
        return None
    out = [payload[:2]]
    for index, (start, length) in enumerate(spans):
        if index in changes:
            value = changes[index]
            if value is None:
                out.append(b"\xff\xff\xff\xff")
            else:
                raw = value.encode(encoding, "replace")
                out.append(_INT32.pack(len(raw)) + raw)
        elif length < 0:
            out.append(b"\xff\xff\xff\xff")
        else:
            out.append(payload[start - 4 : start + length])
    return b"".join(out)


def mask_all_text_cells(payload: bytes, masker: Masker, encoding: str) -> bytes | None:
    """A DataRow whose shape is unknown: every non-NULL cell is masked as free text."""
    if len(payload) < 2:
        raise ProtocolViolation("truncated DataRow")
    (count,) = _INT16.unpack_from(payload, 0)
    offset, out, changed = 2, [payload[:2]], False
    for _ in range(count):
        (length,) = _INT32.unpack_from(payload, offset)
        offset += 4
        if length < 0:
            out.append(b"\xff\xff\xff\xff")
            continue
        raw = payload[offset : offset + length]
        offset += length
        result = masker.mask_text(raw.decode(encoding, "replace"))
        if result.changed:
            changed = True
            if result.value is None:
                out.append(b"\xff\xff\xff\xff")
                continue
            raw = result.value.encode(encoding, "replace")
        out.append(_INT32.pack(len(raw)) + raw)
    if offset > len(payload):
        raise ProtocolViolation("truncated DataRow")
    return b"".join(out) if changed else None


def mask_copy_data(payload: bytes, masker: Masker, encoding: str) -> bytes | None:
    """A COPY … TO STDOUT row (text or CSV format), masked as free text."""
    text = payload.decode(encoding, "replace")
    result = masker.mask_text(text)
    if not result.changed or result.value is None:
        return None
    return result.value.encode(encoding, "replace")


_MASKED_FIELDS = ("M", "D", "H", "W", "q")


def mask_error_fields(payload: bytes, masker: Masker, encoding: str) -> dict[str, str] | None:
    """ErrorResponse/NoticeResponse fields with row values masked (``Key (email)=(…)``)."""
    fields = m.parse_error_fields(payload, encoding)
    changed = False
    for code in _MASKED_FIELDS:
        value = fields.get(code)
        if value:
            result = masker.mask_text(value)
            if result.changed and result.value is not None:
                fields[code] = result.value
                changed = True
    return fields if changed else None
