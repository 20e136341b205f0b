"""The two TCP legs of a PostgreSQL session, as asyncio Protocols.

A :class:`Leg` starts in *handshake* mode: bytes are buffered and coroutines await whole
start-up packets or typed messages (every wait has a timeout). Once both handshakes are
done it switches to *relay* mode: ``data_received`` hands bytes straight to a callback
(the relay), with no task switch and no intermediate queue — the hot path. Flow control
couples the legs: when one side's write buffer fills up, the other side stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable
from typing import cast

from jitgate.protocols.postgres import messages as m
from jitgate.protocols.postgres.messages import ProtocolViolation

_HEADER = struct.Struct("!BI")

WRITE_HIGH_WATER = 256 * 1024


class LegClosed(Exception):
    """The peer closed the connection (or it broke) while we waited for it."""


class Leg(asyncio.Protocol):
    def __init__(self, name: str, max_message: int) -> None:
        self.name = name
        self.max_message = max_message
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self.peer: Leg | None = None  # the other leg, for flow control
        self._eof = False
        self.on_connect: Callable[[Leg], None] | None = None
        #: Once set (the session is past its handshake), the peer shutting down its sending
        #: side leaves the leg open for writing (not over TLS, which has no half-close), and
        #: :attr:`on_half_close` is called in relay mode (by :meth:`relay_to` if it came
        #: before).
        self.keeps_open_on_eof = False
        self.on_half_close: Callable[[], None] | None = None

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.on_connect is not None:
            self.on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)
            return
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        if self.keeps_open_on_eof and not self.is_tls:
            if self._on_data is not None and self.on_half_close is not None:
                self.on_half_close()
            return True  # keep the transport open: answers may still go this way
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.resume_reading()

    # --------------------------------------------------------------- handshake

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        if self._eof:
            raise LegClosed(f"{self.name} closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_startup_packet(self) -> bytes:
        """A whole untyped start-up packet (bounded by ``MAX_STARTUP_PACKET``)."""
        while (length := m.startup_packet_length(self.buffer)) is None:
            await self._wait()
        return await self.read_exactly(length)

    async def read_message(self, limit: int | None = None) -> tuple[int, bytes]:
        """A typed message: (type byte, payload), at most ``limit`` (or max_message) long."""
        while len(self.buffer) < 5:
            await self._wait()
        mtype, length = _HEADER.unpack_from(self.buffer, 0)
        if length < 4 or length > (limit or self.max_message):
            raise ProtocolViolation("invalid message length")
        packet = await self.read_exactly(1 + length)
        return mtype, packet[5:]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        if self.buffer:
            raise ProtocolViolation("received unencrypted data after SSL request")
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self.transport,
            self,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=30,
        )
        if transport is None:
            raise LegClosed(f"{self.name} closed during the TLS handshake")
        self.transport = transport
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    @property
    def is_tls(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        )

    # ------------------------------------------------------------------- relay

    def relay_to(self, on_data: Callable[[bytes], None]) -> None:
        """Switch to relay mode; bytes already buffered are delivered first."""
        self._on_data = on_data
        if self.buffer:
            pending = bytes(self.buffer)
            self.buffer.clear()
            on_data(pending)
        if self._eof and self.keeps_open_on_eof and self.on_half_close is not None:
            self.on_half_close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
