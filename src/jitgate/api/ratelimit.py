"""A small in-memory limiter for password login: slows down guessing, per name and address."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from jitgate.errors import JitgateError


class TooManyAttempts(JitgateError):
    code = "too_many_requests"
    status = 429


class LoginLimiter:
    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        stamps = [t for t in self._failures.get(key, []) if now - t < self.window]
        if stamps:
            self._failures[key] = stamps
        else:
            self._failures.pop(key, None)
        return stamps

    def check(self, name: str, addr: str | None) -> None:
        with self._lock:
            if len(self._recent((name, addr or ""), self._clock())) >= self.max_failures:
                raise TooManyAttempts("too many failed logins; try again later")

    def failed(self, name: str, addr: str | None) -> None:
        key = (name, addr or "")
        with self._lock:
            now = self._clock()
            self._failures[key] = [*self._recent(key, now), now]
            self._failures.move_to_end(key)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, name: str, addr: str | None) -> None:
        with self._lock:
            self._failures.pop((name, addr or ""), None)
