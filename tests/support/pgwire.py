"""A deliberately small PostgreSQL wire client for tests that real drivers cannot express.

It speaks just enough of protocol 3.0 over a blocking socket to log in with a cleartext
password, send any bytes (malformed, oversized, forged CancelRequests) and read typed
messages back. Everything it builds is written out here, independent of the gateway's
own codec, so a bug there cannot hide itself.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field


def frame(code: bytes, payload: bytes = b"") -> bytes:
    return code + struct.pack("!I", len(payload) + 4) + payload


def startup(params: dict[str, str]) -> bytes:
    body = struct.pack("!I", 196608)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\0")


def parse(sql: str, name: str = "", types: tuple[int, ...] = ()) -> bytes:
    payload = name.encode() + b"\0" + sql.encode() + b"\0"
    payload += struct.pack(f"!H{len(types)}I", len(types), *types)
    return frame(b"P", payload)


def bind(portal: str = "", statement: str = "", params: tuple[bytes | None, ...] = ()) -> bytes:
    payload = portal.encode() + b"\0" + statement.encode() + b"\0"
    payload += struct.pack("!H", 0) + struct.pack("!H", len(params))
    for value in params:
        payload += struct.pack("!i", -1) if value is None else struct.pack("!I", len(value)) + value
    payload += struct.pack("!H", 0)
    return frame(b"B", payload)


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", portal.encode() + b"\0" + struct.pack("!I", max_rows))


def describe(kind: bytes, name: str = "") -> bytes:
    return frame(b"D", kind + name.encode() + b"\0")


def sync() -> bytes:
    return frame(b"S")


def terminate() -> bytes:
    return frame(b"X")


def cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!IIII", 16, 80877102, pid, secret)


def error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


@dataclass
class Message:
    code: bytes
    payload: bytes

    @property
    def fields(self) -> dict[str, str]:
        return error_fields(self.payload)

    @property
    def sqlstate(self) -> str | None:
        return self.fields.get("C") if self.code in (b"E", b"N") else None


@dataclass
class WireClient:
    sock: socket.socket
    pid: int = 0
    secret: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    received: bytearray = field(default_factory=bytearray)  # every byte the client got
    _buf: bytearray = field(default_factory=bytearray)

    @classmethod
    def connect(
        cls, port: int, dbname: str, password: str, *, user: str = "admin", **params: str
    ) -> WireClient:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        client = cls(sock)
        client.send(startup({"user": user, "database": dbname, **params}))
        while True:
            msg = client.read()
            if msg.code == b"R":
                (code,) = struct.unpack_from("!I", msg.payload)
                if code == 3:
                    client.send(frame(b"p", password.encode() + b"\0"))
                elif code != 0:
                    raise AssertionError(f"unexpected authentication request {code}")
            elif msg.code == b"S":
                name, value, _ = msg.payload.split(b"\0", 2)
                client.parameters[name.decode()] = value.decode()
            elif msg.code == b"K":
                client.pid, client.secret = struct.unpack("!II", msg.payload)
            elif msg.code == b"Z":
                return client
            elif msg.code == b"E":
                sock.close()
                raise ConnectionRefusedError(msg.fields)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Message:
        while True:
            if len(self._buf) >= 5:
                (length,) = struct.unpack_from("!I", self._buf, 1)
                if len(self._buf) >= 1 + length:
                    code = bytes(self._buf[:1])
                    payload = bytes(self._buf[5 : 1 + length])
                    del self._buf[: 1 + length]
                    return Message(code, payload)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed")
            self.received += chunk
            self._buf += chunk

    def until_ready(self) -> list[Message]:
        """Messages up to and including ReadyForQuery."""
        out = []
        while True:
            msg = self.read()
            out.append(msg)
            if msg.code == b"Z":
                return out

    def read_all_until_closed(self) -> list[Message]:
        out = []
        try:
            while True:
                out.append(self.read())
        except (ConnectionResetError, OSError):
            return out

    def close(self) -> None:
        self.sock.close()


def send_cancel(port: int, pid: int, secret: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(cancel_request(pid, secret))
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            sock.recv(1)  # the gateway closes the connection when it is done
