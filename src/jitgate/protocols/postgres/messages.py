"""PostgreSQL wire protocol v3: message codes, builders and the few parsers we need.

Names follow the protocol documentation ("Message Formats"). Everything here is pure:
bytes in, values out, or values in, bytes out. Parsers raise :class:`ProtocolViolation`
(a *remote* error: the peer sent something invalid) with the SQLSTATE to answer with.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


#: Python codecs for the client encodings PostgreSQL reports in ``client_encoding``.
#: SQL_ASCII means "bytes, unchecked": Latin-1 maps every byte and round-trips exactly.
#: An encoding missing here (EUC_TW, MULE_INTERNAL) is ASCII-safe — no byte of a multibyte
#: character is below 0x80 — so Latin-1 also preserves quotes, semicolons and keywords.
PYTHON_CODECS = {
    "UTF8": "utf-8", "SQL_ASCII": "latin-1",
    "LATIN1": "latin-1", "LATIN2": "iso8859-2", "LATIN3": "iso8859-3", "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9", "LATIN6": "iso8859-10", "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14", "LATIN9": "iso8859-15", "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8", "KOI8R": "koi8-r", "KOI8U": "koi8-u",
    "WIN866": "cp866", "WIN874": "cp874", "WIN1250": "cp1250", "WIN1251": "cp1251",
    "WIN1252": "cp1252", "WIN1253": "cp1253", "WIN1254": "cp1254", "WIN1255": "cp1255",
    "WIN1256": "cp1256", "WIN1257": "cp1257", "WIN1258": "cp1258",
    "EUC_JP": "euc_jp", "EUC_JIS_2004": "euc_jis_2004", "EUC_KR": "euc_kr", "EUC_CN": "gb2312",
    "SJIS": "shift_jis", "SHIFT_JIS_2004": "shift_jis_2004", "BIG5": "big5", "GBK": "gbk",
    "GB18030": "gb18030", "UHC": "cp949", "JOHAB": "johab",
}  # fmt: skip


def python_codec(client_encoding: str) -> str:
    """The Python codec for a PostgreSQL client encoding name."""
    return PYTHON_CODECS.get(client_encoding.upper().replace("-", "_"), "latin-1")


class ProtocolViolation(Exception):
    """The peer broke the protocol. ``sqlstate`` is what to answer with (08P01 mostly)."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


# --------------------------------------------------------------------- builders


def message(code: int, payload: bytes = b"") -> bytes:
    return bytes((code,)) + _INT32.pack(len(payload) + 4) + payload


def cstring(text: str, encoding: str = "utf-8") -> bytes:
    return text.encode(encoding) + b"\x00"


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


def query(text: str, encoding: str = "utf-8") -> bytes:
    return message(QUERY, cstring(text, encoding))


def terminate() -> bytes:
    return message(TERMINATE)


def negotiate_protocol_version(version: int, unrecognized: Iterable[str]) -> bytes:
    """``version`` is the whole protocol number (3.0 is 196608), as servers and libpq use it."""
    names = list(unrecognized)
    payload = _INT32.pack(version) + _INT32.pack(len(names))
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

    def encode(self, code: int = ERROR_RESPONSE, encoding: str = "utf-8") -> bytes:
        """The message, its texts in the client's encoding (unmappable characters as ``?``)."""

        def text(value: str) -> bytes:
            return value.encode(encoding, "replace") + b"\x00"

        parts = [
            b"S" + text(self.severity),
            b"V" + text(self.severity),
            b"C" + text(self.sqlstate),
            b"M" + text(self.message),
        ]
        if self.detail:
            parts.append(b"D" + text(self.detail))
        if self.hint:
            parts.append(b"H" + text(self.hint))
        return message(code, b"".join(parts) + b"\x00")


def error_response(
    sqlstate: str,
    text: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
    encoding: str = "utf-8",
) -> bytes:
    return ErrorFields(severity, sqlstate, text, detail, hint).encode(ERROR_RESPONSE, encoding)


def notice_response(
    text: str,
    *,
    severity: str = "NOTICE",
    sqlstate: str = "00000",
    detail: str | None = None,
    hint: str | None = None,
    encoding: str = "utf-8",
) -> bytes:
    return ErrorFields(severity, sqlstate, text, detail, hint).encode(NOTICE_RESPONSE, encoding)


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


#: The longest start-up packet accepted (PostgreSQL's MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET = 10_000
#: The longest password / SASL message accepted before authentication (PostgreSQL's
#: PG_MAX_AUTH_TOKEN_LENGTH): a JWT fits, a flood does not.
MAX_AUTH_MESSAGE = 65_535


@dataclass(frozen=True, slots=True)
class StartupPacket:
    """An untyped start-up packet.

    ``code`` is the protocol version of a StartupMessage (``major << 16 | minor``) or the
    code of an SSLRequest, GSSENCRequest or CancelRequest. ``params`` are a
    StartupMessage's parameters; ``cancel_key`` the (pid, secret) of a CancelRequest of
    the right size (None otherwise: such a request is ignored, as PostgreSQL does).
    """

    code: int
    params: Mapping[str, str] = field(default_factory=dict)
    cancel_key: tuple[int, int] | None = None

    @property
    def is_startup(self) -> bool:
        return self.code not in (SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST)


def startup_packet_length(buf: bytes | bytearray) -> int | None:
    """The whole length of the start-up packet ``buf`` begins with; None if fewer than 4
    bytes are there. A length out of bounds is a :class:`ProtocolViolation`."""
    if len(buf) < 4:
        return None
    length: int = _INT32.unpack_from(buf, 0)[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise ProtocolViolation("invalid length of startup packet")
    return length


def parse_startup_packet(packet: bytes) -> StartupPacket:
    """Parse one whole start-up packet (length word included)."""
    if startup_packet_length(packet) != len(packet):
        raise ProtocolViolation("invalid length of startup packet")
    (code,) = _INT32.unpack_from(packet, 4)
    if code == CANCEL_REQUEST:
        if len(packet) != 16:
            return StartupPacket(code)
        pid, secret = _INT32_PAIR.unpack_from(packet, 8)
        return StartupPacket(code, cancel_key=(pid, secret))
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        if len(packet) != 8:
            raise ProtocolViolation("invalid length of startup packet")
        return StartupPacket(code)
    if code >> 16 != 3:  # refused by the caller, naming the version
        return StartupPacket(code)
    return StartupPacket(code, parse_startup_params(packet[8:]))


def parse_error_fields(payload: bytes, encoding: str = "utf-8") -> dict[str, str]:
    """Fields of an ErrorResponse / NoticeResponse payload, keyed by field code letter."""
    fields: dict[str, str] = {}
    offset = 0
    while offset < len(payload) and payload[offset] != 0:
        code = chr(payload[offset])
        end = payload.find(b"\x00", offset + 1)
        if end < 0:
            raise ProtocolViolation("unterminated error field")
        fields[code] = payload[offset + 1 : end].decode(encoding, "replace")
        offset = end + 1
    return fields


def encode_error_fields(
    fields: Mapping[str, str], code: int = ERROR_RESPONSE, encoding: str = "utf-8"
) -> bytes:
    body = b"".join(
        k.encode("ascii") + v.encode(encoding, "replace") + b"\x00" for k, v in fields.items()
    )
    return message(code, body + b"\x00")


def split_cstring(payload: bytes, offset: int = 0) -> tuple[bytes, int]:
    """The raw bytes of the NUL-terminated string at ``offset``, and the next offset.

    SQL text and names arrive in the client's encoding, so the relay decodes them itself.
    """
    end = payload.find(b"\x00", offset)
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    return payload[offset:end], end + 1


def parse_query(payload: bytes) -> bytes:
    """The SQL text of a Query message (raw bytes, in the client encoding)."""
    text, _ = split_cstring(payload)
    return text


@dataclass(frozen=True, slots=True)
class ParseMessage:
    """A Parse message; name and SQL text are raw bytes in the client encoding."""

    statement: bytes
    query: bytes
    param_types: tuple[int, ...]


def parse_parse(payload: bytes) -> ParseMessage:
    name, offset = split_cstring(payload, 0)
    text, offset = split_cstring(payload, offset)
    if offset + 2 > len(payload):
        raise ProtocolViolation("truncated Parse message")
    (count,) = struct.unpack_from("!H", payload, offset)
    offset += 2
    if offset + 4 * count > len(payload):
        raise ProtocolViolation("truncated Parse message")
    types = struct.unpack_from(f"!{count}I", payload, offset) if count else ()
    return ParseMessage(name, text, tuple(types))


def build_parse(statement: bytes, text: bytes, param_types: tuple[int, ...] = ()) -> bytes:
    payload = (
        statement
        + b"\x00"
        + text
        + b"\x00"
        + struct.pack(f"!H{len(param_types)}I", len(param_types), *param_types)
    )
    return message(PARSE, payload)


def command_tag_rows(tag: str) -> int | None:
    """Rows affected/returned from a CommandComplete tag (``INSERT 0 5`` → 5)."""
    head, _, tail = tag.rpartition(" ")
    if not head or not tail.isdigit():
        return None
    return int(tail)
