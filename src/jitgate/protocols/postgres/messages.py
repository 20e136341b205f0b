"""PostgreSQL wire protocol v3: message codes, builders and the few parsers we need.

Names follow the protocol documentation ("Message Formats"). Everything here is pure:
bytes in, values out, or values in, bytes out. Parsers raise :class:`ProtocolViolation`
(a *remote* error: the peer sent something invalid) with the SQLSTATE to answer with.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Untyped start-up packets: Int32 length, Int32 code.
PROTOCOL_V3 = 196608  # 3.0
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Frontend (client → server) message types.
QUERY = ord("Q")
PARSE = ord("P")
BIND = ord("B")
DESCRIBE = ord("D")
EXECUTE = ord("E")
CLOSE = ord("C")
SYNC = ord("S")
FLUSH = ord("H")
FUNCTION_CALL = ord("F")
COPY_DATA = ord("d")
COPY_DONE = ord("c")
COPY_FAIL = ord("f")
TERMINATE = ord("X")
PASSWORD = ord("p")  # PasswordMessage, SASLInitialResponse, SASLResponse

# Backend (server → client) message types.
AUTHENTICATION = ord("R")
BACKEND_KEY_DATA = ord("K")
BIND_COMPLETE = ord("2")
CLOSE_COMPLETE = ord("3")
COMMAND_COMPLETE = ord("C")
COPY_IN_RESPONSE = ord("G")
COPY_OUT_RESPONSE = ord("H")
COPY_BOTH_RESPONSE = ord("W")
DATA_ROW = ord("D")
EMPTY_QUERY_RESPONSE = ord("I")
ERROR_RESPONSE = ord("E")
FUNCTION_CALL_RESPONSE = ord("V")
NEGOTIATE_PROTOCOL_VERSION = ord("v")
NO_DATA = ord("n")
NOTICE_RESPONSE = ord("N")
NOTIFICATION_RESPONSE = ord("A")
PARAMETER_DESCRIPTION = ord("t")
PARAMETER_STATUS = ord("S")
PARSE_COMPLETE = ord("1")
PORTAL_SUSPENDED = ord("s")
READY_FOR_QUERY = ord("Z")
ROW_DESCRIPTION = ord("T")

# Authentication request codes (payload of 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# Transaction status in ReadyForQuery.
IDLE = ord("I")
IN_TRANSACTION = ord("T")
FAILED_TRANSACTION = ord("E")

_HEADER = struct.Struct("!cI")
_INT32 = struct.Struct("!I")
_INT32_PAIR = struct.Struct("!II")
_TRIPLE = struct.Struct("!III")


class ProtocolViolation(Exception):
    """The peer broke the protocol. ``sqlstate`` is what to answer with (08P01 mostly)."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


# --------------------------------------------------------------------- builders


def message(code: int, payload: bytes = b"") -> bytes:
    return bytes((code,)) + _INT32.pack(len(payload) + 4) + payload


def cstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def authentication(code: int, extra: bytes = b"") -> bytes:
    return message(AUTHENTICATION, _INT32.pack(code) + extra)


def authentication_ok() -> bytes:
    return authentication(AUTH_OK)


def authentication_cleartext() -> bytes:
    return authentication(AUTH_CLEARTEXT)


def parameter_status(name: str, value: str) -> bytes:
    return message(PARAMETER_STATUS, cstring(name) + cstring(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(BACKEND_KEY_DATA, _INT32_PAIR.pack(pid, secret))


def ready_for_query(status: int = IDLE) -> bytes:
    return message(READY_FOR_QUERY, bytes((status,)))


def password_message(password: str) -> bytes:
    return message(PASSWORD, cstring(password))


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(PASSWORD, cstring(mechanism) + _INT32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(PASSWORD, data)


def startup_message(params: Mapping[str, str], version: int = PROTOCOL_V3) -> bytes:
    body = _INT32.pack(version)
    for key, value in params.items():
        body += cstring(key) + cstring(value)
    body += b"\x00"
    return _INT32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _INT32_PAIR.pack(8, SSL_REQUEST)


def cancel_request(pid: int, secret: int) -> bytes:
    return _INT32.pack(16) + _TRIPLE.pack(CANCEL_REQUEST, pid, secret)


def query(text: str) -> bytes:
    return message(QUERY, cstring(text))


def terminate() -> bytes:
    return message(TERMINATE)


def negotiate_protocol_version(minor: int, unrecognized: Iterable[str]) -> bytes:
    names = list(unrecognized)
    payload = _INT32.pack(minor) + _INT32.pack(len(names))
    for name in names:
        payload += cstring(name)
    return message(NEGOTIATE_PROTOCOL_VERSION, payload)


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """Fields of ErrorResponse / NoticeResponse, by their one-letter codes."""

    severity: str
    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None

    def encode(self, code: int = ERROR_RESPONSE) -> bytes:
        parts = [
            b"S" + cstring(self.severity),
            b"V" + cstring(self.severity),
            b"C" + cstring(self.sqlstate),
            b"M" + cstring(self.message),
        ]
        if self.detail:
            parts.append(b"D" + cstring(self.detail))
        if self.hint:
            parts.append(b"H" + cstring(self.hint))
        return message(code, b"".join(parts) + b"\x00")


def error_response(
    sqlstate: str,
    text: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return ErrorFields(severity, sqlstate, text, detail, hint).encode(ERROR_RESPONSE)


def notice_response(
    text: str,
    *,
    severity: str = "NOTICE",
    sqlstate: str = "00000",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return ErrorFields(severity, sqlstate, text, detail, hint).encode(NOTICE_RESPONSE)


# ---------------------------------------------------------------------- parsers


def read_cstring(buf: bytes | memoryview, offset: int) -> tuple[str, int]:
    """Decode the NUL-terminated string at ``offset``; return it and the next offset."""
    raw = bytes(buf[offset:]) if isinstance(buf, memoryview) else buf
    start = 0 if isinstance(buf, memoryview) else offset
    end = raw.find(b"\x00", start)
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    try:
        text = raw[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid UTF-8 in message", "22021") from None
    consumed = end + 1 - start
    return text, offset + consumed


def parse_startup_params(body: bytes) -> dict[str, str]:
    """Parameters of a StartupMessage, ``body`` starting after the version field."""
    params: dict[str, str] = {}
    offset = 0
    while True:
        if offset >= len(body):
            raise ProtocolViolation("startup packet is not terminated")
        if body[offset] == 0:
            break
        key, offset = read_cstring(body, offset)
        value, offset = read_cstring(body, offset)
        if key in params:
            raise ProtocolViolation(f"duplicate startup parameter {key!r}")
        params[key] = value
    return params


def parse_error_fields(payload: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse / NoticeResponse payload, keyed by field code letter."""
    fields: dict[str, str] = {}
    offset = 0
    while offset < len(payload) and payload[offset] != 0:
        code = chr(payload[offset])
        end = payload.find(b"\x00", offset + 1)
        if end < 0:
            raise ProtocolViolation("unterminated error field")
        fields[code] = payload[offset + 1 : end].decode("utf-8", "replace")
        offset = end + 1
    return fields


def encode_error_fields(fields: Mapping[str, str], code: int = ERROR_RESPONSE) -> bytes:
    body = b"".join(k.encode("ascii") + cstring(v) for k, v in fields.items())
    return message(code, body + b"\x00")


def parse_query(payload: bytes) -> str:
    text, _ = read_cstring(payload, 0)
    return text


@dataclass(frozen=True, slots=True)
class ParseMessage:
    statement: str
    query: str
    param_types: tuple[int, ...]


def parse_parse(payload: bytes) -> ParseMessage:
    name, offset = read_cstring(payload, 0)
    text, offset = read_cstring(payload, offset)
    if offset + 2 > len(payload):
        raise ProtocolViolation("truncated Parse message")
    (count,) = struct.unpack_from("!H", payload, offset)
    offset += 2
    if offset + 4 * count > len(payload):
        raise ProtocolViolation("truncated Parse message")
    types = struct.unpack_from(f"!{count}I", payload, offset) if count else ()
    return ParseMessage(name, text, tuple(types))


def build_parse(statement: str, text: str, param_types: tuple[int, ...] = ()) -> bytes:
    payload = (
        cstring(statement)
        + cstring(text)
        + struct.pack(f"!H{len(param_types)}I", len(param_types), *param_types)
    )
    return message(PARSE, payload)


def parse_bind_names(payload: bytes) -> tuple[str, str]:
    """Portal and statement names of a Bind message (the rest is left alone)."""
    portal, offset = read_cstring(payload, 0)
    statement, _ = read_cstring(payload, offset)
    return portal, statement


def parse_name(payload: bytes, offset: int = 0) -> str:
    name, _ = read_cstring(payload, offset)
    return name


def command_tag_rows(tag: str) -> int | None:
    """Rows affected/returned from a CommandComplete tag (``INSERT 0 5`` → 5)."""
    head, _, tail = tag.rpartition(" ")
    if not head or not tail.isdigit():
        return None
    return int(tail)
