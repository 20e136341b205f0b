"""Scripted wire messages and a recording observer for the sans-IO relay tests."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from jitgate.identity.principal import Identity, IdentityKind
from jitgate.policy.builtin import BuiltinPolicy
from jitgate.policy.gate import StatementGate
from jitgate.policy.types import Target
from jitgate.protocols.postgres.relay import Execution, Relay
from jitgate.sql.postgres import PostgresClassifier

CLASSIFIER = PostgresClassifier()


def frame(code: bytes, payload: bytes = b"") -> bytes:
    return code + struct.pack("!I", len(payload) + 4) + payload


def z(text: str | bytes) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\0"


# -- frontend


def Query(sql: str | bytes) -> bytes:
    return frame(b"Q", z(sql))


def Parse(sql: str | bytes, name: str = "", types: tuple[int, ...] = ()) -> bytes:
    return frame(b"P", z(name) + z(sql) + struct.pack(f"!H{len(types)}I", len(types), *types))


def Bind(portal: str = "", statement: str = "", *values: bytes) -> bytes:
    body = z(portal) + z(statement) + struct.pack("!HH", 0, len(values))
    for value in values:
        body += struct.pack("!I", len(value)) + value
    return frame(b"B", body + struct.pack("!H", 0))


def Describe(kind: bytes = b"P", name: str = "") -> bytes:
    return frame(b"D", kind + z(name))


def Execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", z(portal) + struct.pack("!I", max_rows))


def Close(kind: bytes, name: str) -> bytes:
    return frame(b"C", kind + z(name))


def Sync() -> bytes:
    return frame(b"S")


def Flush() -> bytes:
    return frame(b"H")


def CopyData(data: bytes) -> bytes:
    return frame(b"d", data)


def CopyDone() -> bytes:
    return frame(b"c")


def FunctionCall(oid: int, *args: bytes) -> bytes:
    body = struct.pack("!IHH", oid, 0, len(args))
    for arg in args:
        body += struct.pack("!I", len(arg)) + arg
    return frame(b"F", body + struct.pack("!H", 0))


def Terminate() -> bytes:
    return frame(b"X")


# -- backend


def ParseComplete() -> bytes:
    return frame(b"1")


def BindComplete() -> bytes:
    return frame(b"2")


def CloseComplete() -> bytes:
    return frame(b"3")


def NoData() -> bytes:
    return frame(b"n")


def RowDescription(*names: str) -> bytes:
    body = struct.pack("!H", len(names))
    for name in names:
        body += z(name) + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
    return frame(b"T", body)


def DataRow(*values: bytes) -> bytes:
    body = struct.pack("!H", len(values))
    for value in values:
        body += struct.pack("!I", len(value)) + value
    return frame(b"D", body)


def CommandComplete(tag: str) -> bytes:
    return frame(b"C", z(tag))


def EmptyQueryResponse() -> bytes:
    return frame(b"I")


def PortalSuspended() -> bytes:
    return frame(b"s")


def ReadyForQuery(status: bytes = b"I") -> bytes:
    return frame(b"Z", status)


def ErrorResponse(sqlstate: str, message: str | bytes, severity: str = "ERROR") -> bytes:
    body = b"S" + z(severity) + b"V" + z(severity) + b"C" + z(sqlstate) + b"M" + z(message)
    return frame(b"E", body + b"\0")


def NoticeResponse(message: str) -> bytes:
    return frame(b"N", b"SNOTICE\0C00000\0M" + z(message) + b"\0")


def ParameterStatus(name: str, value: str) -> bytes:
    return frame(b"S", z(name) + z(value))


def CopyInResponse() -> bytes:
    return frame(b"G", struct.pack("!bH", 0, 0))


def CopyOutResponse() -> bytes:
    return frame(b"H", struct.pack("!bH", 0, 0))


def FunctionCallResponse(value: bytes) -> bytes:
    return frame(b"V", struct.pack("!I", len(value)) + value)


def messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a byte stream into (type, payload) pairs."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!I", data, pos + 1)
        out.append((data[pos : pos + 1], data[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    return out


def error_fields(payload: bytes) -> dict[str, str]:
    return {p[:1].decode(): p[1:].decode() for p in payload.split(b"\0") if p}


@dataclass
class Recorder:
    """The relay's observer: remembers every execution started and finished."""

    started: list[Execution] = field(default_factory=list)
    finished: list[Execution] = field(default_factory=list)

    def started_(self, execution: Execution) -> None:
        self.started.append(execution)

    def finished_(self, execution: Execution) -> None:
        self.finished.append(execution)

    def summary(self) -> list[tuple[str, str, int | None, str | None]]:
        return [(e.text, e.status, e.rows, e.error[0] if e.error else None) for e in self.finished]


class _Observer:
    def __init__(self, recorder: Recorder) -> None:
        self.started = recorder.started_
        self.finished = recorder.finished_


def make_relay(tags: dict[str, str] | None = None, **kwargs: object) -> tuple[Relay, Recorder]:
    """A relay with the real classifier and the built-in policy on an ``env=prod`` target."""
    recorder = Recorder()
    gate = StatementGate(
        BuiltinPolicy(),
        principal=Identity("id-1", "alice", IdentityKind.USER),
        actor=None,
        target=Target("prod-db", "postgres", tags if tags is not None else {"env": "prod"}),
        client_addr="127.0.0.1",
    )
    relay = Relay(
        classify=CLASSIFIER.classify,
        gate=gate,
        observer=_Observer(recorder),
        **kwargs,  # type: ignore[arg-type]
    )
    return relay, recorder


def denial_marker(forwarded: bytes) -> str:
    """The nonce in the stand-in SQL that the relay sent upstream for a refused statement."""
    start = forwarded.index(b"jitgate-denied-")
    return forwarded[start : forwarded.index(b"'", start)].decode()


def invalid_int(nonce: str) -> bytes:
    """What PostgreSQL answers to the stand-in SQL."""
    return ErrorResponse("22P02", f'invalid input syntax for type integer: "{nonce}"')
