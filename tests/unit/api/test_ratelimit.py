import pytest

from jitgate.api.ratelimit import LoginLimiter, TooManyAttempts


def test_blocks_after_max_failures_and_recovers_after_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=3, window_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("bob", "1.2.3.4")
        limiter.failed("bob", "1.2.3.4")
    with pytest.raises(TooManyAttempts):
        limiter.check("bob", "1.2.3.4")
    limiter.check("bob", "5.6.7.8")  # another address is not blocked
    now[0] = 61
    limiter.check("bob", "1.2.3.4")


def test_success_clears_failures() -> None:
    limiter = LoginLimiter(max_failures=2)
    limiter.failed("bob", None)
    limiter.succeeded("bob", None)
    limiter.failed("bob", None)
    limiter.check("bob", None)
