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
        with self._lock:
            self.revision += 1
            listeners = list(self._grant_listeners)
        for loop, listener in listeners:
            if loop is None:
                listener(event)
            else:
                try:
                    loop.call_soon_threadsafe(listener, event)
                except RuntimeError:  # loop closed
                    continue


def _resolve(future: asyncio.Future[str], status: str) -> None:
    if not future.done():
        future.set_result(status)
