"""A TCP relay for tests that can cut its connections abruptly (a reset, no goodbye).

It stands between the gateway and a real PostgreSQL to play a network or server that
vanishes mid-result: once ``cut_after`` bytes have come from the server side of a
connection, both its sockets are reset (``SO_LINGER`` 0), so the gateway sees its
upstream stream end without any protocol message. One thread runs every socket through
a selector, so a reset socket is closed at once (no other thread holds it in ``recv``).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable


class CutProxy:
    def __init__(self, target_port: int, *, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cut = threading.Event()  # set once a connection has been cut
        self.down = False  # while set, new connections are reset at once (an outage)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._stop = False
        self._calls: list[Callable[[], object]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            while self._calls:
                self._calls.pop(0)()
            for key, _ in self._selector.select(timeout=0.1):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, *key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        if self.down:
            self._drop(client, reset=True)
            return
        server = socket.create_connection(("127.0.0.1", self.target_port))
        counter = [0]
        for sock in (client, server):
            sock.setblocking(True)  # writes block; reads happen only when readable
        self._selector.register(client, selectors.EVENT_READ, (server, None))
        self._selector.register(server, selectors.EVENT_READ, (client, counter))

    def _forward(self, src: socket.socket, dst: socket.socket, counter: list[int] | None) -> None:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(src, dst, reset=False)
            return
        if counter is not None and self.cut_after is not None:
            counter[0] += len(data)
            if counter[0] >= self.cut_after:
                with contextlib.suppress(OSError):
                    dst.sendall(data[: len(data) - (counter[0] - self.cut_after)])
                self._drop(src, dst, reset=True)
                self.cut.set()
                return
        try:
            dst.sendall(data)
        except OSError:
            self._drop(src, dst, reset=True)

    def _drop(self, *socks: socket.socket, reset: bool) -> None:
        for sock in socks:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def reset_all(self) -> None:
        """Reset every open connection now (from the selector's thread, between reads)."""
        done = threading.Event()
        self._calls.append(lambda: (self._reset_open(), done.set()))
        done.wait(5)
        self.cut.set()

    def outage(self) -> None:
        """From now on the server is gone: open connections reset, new ones refused."""
        self.down = True
        self.reset_all()

    def restore(self) -> None:
        self.down = False

    def _reset_open(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self._drop(key.fileobj, reset=True)  # type: ignore[arg-type]

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            self._drop(key.fileobj, reset=True)  # type: ignore[arg-type]
        self._selector.close()
