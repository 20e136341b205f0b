"""In-process notifications of access changes, safe to publish from any thread.

Held statements wait for *their* request to be decided; protocol listeners react to
grants that end (expired, revoked, used up, task completed) by re-checking the sessions
that depend on them. The API runs decisions in worker threads, so publishing hops onto
the event loop with ``call_soon_threadsafe``. Waiters also poll the store on a slow timer,
so a decision taken on another node (or missed) is still seen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestDecided:
    request_id: str
    status: str  # approved, denied, expired, cancelled


@dataclass(frozen=True, slots=True)
class GrantsChanged:
    identity: str | None  # None: anyone may be affected
    connection: str | None
    ended: tuple[str, ...] = ()  # ids of grants that ended


GrantListener = Callable[[GrantsChanged], None]

#: How long a grant change from another thread waits for the event loops to hear of it.
DELIVERY_WAIT = 2.0


class AccessEvents:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[str]]]] = (
            defaultdict(list)
        )
        self._grant_listeners: list[tuple[asyncio.AbstractEventLoop | None, GrantListener]] = []
        self.revision = 0  # bumped on every grant change seen by this process

    # ------------------------------------------------------------- requests

    def waiter(self, request_id: str) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        with self._lock:
            self._waiters[request_id].append((loop, future))
        return future

    def forget(self, request_id: str, future: asyncio.Future[str]) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id, [])
            self._waiters[request_id] = [(lp, f) for lp, f in waiters if f is not future]
            if not self._waiters[request_id]:
                del self._waiters[request_id]

    def request_decided(self, event: RequestDecided) -> None:
        with self._lock:
            waiters = self._waiters.pop(event.request_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future, event.status)

    # --------------------------------------------------------------- grants

    def on_grants_changed(self, listener: GrantListener) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._grant_listeners.append((loop, listener))

    def grants_changed(self, event: GrantsChanged) -> None:
        """Tell every listener; from another thread, wait (briefly) until they have heard.

        So when a revocation returns, the sessions of this process already stop counting
        the grant: the client's next statement cannot slip in before the news (event
        loops do not promise to run a callback from another thread before I/O that
        arrives right after it).
        """
        with self._lock:
            self.revision += 1
            listeners = list(self._grant_listeners)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        heard: list[threading.Event] = []
        for loop, listener in listeners:
            if loop is None or loop is running:
                listener(event)
                continue
            done = threading.Event()
            try:
                loop.call_soon_threadsafe(_call_then_set, listener, event, done)
            except RuntimeError:  # loop closed
                continue
            heard.append(done)
        deadline = time.monotonic() + DELIVERY_WAIT
        for done in heard:
            done.wait(max(0.0, deadline - time.monotonic()))


def _call_then_set(listener: GrantListener, event: GrantsChanged, done: threading.Event) -> None:
    try:
        listener(event)
    finally:
        done.set()


def _resolve(future: asyncio.Future[str], status: str) -> None:
    if not future.done():
        future.set_result(status)
