"""The gateway's side of upstream authentication against servers that misbehave.

A real PostgreSQL never ends SCRAM without its server signature, so a scripted server on
loopback plays one that does (a server impersonating the target): no real part can.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from datetime import UTC, datetime

import pytest

from jitgate.connections.types import (
    ConnectionInfo,
    ConnectionType,
    Credential,
    CredentialKind,
    TLSMode,
)
from jitgate.protocols.postgres.upstream import UpstreamError, connect


def _auth(code: int, extra: bytes = b"") -> bytes:
    body = struct.pack("!I", code) + extra
    return b"R" + struct.pack("!I", len(body) + 4) + body


async def _impostor(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, final: bytes | None
) -> None:
    try:
        await _script(reader, writer, final)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _script(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, final: bytes | None
) -> None:
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    await reader.readexactly(length - 4)  # the startup message
    writer.write(_auth(10, b"SCRAM-SHA-256\x00\x00"))
    header = await reader.readexactly(5)
    client_first = await reader.readexactly(struct.unpack("!I", header[1:])[0] - 4)
    nonce = client_first.split(b"r=", 1)[1].split(b",")[0]
    salt = base64.b64encode(b"0123456789abcdef")
    writer.write(_auth(11, b"r=" + nonce + b"srv,s=" + salt + b",i=4096"))
    header = await reader.readexactly(5)
    await reader.readexactly(struct.unpack("!I", header[1:])[0] - 4)  # client final
    if final is not None:
        writer.write(_auth(12, final))
    writer.write(_auth(0))  # AuthenticationOk, whatever came before
    await writer.drain()
    await reader.read()  # until the gateway hangs up


@pytest.mark.parametrize(
    "final", [None, b"v=" + base64.b64encode(b"x" * 32)], ids=["no-server-final", "wrong-signature"]
)
async def test_scram_without_a_valid_server_signature_is_refused(final: bytes | None) -> None:
    handlers: list[asyncio.Task[None]] = []

    def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.ensure_future(_impostor(r, w, final)))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    now = datetime.now(UTC)
    info = ConnectionInfo(
        id="c",
        name="target",
        type=ConnectionType.POSTGRES,
        host="127.0.0.1",
        port=port,
        database="app",
        username="app",
        tls_mode=TLSMode.DISABLE,
        tls_ca=None,
        tls_server_name=None,
        tags={},
        options={},
        description=None,
        credential_kind=CredentialKind.PASSWORD,
        created_at=now,
        updated_at=now,
    )
    credential = Credential(CredentialKind.PASSWORD, "pw")
    async with server:
        with pytest.raises(UpstreamError) as refused:
            await connect(info, credential, {}, timeout=5, max_message=1 << 20)
        await asyncio.wait_for(asyncio.gather(*handlers), 5)
    assert refused.value.sqlstate == "28000"
    assert "SCRAM" in str(refused.value)
