"""A plain TCP relay in Python (asyncio on uvloop), for benchmarks only.

Run: ``python -m bench.tcp_relay LISTEN_PORT UPSTREAM_PORT`` (both on 127.0.0.1)

It forwards bytes both ways and looks at none of them: no protocol parsing, no
inspection, no recording — the floor of what any gateway written in Python pays per
message on this machine (two socket reads, two writes and the event loop's callbacks per
round trip). :mod:`bench.pgbench_compare` runs it beside pgbouncer and jitgate so that
jitgate's cost can be read against both a C pooler and the same relay in Python.
"""

from __future__ import annotations

import asyncio
import sys


class _Side(asyncio.Protocol):
    """One leg; bytes received go to the other leg's transport, with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def _serve(listen: int, upstream: int) -> None:
    loop = asyncio.get_running_loop()

    async def connect_upstream(client: _Side) -> None:
        try:
            _, server = await loop.create_connection(_Side, "127.0.0.1", upstream)
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        client.peer, server.peer = server, client
        assert server.transport is not None
        for chunk in client.pending:
            server.transport.write(chunk)
        client.pending.clear()

    def accept() -> _Side:
        client = _Side()
        loop.call_soon(lambda: asyncio.ensure_future(connect_upstream(client)))
        return client

    server = await loop.create_server(accept, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    import uvloop

    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    uvloop.run(_serve(listen, upstream))


if __name__ == "__main__":
    main()
